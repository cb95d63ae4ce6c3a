r"""Functions of the Hessian applied to a vector, by Lanczos: :math:`f(H)v` from Hessian-vector products only.

The principal flow is :math:`\dot\theta = f(H)\nabla E` with :math:`f(\lambda) = \log(1 - h\lambda)/(h\lambda)`
(chapter 3, eq. ``eq-pf``). :func:`pfcourse.flows.principal_flow` diagonalises the dense Hessian,
:math:`O(D^3)` work per evaluation; here the same vector comes from the Krylov space
:math:`\mathcal K_m = \operatorname{span}\{v, Hv, \dots, H^{m-1}v\}`:

.. math:: f(H)v \approx \|v\|\, Q_m f(T_m) e_1, \qquad T_m = Q_m^\top H Q_m \ \text{tridiagonal},

with :math:`m` Hessian-vector products and an :math:`m\times m` eigenproblem (Saad 1992; Higham,
*Functions of Matrices*, 2008, §13.2). It is exact once :math:`m` reaches the number of distinct
eigenvalues of :math:`H` whose eigenvectors :math:`v` touches (the Krylov space is then invariant),
and it converges fast when :math:`f` is analytic on a neighbourhood of the spectrum: here away from
:math:`h\lambda = 1`.

**Complex states.** Off quadratics the PF's state is complex; :math:`E` is continued analytically,
:math:`H` is the holomorphic Hessian, complex *symmetric* (:math:`H^\top = H`), not Hermitian. The
same recurrence then runs with the *bilinear* form :math:`x^\top y` (no conjugation): the basis is
:math:`Q^\top Q = I` rather than :math:`Q^* Q = I`, :math:`T_m` is complex symmetric, and
:math:`f(T_m)` is formed from a general eigendecomposition with the logarithm's branch chosen per
Ritz value (appendix B's ``"side"`` policy, :func:`pfcourse.flows.log_one_minus`). The recurrence can
break down: :math:`w^\top w = 0` for a non-zero :math:`w` (an isotropic vector). That is refused
with an error, never returned as NaN. Near real states (the PF starts real) it does not happen.

==========================================  ======================================================  ==========
function                                    computes                                                book
==========================================  ======================================================  ==========
:func:`symmetric_lanczos_function`          :math:`f(A)v` for a symmetric (real or complex) matvec  appendix B
:func:`hessian_function_times`              :math:`f(H)v` for the Hessian of a loss                 appendix B
:func:`principal_flow_krylov`               the PF field :math:`f(H)\nabla E`, no eigendecomposition appendix B
==========================================  ======================================================  ==========

References: Y. Saad, "Analysis of some Krylov subspace approximations to the matrix exponential
operator", SIAM J. Numer. Anal. 1992; N. J. Higham, *Functions of Matrices*, SIAM 2008, ch. 13;
R. W. Freund, "Conjugate gradient-type methods for linear systems with complex symmetric coefficient
matrices", SIAM J. Sci. Stat. Comput. 1992 (the complex symmetric Lanczos process).
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from ._checks import check_int, check_learning_rate, check_shape, flat_loss, is_concrete, require_finite
from .flows import BRANCHES, Branch, VectorField, pf_coefficient

PyTree = Any

__all__ = [
    "KrylovInfo",
    "PrincipalFlowKrylov",
    "hessian_function_times",
    "principal_flow_krylov",
    "symmetric_lanczos_function",
]

#: ``|w^T w| <= BREAKDOWN * ||w||^2`` with ``w`` not small is a serious breakdown of the complex
#: symmetric recurrence (an almost isotropic vector: dividing by ``sqrt(w^T w)`` would amplify
#: rounding by ``1/sqrt(BREAKDOWN)`` = 1e4 or more).
BREAKDOWN = 1e-8


class KrylovInfo(NamedTuple):
    r"""What :func:`symmetric_lanczos_function` did.

    Attributes:
        iterations: Krylov dimension :math:`m` used (matrix-vector products).
        error_estimate: :math:`\|f(T_m)e_1 - f(T_{m-d})e_1\| / \|f(T_m)e_1\|` with :math:`d` =
            ``check_every`` (0 when the Krylov space became invariant: then the result is exact
            up to rounding).
        invariant: whether the Krylov space became invariant (a lucky breakdown).
        breakdown: whether the complex symmetric recurrence broke down (:math:`w^\top w \approx 0`).
        ritz_values: eigenvalues of :math:`T_m` (padded with :math:`T_{00}` past :math:`m`), shape ``(num_iter,)``.
    """

    iterations: jax.Array
    error_estimate: jax.Array
    invariant: jax.Array
    breakdown: jax.Array
    ritz_values: jax.Array


def _tridiagonal(alpha: jax.Array, beta: jax.Array, J) -> jax.Array:
    """The ``m x m`` matrix ``diag(T_J, alpha_0 I)``: the leading ``J x J`` tridiagonal block of the
    recurrence, padded by a diagonal that is decoupled from it (so ``f(T) e_1 = [f(T_J) e_1; 0]``)."""
    m = alpha.shape[0]
    valid = jnp.arange(m) < J
    off = jnp.where(jnp.arange(m - 1) < J - 1, beta[:-1], 0)
    return jnp.diag(jnp.where(valid, alpha, alpha[0])) + jnp.diag(off, 1) + jnp.diag(off, -1)


def _function_e1(T: jax.Array, f: Callable) -> tuple[jax.Array, jax.Array]:
    r"""``(f(T) e_1, eigenvalues of T)``: :math:`S f(\Theta) S^\top e_1` by ``eigh`` for a real symmetric
    ``T``, :math:`V f(\Theta) V^{-1} e_1` by ``eig`` for a complex symmetric one (``f`` is applied per
    eigenvalue, so a branch chosen per eigenvalue is respected)."""
    e1 = jnp.zeros(T.shape[0], T.dtype).at[0].set(1)
    if jnp.iscomplexobj(T):
        theta, V = jnp.linalg.eig(T)
        c = jnp.linalg.solve(V, e1.astype(V.dtype))
    else:
        theta, V = jnp.linalg.eigh(T)
        c = V[0, :]
    fc = jnp.where(c == 0, 0, f(theta) * c)  # a padded eigenvalue where f is infinite contributes 0
    return V @ fc, theta


def _project_out(Q: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(w - Q^T (Q w), Q w)``: one Gram-Schmidt pass in the bilinear form."""
    c = Q @ w
    return w - Q.T @ c, c


