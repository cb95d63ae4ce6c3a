r"""Gradient descent and the continuous-time flows that model it.

A *field* is a function ``theta -> dtheta/dt``; integrating it is a separate step
(:func:`integrate`), as in diffrax. The fields built here are data, not closures: equinox Modules
holding the loss and ``h`` (an array leaf), so one compilation of :func:`integrate` serves every
``h``, and ``h`` can be traced (``jit``) or batched (``vmap``). Any callable works as a field too. Losses ``E(theta)`` may take any pytree, except
:func:`principal_flow`, which needs the Hessian as a matrix and flattens the pytree itself.

======================  =========================================================  ============
model                   field                                                      book
======================  =========================================================  ============
gradient descent        :math:`\theta_{n+1} = \theta_n - h\nabla E(\theta_n)`       chapter 1
gradient flow (NGF)     :math:`\dot\theta = -\nabla E`                              chapter 1
IGR flow                :math:`\dot\theta = -\nabla E - \tfrac h2 H\nabla E`        chapter 2
principal flow (PF)     :math:`\dot\theta = \sum_i \alpha(h\lambda_i)
                        (u_i^\top\nabla E) u_i`, :math:`\alpha(x)=\log(1-x)/x`      chapter 3
======================  =========================================================  ============
"""
from __future__ import annotations

from typing import Any, Callable, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

# check_learning_rate and check_finite stay importable from here too (the widgets call flows.check_learning_rate).
from ._checks import (check_finite, check_int, check_learning_rate, check_scalar_loss, check_symmetric,
                      flat_loss, is_concrete, require_finite)

PyTree = Any
Field = Callable[[PyTree], PyTree]
Branch = Literal["side", "principal", "positive_cut"]
BRANCHES = ("side", "principal", "positive_cut")

__all__ = [
    "BRANCHES",
    "DivergenceError",
    "GradientFlow",
    "IGRFlow",
    "PFCorrectedFlow",
    "PrincipalFlow",
    "ThirdOrderFlow",
    "VectorField",
    "gradient_descent",
    "gradient_flow",
    "igr_flow",
    "integrate",
    "log_one_minus",
    "pf_coefficient",
    "principal_flow",
    "quadratic_pf_solution",
    "rk4_step",
    # chapter 5
    "pf_corrected_flow",
    "third_order_flow",
]


class DivergenceError(FloatingPointError):
    """Raised when an iteration or an integration leaves the finite numbers."""


# --------------------------------------------------------------------------- input checks


_FIELD_NOT_FINITE = "the field is not finite at theta"


def _finite_state(theta: PyTree, who: str) -> PyTree:
    """``theta`` if it is finite; else a ``ValueError`` (concrete) or a run-time error (traced)."""
    return require_finite(
        theta,
        f"{who}: {_FIELD_NOT_FINITE}: theta has non-finite entries (NaN or inf). "
        "Evaluate it at finite parameters; inside integrate this means the flow diverged before "
        "this point, so integrate over a shorter time span.",
    )


# --------------------------------------------------------------------------- gradient descent


def gradient_descent(E: Callable[[PyTree], jax.Array], theta0: PyTree, h: float, steps: int) -> PyTree:
    r"""Iterates of gradient descent :math:`\theta_{n+1} = \theta_n - h\nabla E(\theta_n)`.

    GD is the explicit Euler discretisation of gradient flow with step ``h``. In plain Python::

        for n in range(steps):
            theta = theta - h * grad(E)(theta)

    That loop, run, gives the same iterates:

    >>> import jax, jax.numpy as jnp
    >>> E = lambda th: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * th ** 2)
    >>> theta = start = jnp.array([1.0, -2.0])
    >>> plain = [theta]
    >>> for n in range(3):
    ...     theta = theta - 0.1 * jax.grad(E)(theta)
    ...     plain.append(theta)
    >>> bool(jnp.allclose(gradient_descent(E, start, 0.1, 3), jnp.stack(plain)))
    True

    One compilation serves every call with the same loss, shapes and ``steps`` (``h`` is data), and the
    function works under ``jax.jit`` and ``jax.vmap`` (over ``theta0`` or ``h``); there a divergence
    raises at run time (:func:`equinox.error_if`) with the message below, without the step number
    (an ``equinox.EquinoxRuntimeError`` under ``equinox.filter_jit``).
    Book: chapter 1, §Gradient descent is explicit Euler.

    Args:
      E: the loss, a scalar function of a pytree of parameters.
      theta0: the starting point (any pytree of float arrays).
      h: the learning rate, ``h > 0``.
      steps: the number of steps ``n >= 0`` (a Python integer: it fixes the output's length).

    Returns:
      The iterates :math:`\theta_0, \dots, \theta_n` stacked on a new leading axis (length ``steps + 1``).

    Raises:
      ValueError: ``h <= 0``, ``steps`` not an integer ``>= 0``, non-finite ``theta0`` or a non-scalar loss.
      DivergenceError: an iterate is not finite; the message names the step, and says whether the
        iterates blew up (a learning rate above the stability threshold) or the gradient was NaN
        at an ordinary point (the loss is undefined there).
    """
    check_learning_rate(h)
    check_finite(theta0, "theta0")
    steps = check_int(steps, "steps", minimum=0)
    check_scalar_loss(E, theta0)
    iterates, (diverged, n, code, size) = _gd_scan(E, theta0, jnp.asarray(h), steps)
    if not is_concrete(diverged):
        return eqx.branched_error_if(iterates, diverged, code, [_gd_message(h, None, steps, k, None)
                                                                 for k in range(3)])
    if bool(diverged):
        raise DivergenceError(_gd_message(h, int(n), steps, int(code), float(size)))
    return iterates


