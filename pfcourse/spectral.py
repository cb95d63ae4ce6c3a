r"""The spectrum of the Hessian: Hessian-vector products, dense Hessians, Lanczos, sharpness.

The loss ``E(params)`` may take any pytree (a raw array, a dict of arrays, a model's parameters).
Hessian-vector products stay on the pytree; everything that needs a matrix view flattens it with
:func:`jax.flatten_util.ravel_pytree`, so ``D`` below is the total number of parameters and a
flat vector ``x`` of shape ``(D,)`` turns back into a pytree with ``unravel(x)``, where
``_, unravel = ravel_pytree(params)``.

Eigenvalues are always returned in **descending** order: ``λ_0`` is the largest (algebraic)
eigenvalue of ``H = ∇²E``, the *sharpness*.

==============================  ============================================  =========
function                        computes                                      book
==============================  ============================================  =========
:func:`hvp`                     :math:`Hv` without forming :math:`H`          chapter 3
:func:`hessian`                 dense :math:`H`, shape ``(D, D)``             chapter 3
:func:`hessian_eigh`            all eigenpairs of :math:`H`, descending       chapter 3
:func:`eigh_descending`         eigenpairs of a symmetric matrix, descending  chapter 3
:func:`lanczos`                 top-k Ritz pairs of a symmetric matvec        chapter 6
:func:`top_hessian_eigenpairs`  top-k eigenpairs of :math:`H` by Lanczos      chapter 6
:func:`power_iteration`         dominant eigenpair of a symmetric matvec      chapter 6
:func:`sharpness`               :math:`\lambda_0(H)` by any of the above      chapter 6
==============================  ============================================  =========

Everything here is traceable and nothing is jitted inside: called eagerly, :func:`lanczos` and
:func:`power_iteration` compile their ``lax.fori_loop`` afresh on every call (about half a
second on a CPU). To track the sharpness during training, jit once and pass the data as
arguments (arrays a jitted function closes over are baked into the program as constants)::

    sharpness_fn = jax.jit(lambda p, X, Y: sharpness(lambda q: loss(q, X, Y), p))
    lam0 = sharpness_fn(params, X, Y)

Input checks of shapes and types run everywhere. Checks of values run on concrete inputs at once
(``ValueError``), and two also under ``jit``, through :func:`equinox.error_if`: a start vector with
a NaN (:func:`lanczos`, :func:`power_iteration`) and a traced dense matrix that is not symmetric
(:func:`eigh_descending`, :func:`lanczos`). Their message arrives as an ``equinox.EquinoxRuntimeError``
under ``equinox.filter_jit`` (under ``jax.jit`` it ends a longer ``JaxRuntimeError`` that starts
"INTERNAL: CpuCallback error"); so jit with ``equinox.filter_jit`` to read it plainly. Non-finite
parameters are refused outside ``jit`` only. The module never changes JAX's global configuration:
it computes in the dtype of the parameters (float32 or float64).

**Lanczos in floating point.** Textbook Lanczos keeps only the three-term recurrence
:math:`\beta_j q_{j+1} = Aq_j - \alpha_j q_j - \beta_{j-1}q_{j-1}`; in floating point its basis
loses orthogonality and Ritz values repeat ("ghosts"). Reorthogonalising against all previous
vectors costs :math:`O(m D)` a step but keeps :math:`Q` orthonormal to working precision; a second
pass of Gram-Schmidt, taken when the first cancelled more than :math:`1 - 1/\sqrt2` of the vector,
is enough even when the residual is tiny ("twice is enough"), so the breakdown test only has to
catch residuals at rounding level, where ``w / norm(w)`` would be noise or a division by zero.
Symmetry is assumed, not checked, for an operator: Lanczos on a non-symmetric ``A`` returns numbers
that are not its eigenvalues (for ``A = [[1, 10], [0, 2]]``, eigenvalues 1 and 2, it returns 11.06
and -8.06), and without a warning; a dense matrix passed to :func:`lanczos` instead of a ``matvec``
is checked, as in :func:`eigh_descending`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import (check_finite, check_int, check_scalar_loss, check_symmetric, flat_loss, is_concrete,
                      require_finite)

PyTree = Any
Loss = Callable[[PyTree], jax.Array]
Matvec = Callable[[jax.Array], jax.Array]

SHARPNESS_METHODS = ("lanczos", "dense", "power")

__all__ = [
    "SHARPNESS_METHODS",
    "eigh_descending",
    "hessian",
    "hessian_eigh",
    "hessian_spectrum_ends",
    "hvp",
    "LanczosInfo",
    "lanczos",
    "power_iteration",
    "sharpness",
    "SpectrumEnds",
    "top_hessian_eigenpairs",
]


# --------------------------------------------------------------------------- input checks


def _shapes(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x: tuple(jnp.shape(x)), tree)


def _finite_start(v0: jax.Array, who: str) -> jax.Array:
    """``v0`` if finite; else a ``ValueError`` (concrete) or equinox's run-time error (traced)."""
    return require_finite(
        v0,
        f"{who}: the start vector v0 has NaN or inf entries, so every eigenvalue would come out NaN. Pass a "
        "finite vector (a warm start taken from a diverged run is NaN: start from a random one, "
        "jax.random.normal(key, (dim,))).",
    )


# --------------------------------------------------------------------------- chapter 3