def _lanczos_step(matvec: Callable, Q: jax.Array, alpha: jax.Array, beta: jax.Array, j):
    """Step ``j`` of the symmetric Lanczos recurrence in the bilinear form ``x @ y`` (no conjugation;
    for real vectors the ordinary inner product), with full reorthogonalisation: a Gram-Schmidt pass
    against every row of ``Q`` (zero rows are inert), and a second one when the first removed more
    than ``1 - 1/sqrt(2)`` of the norm (Daniel, Gragg, Kaufman & Stewart 1976: "twice is enough").

    Returns the updated ``(Q, alpha, beta)`` and ``(||w||, ||A q_j||, w @ w)`` for the breakdown tests.
    """
    q = Q[j]
    Aq = matvec(q)
    a = q @ Aq
    w = Aq - a * q - jnp.where(j > 0, beta[j - 1], 0) * Q[j - 1]  # three-term recurrence
    c1 = Q @ w
    w1 = w - Q.T @ c1
    w, c2 = jax.lax.cond(jnp.linalg.norm(w1) < 0.7071 * jnp.linalg.norm(w), _project_out,
                         lambda Q, w: (w, jnp.zeros_like(c1)), Q, w1)
    ww = w @ w
    b = jnp.sqrt(ww)  # the complex square root in the complex symmetric case
    q_next = w / jnp.where(b == 0, 1, b)
    tests = (jnp.linalg.norm(w), jnp.linalg.norm(Aq), ww)
    return (Q.at[j + 1].set(q_next), alpha.at[j].set(a + c1[j] + c2[j]), beta.at[j].set(b)), tests