_GRADIENT_KINDS = ("", "infinite", "NaN")


def _gd_message(h, n, steps: int, code: int, size) -> str:
    """The message of a divergence at iterate ``n`` (``None`` when traced: no numbers known).

    ``code``: 0, the iterates blew up; 1 or 2, the gradient was infinite or NaN at the ordinary,
    finite iterate ``n - 1`` (the loss, not the learning rate, is at fault there).
    """
    if code == 0:
        where = f"iterate {n} of {steps} is not finite (h = {h})" if n is not None else "an iterate is not finite"
        return (f"gradient descent diverged: {where}. The learning rate is above the stability threshold "
                "2/lambda_max here; reduce h or the number of steps.")
    kind = _GRADIENT_KINDS[code]
    where = (f"at iterate {n - 1}, an ordinary finite point (max |theta| = {size:.3g}), so iterate {n} is "
             "not finite" if n is not None else "at an ordinary finite iterate, so the next one is not finite")
    return (f"gradient descent: the gradient of E is {kind} {where}. This is a {kind} gradient, not a "
            "learning rate above 2/lambda_max: the loss is undefined or not differentiable there (sqrt or "
            "log at or below 0, 0/0, an overflow inside E). Fix the loss there, e.g. clip its argument or "
            "add a small epsilon.")


@eqx.filter_jit
def _gd_scan(E, theta0, h, steps: int):
    """The iterates and ``(diverged, n, code, size)``: the first non-finite iterate ``n``, and ``code``
    1 (infinite) or 2 (NaN) if the gradient at iterate ``n - 1`` was not finite although that iterate
    is ordinary (no entry above ``1e6 * max(1, max |theta_0|)``, ``size`` = its max entry), else 0."""
    grad = jax.grad(E)

    def step(theta, _):
        g = grad(theta)
        leaves = jax.tree_util.tree_leaves(g)
        nan = jnp.any(jnp.stack([jnp.any(jnp.isnan(x)) for x in leaves]))
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        new = jax.tree_util.tree_map(lambda p, gi: (p - h * gi).astype(p.dtype), theta, g)
        return new, (new, jnp.where(nan, 2, jnp.where(finite, 0, 1)))

    _, (rest, codes) = jax.lax.scan(step, theta0, None, length=steps)
    iterates = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), theta0, rest)
    flat = jax.vmap(lambda t: ravel_pytree(t)[0])(iterates)
    finite = jnp.all(jnp.isfinite(flat), axis=1)
    n = jnp.argmin(finite)
    prev = jnp.max(jnp.abs(flat[jnp.maximum(n - 1, 0)]), initial=0.0)
    ordinary = prev <= 1e6 * jnp.maximum(1.0, jnp.max(jnp.abs(flat[0]), initial=0.0))
    codes = jnp.concatenate([jnp.zeros(1, codes.dtype), codes])       # codes[n]: gradient at n - 1
    code = jnp.where(ordinary & (n > 0), codes[n], 0)
    return iterates, (~jnp.all(finite), n, code, prev)


# --------------------------------------------------------------------------- real fields


class VectorField(eqx.Module):
    """Base of the fields of pfcourse (here and :mod:`pfcourse.central_flow`): an equinox Module (a pytree: ``h`` is an array leaf, the loss a leaf
    that equinox's ``filter_jit`` holds static), called as ``field(theta) -> dtheta/dt``.

    Hashed and compared by identity, so ``jax.jit(field)`` and ``jax.eval_shape(field, ...)`` work
    (a Module with array fields has no value hash, and ``==`` of traced arrays is no bool).
    """

    def __hash__(self):
        return id(self)

    def __eq__(self, other):  # by identity too: JAX's caches compare functions, and arrays have no ==
        return self is other


class GradientFlow(VectorField):
    r"""The field of :func:`gradient_flow`, :math:`\theta \mapsto -\nabla E(\theta)`, as data (a pytree)."""

    loss: Callable

    def __call__(self, theta: PyTree) -> PyTree:
        theta = _finite_state(theta, "gradient_flow")
        return jax.tree_util.tree_map(jnp.negative, jax.grad(self.loss)(theta))


