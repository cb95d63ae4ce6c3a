r"""Input checks, one way each, for the whole package (private: import from here, never re-implement).

Every check raises a ``ValueError`` whose message names the argument, shows what was passed and says
what to pass instead. Checks of *values* (finite, symmetric) need concrete arrays; for traced ones
(under ``jit``, ``vmap``, ``grad``) the functions that must still catch bad values at run time use
:func:`equinox.error_if`, whose message reaches the user as an ``equinox.EquinoxRuntimeError``
(under ``equinox.filter_jit``; under ``jax.jit`` the same message ends a longer
``JaxRuntimeError``). Checks of *shapes* and *types* work everywhere: they are static.

===========================  ==============================================================
check                        refuses
===========================  ==============================================================
:func:`check_int`            bools, floats, strings, tracers, integers below ``minimum``
:func:`check_learning_rate`  ``h <= 0``, ``inf``, ``NaN``, non-scalars, complex ``h``
:func:`check_finite`         a NaN or an infinity in a concrete pytree (traced leaves pass)
:func:`require_finite`       the same, and at run time for traced pytrees
:func:`check_scalar_loss`    a loss that does not return a scalar
:func:`flat_loss`            (the loss over flat vectors, with the scalar check)
:func:`check_shape`          an array of the wrong shape (no silent broadcasting)
:func:`check_symmetric`      a matrix that is not symmetric to the working precision
===========================  ==============================================================
"""
from __future__ import annotations

import numbers
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

PyTree = Any


def is_concrete(x) -> bool:
    """True unless ``x`` is being traced (``jit``, ``vmap``, ``grad``); only a concrete value can be read."""
    return not isinstance(x, jax.core.Tracer)


def check_int(value, name: str, *, minimum: int = 1, hint: str = "") -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``, else raise a ``ValueError``.

    Integers are Python ``int`` and NumPy integer scalars; ``bool`` (``True`` is 1), floats (even
    ``3.0``) and strings are refused, as are traced values: a count fixes a loop length or a shape.
    ``hint`` is appended to the message (what the argument means, what to pass).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
        is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        kind = "" if is_int else f" of type {type(value).__name__}"
        raise ValueError(f"{name} must be {what}, got {value!r}{kind}." + (f" {hint}" if hint else ""))
    return int(value)


def check_learning_rate(h) -> None:
    """Raise a ``ValueError`` unless ``h`` is a positive finite real number (traced values pass)."""
    if not is_concrete(h):
        return
    arr = np.asarray(h)
    if arr.ndim != 0 or not np.isrealobj(arr):
        raise ValueError(f"the learning rate h must be a real scalar, got {h!r}.")
    if not np.isfinite(arr) or arr <= 0:
        raise ValueError(
            f"the learning rate h must be positive and finite, got h = {float(arr)}. "
            "GD with h <= 0 does not descend; pass a value such as h = 0.1."
        )


def check_finite(tree: PyTree, name: str = "theta", hint: str = "start from finite values.") -> None:
    """Raise a ``ValueError`` if the pytree is empty or a concrete leaf has a NaN or an infinity.

    Traced leaves are skipped; use :func:`require_finite` where NaNs must be caught under ``jit`` too.
    """
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError(f"{name} is empty: pass an array (or pytree of arrays) of parameters.")
    for leaf in leaves:
        if is_concrete(leaf) and not np.all(np.isfinite(np.asarray(leaf))):
            raise ValueError(f"{name} has non-finite entries (NaN or inf): {hint}")