def _krylov_loop(matvec: Callable, v: jax.Array, f: Callable, m: int, tol, check_every: int):
    """The recurrence of :func:`symmetric_lanczos_function` (inputs checked) in one ``lax.while_loop``:
    a Lanczos step, the breakdown tests, and every ``check_every`` steps ``f(T_J) e_1`` and its change
    since the last check (the error estimate); it stops at ``m`` steps, on an invariant space, on a
    breakdown, or once the estimate is within ``tol``."""
    D, dtype = v.shape[0], v.dtype
    small = 100 * math.sqrt(D) * float(jnp.finfo(dtype).eps)  # rounding of a few steps, with a margin
    nv = jnp.sqrt(v @ v)
    Q = jnp.zeros((m + 1, D), dtype).at[0].set(v / jnp.where(nv == 0, 1, nv))
    out_dtype = jax.eval_shape(lambda T: _function_e1(T, f)[0], jax.ShapeDtypeStruct((m, m), dtype)).dtype

    def body(s):
        j, (Q, alpha, beta), (y_prev, err, ritz), _, _, _ = s
        (Q, alpha, beta), (wn, aqn, ww) = _lanczos_step(matvec, Q, alpha, beta, j)
        invariant = wn <= small * aqn
        broke = ~invariant & (jnp.abs(ww) <= BREAKDOWN * wn**2)
        J = j + 1

        def check(_):
            y, ritz = _function_e1(_tridiagonal(alpha, beta, J), f)
            return y, jnp.where(invariant, 0.0, jnp.linalg.norm(y - y_prev) / jnp.linalg.norm(y)), ritz

        # with tol, every check_every steps; without, only the two checks the final estimate needs
        due = invariant | (J == m) | ((J % check_every == 0) if tol is not None else (J == m - check_every))
        checked = jax.lax.cond(due, check, lambda _: (y_prev, err, ritz), None)
        done = invariant | broke | ((checked[1] <= tol) if tol is not None else False)
        return J, (Q, alpha, beta), checked, done, invariant, broke

    zeros = jnp.zeros(m, dtype)
    err0 = jnp.asarray(jnp.inf, jnp.finfo(out_dtype).dtype)
    ritz0 = jnp.zeros(m, jax.eval_shape(lambda T: _function_e1(T, f)[1], jax.ShapeDtypeStruct((m, m), dtype)).dtype)
    s0 = (0, (Q, zeros, zeros), (jnp.zeros(m, out_dtype), err0, ritz0), False, False, False)
    s0 = jax.tree_util.tree_map(jnp.asarray, s0)
    J, (Q, _, _), (y, err, ritz), _, invariant, broke = jax.lax.while_loop(lambda s: (s[0] < m) & ~s[3], body, s0)
    result = jnp.where(nv == 0, 0, nv * (Q[:m].T @ y))
    return result, KrylovInfo(J, err, invariant, broke, ritz)


def _check_krylov_settings(num_iter, tol, check_every) -> None:
    check_int(num_iter, "num_iter", hint="It is the largest Krylov dimension (Hessian-vector products), e.g. 40.")
    check_int(check_every, "check_every", hint="It is the number of Lanczos steps between error estimates, e.g. 5.")
    if tol is not None and not (isinstance(tol, (float, int)) and not isinstance(tol, bool) and 0 < tol < 1):
        raise ValueError(f"tol must be None (run num_iter steps) or a relative error in (0, 1) such as 1e-8, got {tol!r}.")


def _checked_vector(matvec: Callable, v) -> jax.Array:
    """``v`` as a finite flat inexact vector, complex if ``matvec`` is; refuses an isotropic complex ``v``."""
    v = jnp.asarray(v)
    if v.ndim != 1 or v.shape[0] == 0:
        raise ValueError(f"v must be a non-empty flat vector of shape (D,), got shape {v.shape}; flatten a pytree "
                         "with jax.flatten_util.ravel_pytree.")
    if not jnp.issubdtype(v.dtype, jnp.inexact):
        v = v.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    v = require_finite(v, "symmetric_lanczos_function: v has NaN or inf entries; pass a finite vector.")
    out = jax.eval_shape(matvec, v)
    check_shape(out, v.shape, "matvec(v)", "matvec must map (D,) vectors to (D,) vectors.")
    v = v.astype(jnp.result_type(v.dtype, out.dtype))  # a complex A with a real v: work in complex
    if is_concrete(v) and np.iscomplexobj(v):
        vv, nn = complex(np.asarray(v) @ np.asarray(v)), float(np.linalg.norm(np.asarray(v))) ** 2
        if nn > 0 and abs(vv) <= BREAKDOWN * nn:
            raise ValueError(f"symmetric_lanczos_function: v is (almost) isotropic, |v^T v| = {abs(vv):.2e} <= "
                             f"{BREAKDOWN:.0e} ||v||^2, so the complex symmetric Lanczos process cannot start. "
                             "Perturb v, or use a Hermitian method if A is Hermitian.")
    return v