def gradient_flow(E: Callable[[PyTree], jax.Array]) -> GradientFlow:
    r"""Negative gradient flow (NGF) :math:`\dot\theta = -\nabla E(\theta)`.

    Book: chapter 1, §Gradient flow.

    Returns:
      The field ``theta -> -grad E(theta)`` over any pytree, an equinox Module (data, not a
      closure: :func:`integrate` compiles once for every field of the same structure). At a
      ``theta`` with a NaN or an infinity it raises (a ``ValueError``, or equinox's runtime error
      under ``jit``) instead of returning NaN; so do all the fields below.
    """
    return GradientFlow(E)


class IGRFlow(VectorField):
    r"""The field of :func:`igr_flow`; ``h`` is an array leaf, so it can be traced and vmapped."""

    loss: Callable
    h: jax.Array

    def __call__(self, theta: PyTree) -> PyTree:
        theta = _finite_state(theta, "igr_flow")
        grad = jax.grad(self.loss)
        g, hg = jax.jvp(grad, (theta,), (grad(theta),))
        return jax.tree_util.tree_map(lambda a, b: -a - 0.5 * self.h * b, g, hg)


def igr_flow(E: Callable[[PyTree], jax.Array], h: float) -> IGRFlow:
    r"""Implicit gradient regularisation flow, BEA to first order in ``h``.

    .. math:: \dot\theta = -\nabla E - \tfrac h2 H\nabla E = -\nabla\big(E + \tfrac h4\|\nabla E\|^2\big)

    ``H∇E`` is a Hessian-vector product (forward over reverse), never a dense Hessian.
    Book: chapter 2, §Implicit gradient regularisation. Reference: Barrett & Dherin (ICLR 2021).

    Returns:
      The field as an equinox Module holding ``E`` and ``h`` (see :func:`gradient_flow`).
    """
    check_learning_rate(h)
    return IGRFlow(E, jnp.asarray(h))


# --------------------------------------------------------------------------- the principal flow


def log_one_minus(x: jax.Array, branch: Branch = "side") -> jax.Array:
    r"""The logarithm :math:`\log(1 - x)` on a chosen branch, for real or complex ``x``.

    With :math:`w = 1 - x`:

    * ``"side"`` (default): :math:`\log w` where :math:`\operatorname{Re} w \ge 0`, and
      :math:`\log(-w) + i\pi` where :math:`\operatorname{Re} w < 0`. This is the branch of
      :math:`\log` with :math:`\arg w \in [-\pi/2, 3\pi/2)`: its cut is the negative imaginary axis,
      so it is continuous across the whole real axis (except at 0) and equals the principal branch
      on it. States that start real stay near it, so the eigenvalues never jump branch.
    * ``"principal"``: :math:`\arg w \in (-\pi, \pi]`, cut on the negative real axis, which is
      exactly where :math:`w` sits when :math:`h\lambda > 1`.
    * ``"positive_cut"``: :math:`\arg w \in [0, 2\pi)`, cut on the positive real axis, where
      :math:`w` sits when :math:`h\lambda < 1`.

    For real ``x`` all three give :math:`\log|1 - x| + i\pi[x > 1]` (the principal value).
    At :math:`x = 1` the result is :math:`-\infty` (real part): the flow's coefficient is singular there.
    Book: chapter 3, §The complex logarithm; appendix B, §Which branch?
    """
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}.")
    x = jnp.asarray(x)
    if not jnp.iscomplexobj(x):
        w = 1.0 - x
        return jnp.log(jnp.abs(w)) + 1j * jnp.pi * (w < 0)
    w = 1.0 - x
    if branch == "principal":
        return jnp.log(w)
    if branch == "side":
        return jnp.where(w.real >= 0, jnp.log(w), jnp.log(-w) + 1j * jnp.pi)
    # positive_cut: arg in [0, 2 pi)
    lw = jnp.log(w)
    return jnp.where(lw.imag < 0, lw + 2j * jnp.pi, lw)


def pf_coefficient(x: jax.Array, branch: Branch = "side") -> jax.Array:
    r"""The principal flow's per-direction coefficient :math:`\alpha(x) = \log(1 - x)/x`, :math:`x = h\lambda`.

    :math:`\alpha(x) = -\sum_{k\ge0} x^k/(k+1)`, so :math:`\alpha(0) = -1` (the gradient-flow value)
    is used at and, through the series :math:`-1 - x/2 - x^2/3 - x^3/4`, near ``x = 0``.
    :math:`\alpha(1) = -\infty`. Returns a complex array.
    Book: chapter 3, eq. ``eq-pf-coefficient``.
    """
    x = jnp.asarray(x)
    xc = x.astype(jnp.result_type(x.dtype, jnp.complex64))
    small = jnp.abs(xc) < 1e-4
    safe = jnp.where(small, 0.5 + 0j, xc)
    series = -1.0 - xc / 2 - xc**2 / 3 - xc**3 / 4
    ratio = log_one_minus(safe if jnp.iscomplexobj(x) else safe.real, branch) / safe
    ratio = jnp.where(xc == 1, -jnp.inf + 0j, ratio)  # log(0)/1 = -inf exactly, not -inf + nan*i
    return jnp.where(small, series, ratio)