def require_finite(tree: PyTree, message: str) -> PyTree:
    """Return ``tree`` if all its entries are finite, else raise with ``message``.

    Concrete pytrees raise a ``ValueError`` at once; traced ones go through :func:`equinox.error_if`,
    so the check runs inside compiled code and raises ``equinox.EquinoxRuntimeError(message)``.
    Use the returned pytree: the run-time check is attached to it.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if all(is_concrete(leaf) for leaf in leaves):
        if not all(np.all(np.isfinite(np.asarray(leaf))) for leaf in leaves):
            raise ValueError(message)
        return tree
    bad = jnp.logical_not(jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])))
    return jax.tree_util.tree_unflatten(treedef, [eqx.error_if(leaf, bad, message) for leaf in leaves])


def check_scalar_loss(E: Callable, params: PyTree, who: str = "") -> None:
    """Raise a ``ValueError`` unless ``E(params)`` is a scalar (checked on shapes only, no evaluation)."""
    out = jax.eval_shape(E, params)
    if getattr(out, "shape", None) != ():
        prefix = f"{who}: " if who else ""
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"{prefix}the loss E must return a scalar, but E(theta) has shape {shape}; "
            "reduce it, e.g. with jnp.sum or jnp.mean."
        )


def flat_loss(E: Callable, params: PyTree) -> tuple[jax.Array, Callable, Callable]:
    """``(flat, unravel, E_flat)``: the parameters as one vector of shape ``(D,)``, the way back to
    the pytree, and the loss over flat vectors, ``E_flat(x) = E(unravel(x))``.

    Raises a ``ValueError`` unless ``E`` returns a scalar (:func:`check_scalar_loss`).
    """
    check_scalar_loss(E, params)
    flat, unravel = ravel_pytree(params)
    return flat, unravel, (lambda x: E(unravel(x)))


def check_shape(x, shape: tuple, name: str, hint: str = "") -> None:
    """Raise a ``ValueError`` unless ``x`` has exactly ``shape`` (so nothing broadcasts silently)."""
    if tuple(jnp.shape(x)) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got shape {tuple(jnp.shape(x))}."
                         + (f" {hint}" if hint else ""))


def symmetry_tolerance(dtype) -> float:
    r"""Relative tolerance of :func:`check_symmetric`: :math:`\sqrt{\varepsilon}` of the dtype
    (1.5e-8 in float64, 3.5e-4 in float32), far above rounding, far below a real asymmetry."""
    return float(np.sqrt(np.finfo(dtype).eps))


def check_symmetric(matrix: jax.Array, name: str = "the matrix") -> jax.Array:
    r"""Return ``matrix`` if it is symmetric, :math:`\max|A - A^\top| \le \sqrt{\varepsilon}\max|A|`.

    Symmetric eigensolvers (``eigh``, Lanczos) read one triangle, or assume :math:`A = A^\top`: on
    a non-symmetric matrix they return the eigenvalues of a different matrix, without a warning.
    Concrete matrices raise a ``ValueError``; traced ones are checked at run time
    (:func:`equinox.error_if`). Use the returned array.
    """
    matrix = jnp.asarray(matrix)
    dtype = matrix.dtype if jnp.issubdtype(matrix.dtype, jnp.inexact) else jnp.float64
    tol = symmetry_tolerance(jax.dtypes.canonicalize_dtype(dtype))
    message = ("{name} is not symmetric (max |A - A^T|{measured} > {tol:.1e} x max |A|): symmetric "
               "eigensolvers would return the eigenvalues of a different matrix. Pass a symmetric "
               "matrix (a Hessian is one), e.g. (A + A.T) / 2, or use numpy.linalg.eig for a general one.")
    if is_concrete(matrix):
        A = np.asarray(matrix)
        asym, size = (np.max(np.abs(A - A.T)), np.max(np.abs(A))) if A.size else (0.0, 0.0)
        if asym > tol * size:
            raise ValueError(message.format(name=name, measured=f" = {asym:.3g}, max |A| = {size:.3g}", tol=tol))
        return matrix
    message = message.format(name=name, measured="", tol=tol)
    asym = jnp.max(jnp.abs(matrix - matrix.T), initial=0.0)
    return eqx.error_if(matrix, asym > tol * jnp.max(jnp.abs(matrix), initial=0.0), message)