def hvp(E: Loss, params: PyTree, v: PyTree) -> PyTree:
    r"""Hessian-vector product :math:`H(\theta)v`, without forming the Hessian.

    Forward-over-reverse differentiation: :math:`Hv` is the directional derivative of the
    gradient along ``v``,

    .. math:: H(\theta)\,v = \frac{d}{d\varepsilon}\,\nabla E(\theta + \varepsilon v)\Big|_{\varepsilon=0},

    i.e. ``jax.jvp(jax.grad(E), (params,), (v,))[1]``. It costs a small constant times one gradient,
    whatever the number of parameters.

    Args:
        E: scalar loss ``E(params)``.
        params: the point :math:`\theta`, any pytree of float arrays.
        v: the direction, a pytree with the same structure and leaf shapes as ``params``
            (its leaves are cast to the dtypes of ``params``).

    Returns:
        :math:`Hv`, a pytree like ``params``.

    Raises:
        ValueError: if ``v`` does not have the structure and shapes of ``params``, or ``E`` does not
            return a scalar.

    References:
        Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 1994
        [pearlmutter1994fast].

    Book: chapter 3, §The spectrum of the Hessian.
    """
    if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(v) or any(
        jnp.shape(p) != jnp.shape(t)
        for p, t in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(v))
    ):
        raise ValueError(
            "hvp: v must have the same structure and leaf shapes as params. "
            f"Expected {_shapes(params)}, got {_shapes(v)}."
        )
    check_scalar_loss(E, params, "hvp")
    v = jax.tree_util.tree_map(lambda p, t: jnp.asarray(t, dtype=jnp.result_type(p)), params, v)
    return jax.jvp(jax.grad(E), (params,), (v,))[1]


def hessian(E: Loss, params: PyTree) -> jax.Array:
    r"""Dense Hessian :math:`H_{ij} = \partial^2 E/\partial\theta_i\partial\theta_j` over the flattened parameters.

    The pytree is flattened with ``ravel_pytree`` (leaf order of ``jax.tree_util``, each leaf
    row-major), so row/column ``i`` is entry ``i`` of ``ravel_pytree(params)[0]``. The result is
    symmetrised, :math:`\tfrac12(H + H^\top)`, so it is exactly symmetric. Memory is
    :math:`O(D^2)`: use :func:`hvp` or :func:`top_hessian_eigenpairs` for large models.

    Args:
        E: scalar loss ``E(params)``.
        params: any pytree of float arrays, ``D`` entries in all.

    Returns:
        ``H``, shape ``(D, D)``, dtype of the flattened parameters.

    Raises:
        ValueError: if ``E`` does not return a scalar (the Hessian of a vector-valued function
            would be a 3-D array).

    Book: chapter 3, §The spectrum of the Hessian.
    """
    flat, _, E_flat = flat_loss(E, params)
    H = jax.hessian(E_flat)(flat)
    return 0.5 * (H + H.T)