class PrincipalFlow(VectorField):
    r"""The field of :func:`principal_flow` as data: the loss, ``h`` (an array leaf) and the branch."""

    loss: Callable
    h: jax.Array
    branch: str = eqx.field(static=True, default="side")

    def __call__(self, theta: PyTree) -> PyTree:
        flat, unravel, e = flat_loss(self.loss, _finite_state(theta, "principal_flow"))
        if jnp.iscomplexobj(flat):
            grad = jax.grad(e, holomorphic=True)
            g = grad(flat)
            H = jax.jacfwd(grad, holomorphic=True)(flat)
            lam, V = jnp.linalg.eig(H)
            c = jnp.linalg.solve(V, g)
        else:
            g = jax.grad(e)(flat)
            H = jax.hessian(e)(flat)
            lam, V = jnp.linalg.eigh(0.5 * (H + H.T))
            c = V.T @ g
        alpha = pf_coefficient(self.h * lam, self.branch)
        singular = jnp.isinf(alpha.real) & (c != 0)
        # -inf * 0 is a direction absent from the gradient: it contributes 0 (and stays differentiable)
        out = V @ (jnp.where(jnp.isinf(alpha.real), 0.0, alpha) * c)
        out = eqx.error_if(
            out, jnp.any(singular),
            "principal_flow: h*lambda_i == 1 exactly for a direction with non-zero gradient "
            "component; the PF is singular there (GD removes that component in one step). Use "
            "flows.quadratic_pf_solution, or change h slightly.",
        )
        out = eqx.error_if(out, ~jnp.all(jnp.isfinite(out)), "principal_flow: the field is not finite "
                           "(NaN or inf in theta, the gradient or the Hessian).")
        return unravel(out)


def principal_flow(E: Callable[[PyTree], jax.Array], h: float, branch: Branch = "side") -> Field:
    r"""The principal flow (PF) of gradient descent with learning rate ``h``.

    .. math:: \dot\theta = \sum_i \frac{\log(1 - h\lambda_i)}{h\lambda_i}\,(u_i^\top\nabla E)\,u_i
              = \tfrac1h \log(I - hH)\,H^{-1}\nabla E,

    the sum of all principal BEA terms :math:`-\tfrac{h^k}{k+1} H^k\nabla E` (Rosca et al., 2023).

    The field is complex-valued (the logarithm is complex once :math:`h\lambda_i > 1`).
    For a real ``theta`` it uses ``eigh`` of the real symmetric Hessian. For a complex ``theta``
    (the PF's state turns complex off quadratics) the loss is continued analytically: ``∇E`` and
    ``H`` are holomorphic derivatives, ``H`` is complex *symmetric* (not Hermitian), so it uses
    ``eig`` and the projections :math:`c = V^{-1}\nabla E`; ``branch`` picks the logarithm's branch
    per eigenvalue (:func:`log_one_minus`). ``E`` must then be analytic (polynomials, ``exp``,
    ``tanh``, ... but not ``abs``).

    Special values: :math:`\lambda_i = 0` gives the limit :math:`\alpha = -1`; negative
    :math:`\lambda_i` give real :math:`-1 < \alpha < 0` (escape, slower than gradient flow); :math:`h\lambda_i = 1` makes
    :math:`\alpha = -\infty`: GD removes that component in one step and the PF collapses it in zero
    time, so the field is infinite. There the field raises a runtime error (under ``jit`` too)
    if the projection :math:`u_i^\top\nabla E` is non-zero, and the direction contributes 0 if it is
    exactly zero. Use :func:`quadratic_pf_solution`, which is exact there, or move ``h``.

    Book: chapter 3, eq. ``eq-pf``; appendix B for complex states and branches.

    Args:
      E: the loss, a scalar function of a pytree.
      h: the learning rate, ``h > 0``.
      branch: ``"side"`` (default, see :func:`log_one_minus`), ``"principal"`` or ``"positive_cut"``.

    Returns:
      The field ``theta -> dtheta/dt`` (a complex pytree like ``theta``), an equinox Module
      (:class:`PrincipalFlow`) holding ``E``, ``h`` (an array leaf) and ``branch``.
    """
    check_learning_rate(h)
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}.")
    return PrincipalFlow(E, jnp.asarray(h), branch)