def symmetric_lanczos_function(
    matvec: Callable[[jax.Array], jax.Array],
    v: jax.Array,
    f: Callable[[jax.Array], jax.Array],
    num_iter: int = 40,
    *,
    tol: float | None = None,
    check_every: int = 5,
    return_info: bool = False,
):
    r"""The Lanczos approximation :math:`f(A)v \approx \sqrt{v^\top v}\; Q_m f(T_m) e_1` of a symmetric ``A``.

    ``A`` (given as ``matvec``) is real symmetric, or complex symmetric (:math:`A^\top = A`) when
    ``v`` or ``A`` is complex; the recurrence uses the bilinear form :math:`x^\top y` in both cases,
    so :math:`Q_m^\top Q_m = I` and :math:`T_m = Q_m^\top A Q_m`. In plain Python::

        q = v / sqrt(v @ v); Q = [q]
        for j in range(m):
            w = A @ Q[j]; alpha[j] = Q[j] @ w
            w = w - alpha[j] Q[j] - beta[j-1] Q[j-1]     # then twice w -= Q.T @ (Q @ w)
            beta[j] = sqrt(w @ w); Q.append(w / beta[j])
        S, theta = eig(T); return sqrt(v @ v) * Q.T @ (S @ (f(theta) * solve(S, e1)))

    With ``num_iter = D`` it is :math:`f(A)v` exactly (up to rounding), here :math:`e^{-A}v` against
    the eigendecomposition:

    >>> import numpy as np, jax, jax.numpy as jnp
    >>> B = np.random.default_rng(1).normal(size=(5, 5))
    >>> A, v = (B + B.T) / 4, np.arange(1.0, 6.0)
    >>> lam, U = np.linalg.eigh(A)
    >>> want = U @ (np.exp(-lam) * (U.T @ v))
    >>> got = symmetric_lanczos_function(
    ...     lambda x: jnp.asarray(A, x.dtype) @ x, jnp.asarray(v, jnp.float32),
    ...     lambda t: jnp.exp(-t), num_iter=5)
    >>> bool(np.allclose(got, want, rtol=1e-4, atol=1e-4))
    True

    The error is estimated a posteriori by :math:`\|f(T_m)e_1 - f(T_{m-d})e_1\|/\|f(T_m)e_1\|`,
    :math:`d` = ``check_every`` (the change over the last ``d`` steps: an estimate of the error of the
    *older* iterate, so conservative when the iteration converges fast); with ``tol`` the loop stops
    once it is below ``tol``. It stops too when :math:`\|w\| \le 100\sqrt D\,\varepsilon\,\|Aq_j\|`: the
    Krylov space is invariant and the result exact up to rounding. Book: appendix B, §The PF on a
    real network.

    Args:
        matvec: ``x -> A x`` on flat vectors of shape ``(D,)`` (same dtype out as in).
        v: the vector, shape ``(D,)``, real or complex, finite.
        f: applied elementwise to eigenvalues of :math:`T_m` (real for real ``A``, else complex);
            it may return complex values for real ones (the PF's :math:`\log(1 - h\lambda)/(h\lambda)`).
        num_iter: the largest Krylov dimension, capped at ``D``.
        tol: stop once the error estimate is at most ``tol`` (``None``: always ``num_iter`` steps).
        check_every: steps between error estimates (each costs an ``num_iter x num_iter`` eigensolve).
        return_info: also return a :class:`KrylovInfo`.

    Returns:
        :math:`f(A)v`, shape ``(D,)``; with ``return_info``, ``(f(A)v, KrylovInfo)``.

    Raises:
        ValueError: ``v`` not a finite vector, bad ``num_iter``, ``tol`` or ``check_every``, or a complex
            ``v`` with :math:`v^\top v \approx 0`.
        equinox.EquinoxRuntimeError: a serious breakdown of the complex symmetric recurrence (also under ``jit``).
    """
    v = _checked_vector(matvec, v)
    _check_krylov_settings(num_iter, tol, check_every)
    m = min(num_iter, v.shape[0])
    result, info = _krylov_loop(lambda x: jnp.asarray(matvec(x), v.dtype), v, f, m, tol, check_every)
    result = eqx.error_if(result, info.breakdown, _BREAKDOWN_MESSAGE)
    return (result, info) if return_info else result