def eigh_descending(matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Eigendecomposition :math:`A = U\,\mathrm{diag}(\lambda)\,U^\top` of a symmetric matrix, largest first.

    ``numpy.linalg.eigh`` / ``jnp.linalg.eigh`` sort ascending; this reverses the order so that
    ``eigenvalues[0]`` is :math:`\lambda_0 = \max_i \lambda_i`. ``eigh`` silently returns the
    eigenvalues of a different matrix when ``matrix`` is not symmetric, so symmetry is checked:
    :math:`\max|A - A^\top| \le \sqrt{\varepsilon}\max|A|`, :math:`\varepsilon` of the dtype.

    Args:
        matrix: symmetric, shape ``(D, D)``.

    Returns:
        ``(eigenvalues, eigenvectors)``: shapes ``(D,)`` (descending) and ``(D, D)`` with the unit
        eigenvector of ``eigenvalues[i]`` in column ``i`` (its sign is arbitrary).

    Raises:
        ValueError: if ``matrix`` is not square, or (concrete) not symmetric; a traced matrix that
            is not symmetric raises equinox's run-time error.

    References:
        Golub & Van Loan, *Matrix Computations*, 4th ed., ch. 8 [golub2013matrix].

    Book: chapter 3, §The spectrum of the Hessian.
    """
    matrix = jnp.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"eigh_descending needs a square matrix, got shape {matrix.shape}.")
    return _eigh_descending(check_symmetric(matrix, "eigh_descending: the matrix"))


def _eigh_descending(matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    w, U = jnp.linalg.eigh(matrix)
    return w[::-1], U[:, ::-1]


def hessian_eigh(E: Loss, params: PyTree) -> tuple[jax.Array, jax.Array]:
    r"""All eigenpairs :math:`Hu_i = \lambda_i u_i` of the dense Hessian, :math:`\lambda_0 \ge \lambda_1 \ge \dots`

    ``eigh_descending(hessian(E, params))``. Eigenvectors live in the flattened parameter space;
    turn column ``i`` into a pytree with ``ravel_pytree(params)[1](eigenvectors[:, i])``.

    Args:
        E: scalar loss ``E(params)``.
        params: any pytree of float arrays, ``D`` entries in all.

    Returns:
        ``(eigenvalues, eigenvectors)``: shapes ``(D,)`` (descending; ``eigenvalues[0]`` is the
        sharpness) and ``(D, D)`` (eigenvectors as columns, signs arbitrary).

    References:
        Golub & Van Loan, *Matrix Computations*, 4th ed., ch. 8 [golub2013matrix].

    Book: chapter 3, §The spectrum of the Hessian.
    """
    return _eigh_descending(hessian(E, params))  # hessian() is exactly symmetric: no check needed


# --------------------------------------------------------------------------- chapter 6


def _orthogonalise(Q: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One pass of classical Gram-Schmidt of ``w`` against the rows of ``Q`` (zero rows are inert).

    Returns the orthogonalised vector and the projection coefficients ``Q @ w``.
    """
    c = Q @ w
    return w - jnp.sum(c[:, None] * Q, axis=0), c  # a reduction over rows: XLA streams Q once, in order


def _reorthogonalise(Q: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Full reorthogonalisation of ``w`` against the rows of ``Q``: one Gram-Schmidt pass, and a
    second one only when the first removed more than ``1 - 1/sqrt(2)`` of the norm (Daniel, Gragg,
    Kaufman & Stewart's criterion: then "twice is enough"). Returns ``w`` and the coefficients."""
    w1, c1 = _orthogonalise(Q, w)

    def again(wc):
        w2, c2 = _orthogonalise(Q, wc[0])
        return w2, wc[1] + c2

    return jax.lax.cond(jnp.linalg.norm(w1) < 0.7071 * jnp.linalg.norm(w), again, lambda wc: wc, (w1, c1))


def _ritz(alpha: jax.Array, beta: jax.Array, J: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Ritz values (descending), vectors of ``T`` and residual norms after ``J`` Lanczos steps.

    ``T`` is the leading ``J x J`` block of the tridiagonal matrix (``alpha``, ``beta``); the rest
    of the ``m x m`` array is a diagonal placed below Gershgorin's bound of that block, so its
    eigenvalues sort last and its eigenvectors are zero on the block. The residual of Ritz pair
    ``(θ_i, Q s_i)`` is :math:`\|A Q s_i - θ_i Q s_i\| = |β_{J-1}\, s_{J-1,i}|`, and some eigenvalue
    of ``A`` lies within it of :math:`θ_i` (Golub & Van Loan, Thm. 8.1.15 and §10.1.4).
    """
    m = alpha.shape[0]
    valid = jnp.arange(m) < J
    bmax = jnp.max(jnp.abs(beta))
    amin = jnp.min(jnp.where(valid, alpha, jnp.inf))
    low = amin - 2 * bmax - (jnp.abs(amin) + 2 * bmax + 1)
    off = jnp.where(valid[1:], beta[:-1], 0)
    T = jnp.diag(jnp.where(valid, alpha, low)) + jnp.diag(off, 1) + jnp.diag(off, -1)
    theta, S = _eigh_descending(T)  # T is symmetric by construction
    residuals = jnp.abs(beta[J - 1] * S[J - 1, :])
    return theta, S, residuals


class LanczosInfo(NamedTuple):
    r"""What :func:`lanczos` did: ``iterations`` (matrix-vector products, an int array) and, for each
    returned Ritz pair, ``residuals[i]`` :math:`= \|A y_i - θ_i y_i\|` (a bound on the distance of
    :math:`θ_i` to the spectrum, from the recurrence)."""

    iterations: jax.Array
    residuals: jax.Array


def _check_krylov_sizes(k: int, num_iter: int, dim: int) -> None:
    for name, val in (("k", k), ("num_iter", num_iter)):
        check_int(val, name, hint="It fixes array shapes, so it must be a Python int (not traced).")
    if not k <= num_iter <= dim:
        if k > num_iter:
            fix = f"k Ritz pairs need at least k Krylov vectors: raise num_iter to at least k = {k}, or lower k."
        else:
            fix = (f"at most dim = {dim} orthogonal Krylov vectors exist: lower num_iter to at most {dim} "
                   f"(num_iter = dim = {dim} gives the exact spectrum).")
        raise ValueError(f"Lanczos needs 1 <= k <= num_iter <= dim, got k={k}, num_iter={num_iter}, dim={dim}; {fix}")


def _check_tol(tol) -> None:
    if tol is not None and not (isinstance(tol, (float, int)) and not isinstance(tol, bool) and 0 < tol < 1):
        raise ValueError(f"lanczos: tol must be None (a fixed num_iter) or a relative residual in (0, 1) such "
                         f"as 1e-3 (float32) or 1e-8 (float64), got {tol!r}.")


def lanczos(
    matvec: Matvec | jax.Array,
    dim_or_v0: int | jax.Array,
    k: int = 1,
    num_iter: int = 20,
    *,
    key: jax.Array | None = None,
    dtype=None,
    tol: float | None = None,
    return_info: bool = False,
) -> tuple[jax.Array, jax.Array] | tuple[jax.Array, jax.Array, LanczosInfo]:
    r"""Top-k eigenpairs of a symmetric linear map by Lanczos with full reorthogonalisation.

    Lanczos builds an orthonormal basis :math:`Q = [q_0, \dots, q_{m-1}]` of the Krylov space
    :math:`\mathrm{span}\{v_0, Av_0, \dots, A^{m-1}v_0\}` in which :math:`T = Q^\top A Q` is
    tridiagonal; the eigenvalues of :math:`T` (*Ritz values*) approximate the extreme eigenvalues
    of :math:`A`, the largest ones first, and :math:`Qs` (*Ritz vectors*, :math:`Ts = \theta s`)
    their eigenvectors. With ``num_iter = dim`` it is exact. In plain Python (``m = num_iter``)::

        q = v0 / norm(v0); Q = [q]
        for j in range(m):
            w = A @ Q[j]
            alpha[j] = Q[j] @ w
            w = w - alpha[j] * Q[j] - beta[j-1] * Q[j-1]   # three-term recurrence
            w, c = w - Q.T @ (Q @ w), Q @ w        # full reorthogonalisation against all of Q,
            if norm(w) < norm(w_before) / sqrt(2): #   a second pass if the first cancelled much
                w, c = w - Q.T @ (Q @ w), c + Q @ w
            alpha[j] += c[j]
            beta[j] = norm(w)
            if beta[j] <= sqrt(dim) * eps * norm(A @ Q[j]):  # breakdown: span(Q) is invariant
                beta[j] = 0                        # T splits into blocks; carry on along
                w = e_i orthogonalised against Q   # the axis e_i least in span(Q)
            Q.append(w / norm(w))
            theta, S = eigh(T_j)                   # T_j: the tridiagonal matrix so far
            if tol and max(abs(beta[j] * S[j, :k])) <= tol * max(abs(theta)):
                break                              # the top-k Ritz residuals are small
        return theta[::-1][:k], (Q[:j+1].T @ S)[:, ::-1][:, :k]

    With ``num_iter = dim`` it returns the top of NumPy's ``eigh`` (to float32's rounding):

    >>> import numpy as np, jax.numpy as jnp
    >>> B = np.random.default_rng(0).normal(size=(6, 6))
    >>> A = (B + B.T) / 2
    >>> vals, vecs = lanczos(jnp.asarray(A, jnp.float32), 6, k=2, num_iter=6)
    >>> bool(np.allclose(vals, np.linalg.eigvalsh(A)[::-1][:2], atol=1e-4))
    True
    >>> bool(np.allclose(A @ vecs, vecs * vals, atol=1e-4))
    True

    Why the reorthogonalisation, and the breakdown test: the module docstring, §Lanczos in floating
    point. The loop is a ``lax.while_loop`` over a preallocated basis written in place, so the whole
    call is jit-able (``k`` and ``num_iter`` fix shapes and must be Python ints).

    Stopping: by default exactly ``num_iter`` steps. With ``tol``, ``num_iter`` is the most and the
    loop stops as soon as the ``k`` top Ritz residuals :math:`r_i = \|Ay_i - \theta_i y_i\| =
    |\beta_j s_{j,i}|` are at most ``tol`` times the largest Ritz value in magnitude; each
    :math:`\theta_i` is then within :math:`r_i` of an eigenvalue of :math:`A` (and within
    :math:`r_i^2/\mathrm{gap}` once separated from the rest of the spectrum). ``return_info=True``
    reports the steps taken and the :math:`r_i` (:class:`LanczosInfo`), with or without ``tol``.

    Args:
        matvec: ``x -> A x`` for a symmetric ``A`` on flat vectors ``(dim,)`` (symmetry assumed), or
            the matrix ``A`` itself, ``(dim, dim)``, whose symmetry is checked.
        dim_or_v0: either ``dim`` (an int: start from a random vector drawn with ``key``), or a
            start vector ``v0`` of shape ``(dim,)`` (a warm start, e.g. the previous Ritz vector).
        k: number of eigenpairs returned, ``1 <= k <= num_iter``.
        num_iter: Krylov dimension ``m``, ``k <= m <= dim``.
        key: PRNG key for the random start when ``dim`` is given (default ``jax.random.key(0)``).
        dtype: dtype of the vectors when ``dim`` is given (default: JAX's default float).
        tol: ``None`` (run ``num_iter`` steps) or a relative residual in ``(0, 1)`` at which to
            stop early, e.g. ``1e-3`` (float32) or ``1e-8`` (float64); a Python float.
        return_info: also return a :class:`LanczosInfo` (steps taken, residual of each pair).

    Returns:
        ``(eigenvalues, eigenvectors)``: the ``k`` largest Ritz values, descending, ``(k,)``, and the
        unit Ritz vectors as columns, ``(dim, k)`` (signs arbitrary); with ``return_info``, ``info`` too.

    Raises:
        ValueError: unless ``1 <= k <= num_iter <= dim`` and ``tol`` is ``None`` or in ``(0, 1)``; if
            ``v0`` is not 1-D, zero or not finite; if ``matvec`` does not map ``(dim,)`` to ``(dim,)``;
            if a dense matrix is not square or not symmetric (under ``jit``: equinox's run-time error).

    References: Lanczos 1950 [lanczos1950iteration]; Golub & Van Loan, §10.1-10.3 [golub2013matrix].

    Book: chapter 6, §Tracking sharpness.
    """
    v0 = _lanczos_start(dim_or_v0, key, dtype, k, num_iter)
    _check_krylov_sizes(k, num_iter, v0.shape[0])
    _check_tol(tol)
    return _lanczos_loop(_lanczos_matvec(matvec, *v0.shape, v0.dtype), v0, k, num_iter, tol, return_info)


def _lanczos_start(dim_or_v0, key, dtype, k: int, num_iter: int) -> jax.Array:
    """:func:`lanczos`'s start vector: random of length ``dim`` (an int, checked against ``k`` and
    ``num_iter`` first), or ``v0`` checked (flat, finite, non-zero; an integer vector is cast to the
    default float)."""
    if isinstance(dim_or_v0, (int, np.integer)) and not isinstance(dim_or_v0, bool):
        dim = check_int(dim_or_v0, "lanczos: dim")
        _check_krylov_sizes(k, num_iter, dim)
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype)
        return jax.random.normal(jax.random.key(0) if key is None else key, (dim,), dtype=dtype)
    v0 = jnp.asarray(dim_or_v0)
    if v0.ndim != 1:
        raise ValueError(f"lanczos: v0 must be a flat vector of shape (dim,), got shape {v0.shape}. "
                         "Flatten a pytree with jax.flatten_util.ravel_pytree.")
    if not jnp.issubdtype(v0.dtype, jnp.floating):
        v0 = v0.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    v0 = _finite_start(v0, "lanczos")
    if is_concrete(v0) and not np.any(np.asarray(v0)):
        raise ValueError("lanczos: the start vector v0 is zero; pass a non-zero vector.")
    return v0


def _lanczos_matvec(matvec, dim: int, dtype) -> Matvec:
    """:func:`lanczos`'s operator: ``matvec`` checked to map ``(dim,)`` to ``(dim,)``, or a dense
    matrix checked square and symmetric and turned into ``x -> A x``."""
    if not callable(matvec):
        A = jnp.asarray(matvec)
        if A.shape != (dim, dim):
            raise ValueError(f"lanczos: a dense matrix must have shape ({dim}, {dim}) to act on vectors of "
                             f"shape ({dim},), got {A.shape}. Pass a square matrix or a function x -> A x.")
        A = check_symmetric(A, "lanczos: the matrix")
        matvec = lambda x: A @ x  # noqa: E731
    out = jax.eval_shape(matvec, jax.ShapeDtypeStruct((dim,), dtype))
    if getattr(out, "shape", None) != (dim,):
        raise ValueError(f"lanczos: matvec must map a vector of shape ({dim},) to shape ({dim},), "
                         f"got {getattr(out, 'shape', out)}.")
    return matvec


def _lanczos_loop(matvec: Matvec, v0: jax.Array, k: int, m: int, tol, return_info: bool):
    """The Lanczos recurrence of :func:`lanczos` (inputs checked), in one ``lax.while_loop``.

    The basis is a preallocated ``(m + 1, dim)`` array written one row per step (updated in place
    by XLA, never copied); step ``j`` runs the three-term recurrence, then full reorthogonalisation
    (:func:`_reorthogonalise`), then the breakdown test. With ``tol`` the loop also stops once the
    top-k Ritz residuals are within ``tol`` times the largest Ritz value in magnitude.
    """
    dim, dtype = v0.shape[0], v0.dtype
    eps = jnp.finfo(dtype).eps
    Q = jnp.zeros((m + 1, dim), dtype).at[0].set(v0 / jnp.linalg.norm(v0))
    zeros = jnp.zeros(m, dtype)

    def fresh_direction(Q):
        # The coordinate axis e_i least represented in span(Q) (smallest sum_r Q[r, i]^2). Its
        # residual has squared norm >= 1 - (j + 1) / dim > 0 while Q has j + 1 < dim rows; when
        # Q already spans R^dim (only possible at the last step) nothing is left: return zero.
        i = jnp.argmin(jnp.sum(Q * Q, axis=0))
        r, _ = _reorthogonalise(Q, jnp.zeros(dim, dtype).at[i].set(1))
        nr = jnp.linalg.norm(r)
        return jnp.where(nr > 0.5 / math.sqrt(dim), r / jnp.where(nr > 0, nr, 1), 0)

    def converged(alpha, beta, j):  # j + 1 steps done
        if tol is None:
            return jnp.asarray(False)
        theta, _, res = _ritz(alpha, beta, j + 1)
        scale = jnp.maximum(jnp.abs(theta[0]), jnp.abs(theta[j]))
        return (j + 1 >= k) & jnp.all(res[:k] <= tol * scale)

    def step(state):
        j, Q, alpha, beta, _ = state
        q = Q[j]
        w = jnp.asarray(matvec(q), dtype)
        w_norm = jnp.linalg.norm(w)
        a = jnp.vdot(q, w)
        w = w - a * q - jnp.where(j > 0, beta[j - 1], 0) * Q[j - 1]  # three-term recurrence
        w, coeffs = _reorthogonalise(Q, w)  # repairs what rounding left
        b = jnp.linalg.norm(w)
        broke = b <= math.sqrt(dim) * eps * w_norm
        q_next = jax.lax.cond(broke, fresh_direction, lambda Q: w / jnp.where(broke, 1, b), Q)
        alpha = alpha.at[j].set(a + coeffs[j])
        beta = beta.at[j].set(jnp.where(broke, 0, b))
        Q = jax.lax.dynamic_update_slice(Q, q_next[None].astype(dtype), (j + 1, 0))  # in place
        return j + 1, Q, alpha, beta, converged(alpha, beta, j)

    state = (jnp.asarray(0), Q, zeros, zeros, jnp.asarray(False))
    J, Q, alpha, beta, _ = jax.lax.while_loop(lambda s: (s[0] < m) & ~s[4], step, state)
    theta, S, residuals = _ritz(alpha, beta, J)
    vals, vecs = theta[:k], Q[:m].T @ S[:, :k]
    return (vals, vecs, LanczosInfo(J, residuals[:k])) if return_info else (vals, vecs)


def top_hessian_eigenpairs(
    E: Loss,
    params: PyTree,
    k: int = 1,
    num_iter: int = 20,
    *,
    key: jax.Array | None = None,
    v0: jax.Array | None = None,
    tol: float | None = None,
    return_info: bool = False,
) -> tuple[jax.Array, jax.Array] | tuple[jax.Array, jax.Array, LanczosInfo]:
    r"""Top-k eigenpairs :math:`H u_i = \lambda_i u_i` of the Hessian, by Lanczos on Hessian-vector products.

    Runs :func:`lanczos` on :math:`x \mapsto Hx` over the flattened parameters, never forming
    :math:`H`: each iteration costs one Hessian-vector product (the gradient is linearised once
    with :func:`jax.linearize` and the linear map reused) plus :math:`O(\text{num\_iter}\cdot D)`
    for reorthogonalisation. This is how Cohen et al. (2021) track the sharpness during training.

    Args:
        E: scalar loss ``E(params)``.
        params: any pytree of float arrays, ``D`` entries in all.
        k: number of eigenpairs, ``1 <= k <= num_iter``.
        num_iter: Krylov dimension; capped at ``D`` (where Lanczos is exact), so small problems
            work with the default.
        key: PRNG key of the random start (default ``jax.random.key(0)``).
        v0: optional warm start, a flat ``(D,)`` vector (e.g. ``eigenvectors[:, 0]`` of the
            previous call, a few steps earlier in training). Under ``jit`` a warm start that is not
            finite or is zero is replaced by the random start (no run-time error: that would keep
            the compiled solve out of JAX's persistent compilation cache).
        tol, return_info: stop once the top-k Ritz residuals are within ``tol`` (relative), and
            report steps and residuals, as in :func:`lanczos`; ``num_iter`` is then the most.

    Returns:
        ``(eigenvalues, eigenvectors)``: shape ``(k,)``, descending (``eigenvalues[0]`` is the
        sharpness), and ``(D, k)`` with unit eigenvectors as flat columns (signs arbitrary).
        Turn column ``i`` into a pytree like ``params`` with
        ``ravel_pytree(params)[1](eigenvectors[:, i])``.

    Raises:
        ValueError: if ``k > num_iter`` or ``k > D``, ``v0`` is not of shape ``(D,)`` or not finite,
            or ``E`` does not return a scalar.

    References:
        Pearlmutter 1994 [pearlmutter1994fast]; Lanczos 1950 [lanczos1950iteration];
        Golub & Van Loan 2013, §10.1-10.3 [golub2013matrix].

    Book: chapter 6, §Tracking sharpness.
    """
    _check_tol(tol)
    matvec, start, m = _hessian_solve(E, params, k, num_iter, key, v0, "top_hessian_eigenpairs")
    return _lanczos_loop(matvec, start, k, m, tol, return_info)


def _hessian_solve(E: Loss, params: PyTree, k: int, num_iter: int, key, v0, who: str):
    """``(matvec, start, m)`` of a Lanczos solve on the Hessian of ``E`` at ``params``: ``x -> Hx`` on
    flat vectors (linearised once), the start vector (:func:`_hessian_start`) and the Krylov
    dimension ``min(num_iter, D)``; ``k`` and ``num_iter`` checked against ``D`` first."""
    flat, _, E_flat = flat_loss(E, params)
    D = flat.shape[0]
    _check_krylov_sizes(k, num_iter, max(num_iter, D))  # k <= num_iter, before capping at D
    if k > D:
        raise ValueError(f"{who}: k={k} eigenpairs asked for, but the Hessian is {D}x{D}.")
    start = _hessian_start(v0, D, flat.dtype, key, who)
    _, matvec = jax.linearize(jax.grad(E_flat), flat)
    return matvec, start, min(num_iter, D)


def _hessian_start(v0, D: int, dtype, key, who: str) -> jax.Array:
    """The start vector of a Hessian solve: ``v0`` (a warm start) or a random one drawn with ``key``.

    A concrete ``v0`` is checked (shape, finite, non-zero: ``ValueError``). A traced ``v0`` that is
    not finite or is zero is replaced by the random start inside the program: a warm start is only
    a hint, and a check by host callback would keep the whole compiled solve out of JAX's persistent
    compilation cache (programs with callbacks are never written there).
    """
    key = jax.random.key(0) if key is None else key
    if v0 is None:
        return jax.random.normal(key, (D,), dtype)
    v0 = jnp.asarray(v0, dtype)
    if v0.shape != (D,):
        raise ValueError(f"{who}: v0 must be a flat vector of shape ({D},), got {v0.shape}; "
                         "flatten a pytree with jax.flatten_util.ravel_pytree.")
    if is_concrete(v0):
        _finite_start(v0, who)
        if not np.any(np.asarray(v0)):
            raise ValueError(f"{who}: the start vector v0 is zero; pass a non-zero vector.")
        return v0
    usable = jnp.all(jnp.isfinite(v0)) & jnp.any(v0 != 0)
    return jax.lax.cond(usable, lambda: v0, lambda: jax.random.normal(key, (D,), dtype))


class SpectrumEnds(NamedTuple):
    r"""Both ends of a Hessian's spectrum from one Lanczos run (:func:`hessian_spectrum_ends`).

    Attributes:
        top: the ``k`` largest Ritz values, descending, ``(k,)`` (``top[0]`` is the sharpness).
        top_vectors: their unit Ritz vectors as flat columns, ``(D, k)``.
        bottom: the ``k`` smallest Ritz values, ascending, ``(k,)`` (``bottom[0]`` estimates :math:`\lambda_{\min}`).
        bottom_vectors: their unit Ritz vectors as flat columns, ``(D, k)``.
    """

    top: jax.Array
    top_vectors: jax.Array
    bottom: jax.Array
    bottom_vectors: jax.Array


def hessian_spectrum_ends(
    E: Loss,
    params: PyTree,
    k: int = 1,
    num_iter: int = 20,
    *,
    key: jax.Array | None = None,
    v0: jax.Array | None = None,
) -> SpectrumEnds:
    r"""The largest and the smallest eigenvalues of the Hessian, with eigenvectors, from one Lanczos run.

    The Ritz values :math:`\theta_1 \ge \dots \ge \theta_m` of one ``num_iter``-step Lanczos run on
    :math:`x \mapsto Hx` (:func:`lanczos`, all ``m`` Ritz pairs) approximate *both* ends of the
    spectrum at once: by the Cauchy interlacing theorem :math:`\lambda_{\min} \le \theta_m` and
    :math:`\theta_1 \le \lambda_{\max}`, and both converge at the rates of Kaniel-Paige theory. This
    returns the ``k`` largest and the ``k`` smallest, at the cost of :func:`top_hessian_eigenpairs`
    (``num_iter`` Hessian-vector products). In plain Python::

        theta, Y = lanczos(hvp, v0, k=m, num_iter=m)      # all m Ritz pairs, descending
        top, bottom = theta[:k], theta[::-1][:k]

    On :math:`E = \tfrac12\sum_i a_i\theta_i^2` the Hessian is :math:`\mathrm{diag}(a)`, and with
    ``num_iter = D`` Lanczos is exact (to float32's rounding):

    >>> import jax.numpy as jnp
    >>> a = jnp.array([3.0, -1.0, 0.5, 2.0])
    >>> ends = hessian_spectrum_ends(lambda th: 0.5 * jnp.sum(a * th ** 2), jnp.ones(4), k=1, num_iter=4)
    >>> round(float(ends.top[0]), 4), round(float(ends.bottom[0]), 4)
    (3.0, -1.0)

    Used to watch the most negative curvature next to the sharpness, e.g. the bound
    :math:`r_t \le \max_i|\lambda_i| = \max(\lambda_0, -\lambda_{\min})` of DAL.

    Args:
        E: scalar loss ``E(params)``.
        params: any pytree of float arrays, ``D`` entries in all.
        k: pairs at each end, ``1 <= k <= num_iter`` (the ends overlap if ``2k > num_iter``).
        num_iter: Krylov dimension, capped at ``D`` (where Lanczos is exact).
        key: PRNG key of the random start (default ``jax.random.key(0)``).
        v0: optional warm start, a flat ``(D,)`` vector.

    Returns:
        a :class:`SpectrumEnds` ``(top, top_vectors, bottom, bottom_vectors)``.

    Raises:
        ValueError: as :func:`top_hessian_eigenpairs`.

    References:
        Golub & Van Loan 2013, §10.1.4-10.1.5 (interlacing, Kaniel-Paige) [golub2013matrix].

    Book: chapter 7, §The experiment.
    """
    matvec, start, m = _hessian_solve(E, params, k, num_iter, key, v0, "hessian_spectrum_ends")
    theta, Y = _lanczos_loop(matvec, start, m, m, None, False)
    return SpectrumEnds(theta[:k], Y[:, :k], theta[::-1][:k], Y[:, ::-1][:, :k])


def power_iteration(matvec: Matvec, v0: jax.Array, num_iter: int = 100) -> tuple[jax.Array, jax.Array]:
    r"""Dominant eigenpair (largest :math:`|\lambda|`) of a symmetric linear map by power iteration.

    .. math:: v_{n+1} = \frac{Av_n}{\lVert Av_n\rVert},\qquad \lambda \approx v_N^\top A v_N.

    The error in :math:`v` shrinks like :math:`|\lambda_1/\lambda_0|^n` (eigenvalues ordered by
    modulus): slow when the top two are close, which is where :func:`lanczos` wins. In plain Python::

        v = v0 / norm(v0)
        for _ in range(num_iter):
            w = A @ v
            v = w / norm(w)
        return v @ (A @ v), v

    That loop, run in NumPy, agrees (here :math:`|\lambda_1/\lambda_0| = 1/3`: 40 iterations leave
    :math:`3^{-40}`, far below float32's rounding):

    >>> import numpy as np, jax.numpy as jnp
    >>> A = np.diag([3.0, 1.0, -0.5])
    >>> v = np.ones(3) / np.sqrt(3)
    >>> for _ in range(40):
    ...     w = A @ v
    ...     v = w / np.linalg.norm(w)
    >>> lam, u = power_iteration(lambda x: jnp.asarray(A, x.dtype) @ x, jnp.ones(3), 40)
    >>> round(float(lam), 4), round(float(v @ A @ v), 4), bool(np.allclose(u, v, atol=1e-6))
    (3.0, 3.0, True)

    Args:
        matvec: ``x -> A x`` for a symmetric ``A``, on flat vectors of shape ``(dim,)``; symmetry is
            assumed, not checked (a Hessian-vector product is symmetric).
        v0: non-zero finite start vector, shape ``(dim,)``; its dtype is used throughout (a NaN
            raises, under ``jit`` too).
        num_iter: number of iterations (a Python int, >= 1).

    Returns:
        ``(eigenvalue, eigenvector)``: the Rayleigh quotient :math:`v^\top Av` (signed: negative if
        the dominant eigenvalue is) and the unit vector ``v``, shape ``(dim,)``.

    References:
        Golub & Van Loan, *Matrix Computations*, 4th ed., §8.2.1 [golub2013matrix].

    Book: chapter 6, §Tracking sharpness.
    """
    v0 = jnp.asarray(v0)
    if v0.ndim != 1:
        raise ValueError(f"power_iteration: v0 must have shape (dim,), got {v0.shape}.")
    check_int(num_iter, "power_iteration: num_iter", hint="It is the number of iterations.")
    v0 = _finite_start(v0, "power_iteration")
    if is_concrete(v0) and not np.any(np.asarray(v0)):
        raise ValueError("power_iteration: the start vector v0 is zero; pass a non-zero vector.")

    def normalise(w, v):
        n = jnp.linalg.norm(w)
        return jnp.where(n > 0, w / jnp.where(n > 0, n, 1), v)  # A v = 0: keep v (eigenvalue 0)

    def step(_, v):
        return normalise(jnp.asarray(matvec(v), v.dtype), v)

    v = jax.lax.fori_loop(0, num_iter, step, v0 / jnp.linalg.norm(v0))
    return v @ jnp.asarray(matvec(v), v.dtype), v


def sharpness(E: Loss, params: PyTree, method: str = "lanczos", **kw) -> jax.Array:
    r"""The sharpness :math:`\lambda_0 = \max_i \lambda_i(\nabla^2 E(\theta))`, the top Hessian eigenvalue.

    Gradient descent with learning rate :math:`h` is linearly stable at a minimum iff
    :math:`h\lambda_0 < 2`; at the edge of stability :math:`\lambda_0` hovers near :math:`2/h`.

    Methods:

    - ``"lanczos"`` (default): :func:`top_hessian_eigenpairs` with ``k=1``; keywords ``num_iter``
      (default 20, capped at ``D``), ``key``, ``v0``.
    - ``"dense"``: :func:`hessian_eigh`; exact, :math:`O(D^2)` memory, :math:`O(D^3)` time.
    - ``"power"``: :func:`power_iteration` on Hessian-vector products; keywords ``num_iter``
      (default 100), ``key``, ``v0``. Power iteration finds the eigenvalue of largest *modulus*;
      if that is negative (a strongly curved-down direction), a second power iteration on
      :math:`H - \lambda I` (a spectral shift) returns :math:`\lambda_0`.

    Args:
        E: scalar loss ``E(params)``.
        params: any pytree of finite float arrays.
        method: one of ``"lanczos"``, ``"dense"``, ``"power"``.
        **kw: passed to the method, as listed above.

    Returns:
        :math:`\lambda_0`, a scalar in the dtype of the parameters.

    Raises:
        ValueError: for an unknown method, or non-finite parameters (checked outside ``jit`` only;
            under ``jit`` NaN parameters give NaN).

    References:
        Cohen et al., "Gradient descent on neural networks typically occurs at the edge of
        stability", ICLR 2021; Pearlmutter 1994 [pearlmutter1994fast];
        Lanczos 1950 [lanczos1950iteration]; Golub & Van Loan 2013 [golub2013matrix].

    Book: chapter 6, §Tracking sharpness.
    """
    if method not in SHARPNESS_METHODS:
        raise ValueError(f"sharpness: unknown method {method!r}; choose one of {SHARPNESS_METHODS}.")
    check_finite(params, "params", "the Hessian there is undefined. Pass finite parameters (did the training run diverge?).")
    if method == "dense":
        return hessian_eigh(E, params, **kw)[0][0]
    if method == "lanczos":
        return top_hessian_eigenpairs(E, params, k=1, **kw)[0][0]
    return _power_sharpness(E, params, **kw)


def _power_sharpness(E: Loss, params: PyTree, num_iter: int = 100, key=None, v0=None) -> jax.Array:
    flat, _, E_flat = flat_loss(E, params)
    if v0 is None:
        key = jax.random.key(0) if key is None else key
        v0 = jax.random.normal(key, flat.shape, flat.dtype)
    _, matvec = jax.linearize(jax.grad(E_flat), flat)
    lam, _ = power_iteration(matvec, v0, num_iter)

    def shifted(lam):  # dominant eigenvalue was the most negative one: H - lam I is PSD
        mu, _ = power_iteration(lambda x: matvec(x) - lam * x, v0, num_iter)
        return lam + mu

    return jax.lax.cond(lam < 0, shifted, lambda lam: lam, lam)