def quadratic_pf_solution(A, theta0, h: float, ts, center=None) -> jax.Array:
    r"""Exact principal flow of the quadratic :math:`E(\theta) = \tfrac12(\theta - c)^\top A(\theta - c)`.

    .. math:: \theta(t) = c + U \exp\!\big(\tfrac th \log(I - h\Lambda)\big) U^\top (\theta_0 - c),
       \qquad A = U\Lambda U^\top.

    At :math:`t = nh` the factor is :math:`(1 - h\lambda_i)^n` whatever the branch, so the curve
    passes through every GD iterate; between them it is complex when :math:`h\lambda_i > 1`.
    :math:`h\lambda_i = 1` is exact too: the factor is 0 for :math:`t > 0` (GD lands on the
    minimum along :math:`u_i` in one step) and 1 at :math:`t = 0`.
    Book: chapter 3, eq. ``eq-pf-quadratic``.

    Args:
      A: symmetric ``(D, D)`` matrix (the Hessian).
      theta0: the start, shape ``(D,)``.
      h: the learning rate.
      ts: times, shape ``(T,)``, ``t >= 0``.
      center: the critical point ``c`` (default 0).

    Returns:
      Complex array ``(T, D)``.
    """
    check_learning_rate(h)
    A = jnp.asarray(A)
    theta0 = jnp.asarray(theta0)
    ts = jnp.atleast_1d(jnp.asarray(ts))
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix, got shape {A.shape}.")
    if theta0.shape != (A.shape[0],):
        raise ValueError(f"theta0 must have shape ({A.shape[0]},) to match A {A.shape}, got {theta0.shape}.")
    A = check_symmetric(A, "quadratic_pf_solution: A (a Hessian)")
    if is_concrete(ts) and np.any(np.asarray(ts) < 0):
        raise ValueError("times ts must be non-negative.")
    check_finite(theta0, "theta0")
    c = jnp.zeros_like(theta0) if center is None else jnp.asarray(center)
    lam, U = jnp.linalg.eigh(A)
    logw = log_one_minus(h * lam)                      # (D,), -inf where h*lam == 1
    z0 = U.T @ (theta0 - c)
    expo = ts[:, None] / h * jnp.where(jnp.isinf(logw.real), 0.0, logw)[None, :]
    factor = jnp.where(
        jnp.isinf(logw.real)[None, :],
        jnp.where(ts[:, None] > 0, 0.0, 1.0).astype(expo.dtype),
        jnp.exp(expo),
    )
    return c + (factor * z0[None, :]) @ U.T


# --------------------------------------------------------------------------- integration


def rk4_step(field: Callable[[PyTree], PyTree], y: PyTree, dt, has_aux: bool = False):
    r"""One step of the classical fourth-order Runge–Kutta method, over pytrees (the package's one RK4).

    .. math:: k_1 = f(y),\ k_2 = f(y + \tfrac\delta2 k_1),\ k_3 = f(y + \tfrac\delta2 k_2),\
              k_4 = f(y + \delta k_3),\qquad y \leftarrow y + \tfrac\delta6(k_1 + 2k_2 + 2k_3 + k_4).

    With ``has_aux=True`` the field returns ``(velocity, aux)`` and the step returns
    ``(y, (aux_1, aux_2, aux_3, aux_4))``. Used by :func:`integrate` (``method="rk4"``) and
    :func:`pfcourse.central_flow.central_flow_step`. Book: chapter 1, §Integrating a flow.
    """
    f = field if has_aux else (lambda x: (field(x), None))
    if not all(is_concrete(leaf) for leaf in jax.tree_util.tree_leaves(y)):
        f = jax.jit(f)        # under a trace: the field is traced once for the four stages, not four times
    k1, a1 = f(y)
    k2, a2 = f(_axpy(y, dt / 2, k1))
    k3, a3 = f(_axpy(y, dt / 2, k2))
    k4, a4 = f(_axpy(y, dt, k3))
    incr = jax.tree_util.tree_map(lambda a, b, c, d: (a + 2 * b + 2 * c + d) / 6, k1, k2, k3, k4)
    y = _axpy(y, dt, incr)
    return (y, (a1, a2, a3, a4)) if has_aux else y


def _axpy(y: PyTree, a, v: PyTree) -> PyTree:
    """``y + a v`` leaf by leaf."""
    return jax.tree_util.tree_map(lambda p, w: p + a * w, y, v)


def _packing(theta0: PyTree, complex_state: bool):
    """``(y0, to_tree, to_real)``: the state as one real vector (complex: real parts, then imaginary)."""
    flat, unravel = ravel_pytree(theta0)
    if not complex_state:
        return flat, (lambda y: unravel(y)), (lambda tree: ravel_pytree(tree)[0])
    flat = flat.astype(jnp.result_type(flat.dtype, jnp.complex64))
    n = flat.size

    def to_tree(y):
        return unravel(y[:n] + 1j * y[n:])

    def to_real(tree):
        v = ravel_pytree(tree)[0].astype(flat.dtype)
        return jnp.concatenate([v.real, v.imag])

    return jnp.concatenate([flat.real, flat.imag]), to_tree, to_real