_BREAKDOWN_MESSAGE = (
    "complex symmetric Lanczos broke down: a residual w with w^T w ~ 0 but w != 0 (an isotropic vector), "
    "so the next basis vector w / sqrt(w^T w) does not exist. This happens far from real states; evaluate "
    "at a state with a smaller imaginary part, or use the dense field (pfcourse.flows.principal_flow)."
)


def _hessian_matvec(E: Callable, theta: PyTree, complex_state: bool):
    """``(flat theta, unravel, grad E at theta, v -> H v)``: forward over reverse, linearised once
    (:func:`jax.linearize`), holomorphic derivatives when ``complex_state`` (``E`` must be analytic)."""
    flat, unravel, e = flat_loss(E, theta)
    if complex_state:
        flat = flat.astype(jnp.result_type(flat.dtype, jnp.complex64))
    grad = jax.grad(e, holomorphic=complex_state)
    g, matvec = jax.linearize(grad, flat)
    return flat, unravel, g, matvec


def hessian_function_times(
    E: Callable[[PyTree], jax.Array],
    theta: PyTree,
    v: PyTree,
    f: Callable[[jax.Array], jax.Array],
    num_iter: int = 40,
    *,
    tol: float | None = None,
    check_every: int = 5,
    return_info: bool = False,
):
    r""":math:`f(H)v` for the Hessian :math:`H = \nabla^2E(\theta)`, by Lanczos on Hessian-vector products.

    .. math:: f(H)v \approx \sqrt{v^\top v}\; Q_m f(T_m) e_1, \qquad T_m = Q_m^\top H Q_m,

    :func:`symmetric_lanczos_function` with :math:`x \mapsto Hx` (``jax.linearize`` of ``jax.grad``,
    as :func:`pfcourse.spectral.hvp`, linearised once). If ``theta`` or ``v`` is complex, ``E`` is
    continued analytically: ``H`` is the holomorphic Hessian, complex symmetric, and ``E`` must be
    analytic (``tanh``, polynomials, ``exp``; not ``abs`` or ``relu``). Never forms ``H``: memory
    :math:`O(mD)`, time :math:`m` Hessian-vector products plus :math:`O(m^2D)` for reorthogonalisation.
    Book: appendix B, §The PF on a real network.

    Args:
        E: scalar loss of a pytree.
        theta: the point, any pytree of float or complex arrays.
        v: the vector, a pytree like ``theta``.
        f, num_iter, tol, check_every, return_info: as in :func:`symmetric_lanczos_function`.

    Returns:
        :math:`f(H)v` as a pytree like ``theta`` (complex if ``f`` or the state is); with
        ``return_info``, also a :class:`KrylovInfo`.
    """
    if jax.tree_util.tree_structure(theta) != jax.tree_util.tree_structure(v):
        raise ValueError("hessian_function_times: v must be a pytree with the structure of theta, got "
                         f"{jax.tree_util.tree_structure(v)} for {jax.tree_util.tree_structure(theta)}.")
    flat_v = jax.flatten_util.ravel_pytree(v)[0]
    complex_state = jnp.iscomplexobj(jax.flatten_util.ravel_pytree(theta)[0]) or jnp.iscomplexobj(flat_v)
    flat, unravel, _, matvec = _hessian_matvec(E, theta, complex_state)
    check_shape(flat_v, flat.shape, "hessian_function_times: v (flattened)", "v must have the shapes of theta.")
    out = symmetric_lanczos_function(matvec, flat_v.astype(jnp.result_type(flat.dtype, flat_v.dtype)), f,
                                     num_iter, tol=tol, check_every=check_every, return_info=return_info)
    return (unravel(out[0]), out[1]) if return_info else unravel(out)