def _check_integrate(field, theta0, ts, method, substeps, max_steps):
    """The checks of :func:`integrate`, all before any work; returns ``(ts, substeps, max_steps, complex)``."""
    if method not in ("dopri8", "tsit5", "rk4"):
        raise ValueError(f"method must be 'dopri8', 'tsit5' or 'rk4', got {method!r}.")
    check_finite(theta0, "theta0")
    ts = jnp.atleast_1d(jnp.asarray(ts, dtype=ravel_pytree(theta0)[0].real.dtype))
    if ts.ndim != 1:
        raise ValueError(f"ts must be a 1-D array of times, got shape {ts.shape}.")
    if ts.size == 0:
        raise ValueError("ts is empty: pass at least the start time ts[0] (where the state is theta0), "
                         "e.g. ts = jnp.linspace(0.0, 10.0, 101).")
    if is_concrete(ts) and ts.size > 1 and not np.all(np.diff(np.asarray(ts)) > 0):
        raise ValueError("ts must be strictly increasing.")
    substeps = check_int(substeps, "substeps", hint="It is the number of RK4 steps between consecutive times.")
    max_steps = check_int(max_steps, "max_steps", hint="It caps the adaptive solver's steps; the default is 100_000.")
    out = jax.eval_shape(field, theta0)
    out_leaves, in_leaves = jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(theta0)
    if [l.shape for l in out_leaves] != [jnp.shape(l) for l in in_leaves]:
        raise ValueError("the field must return a pytree shaped like theta0: "
                         f"got {[l.shape for l in out_leaves]} for {[jnp.shape(l) for l in in_leaves]}.")
    complex_state = any(jnp.iscomplexobj(l) for l in out_leaves + in_leaves)
    return ts, substeps, max_steps, complex_state


# Dopri8 has 14 stages, Tsit5 7; both are FSAL (first same as last), so each step (accepted or
# rejected) costs one fewer new evaluation; the initial step-size choice costs 2 more.
_NEW_EVALUATIONS_PER_STEP = {"dopri8": 13, "tsit5": 6}


def integrate(
    field: Field,
    theta0: PyTree,
    ts,
    *,
    method: Literal["dopri8", "tsit5", "rk4"] = "dopri8",
    rtol: float = 1e-10,
    atol: float = 1e-12,
    substeps: int = 100,
    max_steps: int = 100_000,
    return_stats: bool = False,
):
    r"""Integrate :math:`\dot\theta = f(\theta)` from ``theta0`` at ``ts[0]``; return the states at ``ts``.

    Complex states (the principal flow's; complex when ``theta0`` or the field's output is) are
    integrated as one real state of twice the size, real parts then imaginary parts.
    ``method``: ``"dopri8"`` (default) / ``"tsit5"``, adaptive Runge–Kutta of order 8 / 5 (diffrax,
    PID controller at ``rtol``, ``atol``, landing exactly on ``ts``); ``"rk4"``, :func:`rk4_step`
    with ``substeps`` equal steps between consecutive times.

    One compilation serves every call of the same structure: the field is a pytree (this module's
    fields are equinox Modules, ``h`` an array leaf), so a new ``h``, start or grid of the same shapes
    reuses it. It works under ``jax.jit`` and ``jax.vmap`` (e.g. over ``h``); there a divergence
    raises at run time with the message below (an ``equinox.EquinoxRuntimeError`` under
    ``equinox.filter_jit``). Book: chapter 1, §Integrating a flow.

    Args:
      field: ``theta -> dtheta/dt`` (e.g. :func:`principal_flow`).
      theta0: the state at time ``ts[0]`` (a pytree).
      ts: strictly increasing times, shape ``(T,)``, ``T >= 1``.
      substeps: RK4 steps per interval of ``ts`` (``method="rk4"``), a positive integer.
      max_steps: most steps of the adaptive solvers, a positive integer.
      return_stats: also return ``{"field_evaluations": int, "steps": int}``.

    Returns:
      The states at ``ts``, stacked on a leading axis (complex if the flow is).

    Raises:
      ValueError: bad ``ts`` (empty, not increasing), non-finite ``theta0``, unknown method,
        ``substeps`` or ``max_steps`` not a positive integer; all before any work.
      DivergenceError: the solution left the finite numbers.
    """
    ts, substeps, max_steps, complex_state = _check_integrate(field, theta0, ts, method, substeps, max_steps)
    if ts.size == 1:
        y0, to_tree, _ = _packing(theta0, complex_state)
        states = jax.vmap(to_tree)(y0[None])
        return (states, {"field_evaluations": 0, "steps": 0}) if return_stats else states
    try:
        states, first_bad, nsteps, failed = _solve(field, theta0, ts, method, complex_state, rtol, atol,
                                                   substeps, max_steps)
    except eqx.EquinoxRuntimeError as err:  # one of our fields was called at a NaN/inf state
        if _FIELD_NOT_FINITE not in str(err):
            raise
        raise DivergenceError(_integrate_message(method, ts, None)) from err
    states = _integrate_status(states, first_bad, failed, method, ts)
    evals = 4 * nsteps if method == "rk4" else _NEW_EVALUATIONS_PER_STEP[method] * nsteps + 2
    if is_concrete(nsteps) and is_concrete(evals):
        nsteps, evals = int(nsteps), int(evals)
    return (states, {"field_evaluations": evals, "steps": nsteps}) if return_stats else states


def _integrate_message(method: str, ts, first_bad) -> str:
    """What went wrong, for the user: the field at a NaN state, a non-finite output, a solver stop."""
    if first_bad == "solver":
        return (f"integrate: the {method} solver stopped early. The flow may be diverging or singular "
                "(h*lambda = 1); shorten ts, raise max_steps, or try method='rk4'.")
    if first_bad is None:
        span = f" between t = {float(ts[0])} and t = {float(ts[-1])}" if is_concrete(ts) else ""
        return (f"integrate: the state became NaN or inf{span} (the field was evaluated there): the flow "
                "diverged. Integrate over a shorter time span.")
    at = f"at t = {float(ts[first_bad])} (and after)" if first_bad >= 0 else "from some time on"
    return (f"the flow is not finite {at}: it diverged, or the field was singular. Integrate over a "
            "shorter time span.")


def _integrate_status(states, first_bad, failed, method: str, ts):
    """Raise the host-side errors of :func:`integrate`, or attach them to traced ``states``."""
    if not (is_concrete(failed) and is_concrete(first_bad)):
        bad = jnp.asarray(failed) | (first_bad >= 0)
        return eqx.branched_error_if(states, bad, jnp.where(failed, 0, 1).astype(jnp.int32),
                                     [_integrate_message(method, ts, "solver"), _integrate_message(method, ts, -1)])
    if bool(failed):
        raise DivergenceError(_integrate_message(method, ts, "solver"))
    if int(first_bad) >= 0:
        raise DivergenceError(_integrate_message(method, ts, int(first_bad)))
    return states


@eqx.filter_jit
def _solve(field, theta0, ts, method: str, complex_state: bool, rtol, atol, substeps: int, max_steps: int):
    """The compiled solve: ``(states, first non-finite index or -1, steps, solver failed)``.

    ``field`` is a pytree (its arrays traced), ``method`` and the integers static: one compilation per
    structure."""
    y0, to_tree, to_real = _packing(theta0, complex_state)

    def vf(y):
        return to_real(field(to_tree(y)))

    if method == "rk4":
        ys = _rk4(vf, y0, ts, substeps)
        nsteps, failed = jnp.asarray((ts.size - 1) * substeps), jnp.asarray(False)
    else:
        ys, nsteps, failed = _diffrax_solve(vf, y0, ts, method, rtol, atol, max_steps)
    finite = jnp.all(jnp.isfinite(ys), axis=1)
    first_bad = jnp.where(jnp.all(finite), -1, jnp.argmin(finite))
    return jax.vmap(to_tree)(ys), first_bad, nsteps, failed


def _rk4(vf, y0, ts, substeps: int):
    """:func:`rk4_step` with ``substeps`` equal steps per interval of ``ts``; the states at ``ts``."""
    def interval(y, t_pair):
        dt = (t_pair[1] - t_pair[0]) / substeps
        y = jax.lax.fori_loop(0, substeps, lambda _, y: rk4_step(vf, y, dt), y)
        return y, y

    _, rest = jax.lax.scan(interval, y0, jnp.stack([ts[:-1], ts[1:]], axis=1))
    return jnp.concatenate([y0[None], rest])


def _diffrax_solve(vf, y0, ts, method: str, rtol, atol, max_steps: int):
    """Dopri8 or Tsit5 with a PID controller, saving at ``ts``: ``(ys, steps, failed)``."""
    import diffrax          # here, not at the top: half a second of import that most callers never use

    solver = {"dopri8": diffrax.Dopri8(), "tsit5": diffrax.Tsit5()}[method]
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: vf(y)), solver, t0=ts[0], t1=ts[-1], dt0=None, y0=y0,
        saveat=diffrax.SaveAt(ts=ts), stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps, throw=False,
    )
    return sol.ys, sol.stats["num_steps"], sol.result != diffrax.RESULTS.successful


# --------------------------------------------------------------------------- chapters 4 and 5


def _holomorphic_grad(e: Callable, flat: jax.Array) -> Callable:
    return jax.grad(e, holomorphic=True) if jnp.iscomplexobj(flat) else jax.grad(e)