class PrincipalFlowKrylov(VectorField):
    r"""The field of :func:`principal_flow_krylov` as data: the loss, ``h`` (an array leaf), the branch
    and the Krylov settings (static)."""

    loss: Callable
    h: jax.Array
    branch: str = eqx.field(static=True, default="side")
    num_iter: int = eqx.field(static=True, default=60)
    tol: float | None = eqx.field(static=True, default=1e-9)
    check_every: int = eqx.field(static=True, default=5)

    def __call__(self, theta: PyTree) -> PyTree:
        theta = require_finite(theta, "principal_flow_krylov: the field is not finite at theta: theta has NaN or "
                                      "inf entries (inside integrate: the flow diverged; integrate over a shorter span).")
        complex_state = jnp.iscomplexobj(jax.flatten_util.ravel_pytree(theta)[0])
        flat, unravel, g, matvec = _hessian_matvec(self.loss, theta, complex_state)
        alpha = lambda lam: pf_coefficient(self.h * lam, self.branch)  # noqa: E731
        out, info = symmetric_lanczos_function(matvec, g, alpha, self.num_iter, tol=self.tol,
                                               check_every=self.check_every, return_info=True)
        if self.tol is not None:
            out = eqx.error_if(out, info.error_estimate > self.tol, _unconverged_message(self.num_iter, self.tol))
        return unravel(out)


def principal_flow_krylov(
    E: Callable[[PyTree], jax.Array],
    h: float,
    branch: Branch = "side",
    *,
    num_iter: int = 60,
    tol: float | None = 1e-9,
    check_every: int = 5,
) -> PrincipalFlowKrylov:
    r"""The principal flow's field without an eigendecomposition of :math:`H`:

    .. math:: \dot\theta = \tfrac1h\log(I - hH)H^{-1}\nabla E = f(H)\nabla E, \qquad
              f(\lambda) = \frac{\log(1 - h\lambda)}{h\lambda} = \alpha(h\lambda),

    evaluated as :math:`\|\nabla E\|\,Q_m f(T_m)e_1` on the Krylov space of :math:`H` and
    :math:`\nabla E` (:func:`hessian_function_times`). Same field as :func:`pfcourse.flows.principal_flow`
    (chapter 3, eq. ``eq-pf``), to within ``tol``: for real ``theta`` the Ritz values are real and
    :math:`\alpha` takes :math:`\log|1 - h\lambda| + i\pi` where :math:`h\lambda > 1`; for complex
    ``theta`` (the state of an integrated PF) the Hessian is holomorphic and complex symmetric, the
    recurrence complex symmetric, and the logarithm's branch is chosen per Ritz value with
    ``branch`` (appendix B's ``"side"`` policy by default, :func:`pfcourse.flows.log_one_minus`).
    Ritz values converge to the outlying eigenvalues first, which are the ones where :math:`\alpha`
    differs most from gradient flow's :math:`-1`.

    Book: appendix B, eq. ``eq-beyond-krylov-pf``, §The PF on a real network.

    Args:
        E: the loss, a scalar analytic function of a pytree.
        h: the learning rate, ``h > 0``.
        branch: ``"side"``, ``"principal"`` or ``"positive_cut"``.
        num_iter: the largest Krylov dimension per evaluation.
        tol: the error estimate each evaluation must reach (``None``: always ``num_iter`` steps, no check).
        check_every: Lanczos steps between error estimates.

    Returns:
        The field ``theta -> dtheta/dt`` (a complex pytree like ``theta``), an equinox Module
        (:class:`PrincipalFlowKrylov`, like the fields of :mod:`pfcourse.flows`), for
        :func:`pfcourse.flows.integrate`. It raises (``equinox.EquinoxRuntimeError`` under ``jit``)
        when ``theta`` is not finite, when the estimate stays above ``tol`` after ``num_iter`` steps,
        or on a breakdown.
    """
    check_learning_rate(h)
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}.")
    _check_krylov_settings(num_iter, tol, check_every)
    return PrincipalFlowKrylov(E, jnp.asarray(h), branch, num_iter, tol, check_every)


def _unconverged_message(num_iter: int, tol: float) -> str:
    return (f"principal_flow_krylov: the Lanczos estimate of the PF field did not reach tol = {tol:g} within "
            f"num_iter = {num_iter} Hessian-vector products. Raise num_iter, loosen tol, or move h away "
            "from 1/lambda_i (the coefficient log(1 - h lambda)/(h lambda) is singular at h lambda = 1).")