def _third_derivative_term(grad: Callable, theta: jax.Array, g: jax.Array) -> jax.Array:
    """:math:`\\nabla^3E(\\theta)[g, g]`, the vector :math:`\\sum_{jk}\\partial_i\\partial_j\\partial_k E\\, g_j g_k`.

    A forward-mode derivative of a Hessian-vector product; for complex ``theta`` the tangents are
    complex and the result is the holomorphic third derivative.
    """
    return jax.jvp(lambda s: jax.jvp(grad, (s,), (g,))[1], (theta,), (g,))[1]


class PFCorrectedFlow(VectorField):
    r"""The field of :func:`pf_corrected_flow`: a principal flow plus the :math:`h^2` correction.

    ``principal`` is a :class:`PrincipalFlow` or any PF field with the same ``loss`` and ``h``
    (e.g. :class:`pfcourse.krylov.PrincipalFlowKrylov`, as appendix A uses it)."""

    principal: VectorField

    def __call__(self, theta: PyTree) -> PyTree:
        theta = _finite_state(theta, "pf_corrected_flow")  # checked before the PF's own check runs
        flat, unravel, e = flat_loss(self.principal.loss, theta)
        grad = _holomorphic_grad(e, flat)
        correction = _third_derivative_term(grad, flat, grad(flat))
        principal = ravel_pytree(self.principal(theta))[0]
        return unravel(principal - (self.principal.h**2 / 12) * correction)


class ThirdOrderFlow(VectorField):
    r"""The field of :func:`third_order_flow` as data (``h`` an array leaf)."""

    loss: Callable
    h: jax.Array

    def __call__(self, theta: PyTree) -> PyTree:
        h = self.h
        flat, unravel, e = flat_loss(self.loss, _finite_state(theta, "third_order_flow"))
        grad = _holomorphic_grad(e, flat)
        g = grad(flat)
        Hg = jax.jvp(grad, (flat,), (g,))[1]
        H2g = jax.jvp(grad, (flat,), (Hg,))[1]
        d3 = _third_derivative_term(grad, flat, g)
        return unravel(-g - (h / 2) * Hg - (h**2 / 3) * H2g - (h**2 / 12) * d3)


def pf_corrected_flow(E: Callable[[PyTree], jax.Array], h: float, branch: Branch = "side") -> Field:
    r"""The principal flow plus the first non-principal term of backward error analysis.

    .. math:: \dot\theta = \tfrac1h\log(I - hH)H^{-1}\nabla E \;-\; \tfrac{h^2}{12}\,\nabla^3E[\nabla E, \nabla E].

    Derivation of the sign: the third BEA term of explicit Euler is
    :math:`f_3 = \tfrac13 f'f'f + \tfrac1{12} f''(f, f)`. Its first part is principal (it is in the PF);
    with :math:`f = -\nabla E`, :math:`f'' = -\nabla^3 E` and
    :math:`h^2\tfrac1{12}f''(f, f) = -\tfrac{h^2}{12}\nabla^3E[-\nabla E, -\nabla E] = -\tfrac{h^2}{12}\nabla^3E[\nabla E, \nabla E]`.
    The vector :math:`\nabla^3E[g, g]` equals :math:`\nabla_\theta(g^\top H(\theta)g)` with :math:`g` held
    fixed (the authors' notebooks write the term that way); here it is a forward-over-forward
    derivative of a Hessian-vector product. The PF then misses BEA terms of order :math:`h^3` and
    up only, so its error against GD over a fixed number of steps falls like :math:`h^4` instead of
    :math:`h^3` (chapter 5 measures both).

    Works for real and complex ``theta`` (holomorphic derivatives, as in :func:`principal_flow`).
    Book: chapter 5, §How good is the PF off quadratics. Reference: Rosca et al. (TMLR 2023).

    Args:
      E: the loss, a scalar analytic function of a pytree.
      h: the learning rate, ``h > 0``.
      branch: the logarithm's branch for the principal part (see :func:`log_one_minus`).

    Returns:
      The field ``theta -> dtheta/dt`` (a complex pytree like ``theta``).
    """
    return PFCorrectedFlow(principal_flow(E, h, branch))


def third_order_flow(E: Callable[[PyTree], jax.Array], h: float) -> Field:
    r"""The modified equation of gradient descent truncated after the :math:`h^2` term.

    .. math:: \dot\theta = -g - \tfrac h2 Hg - \tfrac{h^2}3 H^2g - \tfrac{h^2}{12}\nabla^3E[g, g], \qquad g = \nabla E,

    i.e. :math:`f_1 + hf_2 + h^2f_3` with :math:`f = -\nabla E` (book: chapter 2,
    eq. ``eq-bea-third-gradient``). Its time-:math:`h` flow matches one GD step up to :math:`O(h^4)`.
    Only Hessian-vector products and one third-derivative contraction, no dense Hessian.
    Works for real and complex ``theta``.
    Book: chapter 2, exercise ``ex-bea-third``; chapter 5, §How good is the PF off quadratics.
    """
    check_learning_rate(h)
    return ThirdOrderFlow(E, jnp.asarray(h))
