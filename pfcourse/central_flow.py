r"""The central flow: what gradient descent does, on average, at the edge of stability.

Once the sharpness :math:`S(\theta) = \lambda_0(\nabla^2 E(\theta))` reaches :math:`2/h`, gradient
descent oscillates along the top eigenvector :math:`u_0` while its time average follows a smooth
path that holds :math:`S` at :math:`2/h` (Cohen, Damian, Talwalkar, Kolter & Lee, ICLR 2025). Time is
counted in **GD steps** here (step ``n`` at ``t = n``, velocities scaled by ``h``), as in that paper;
the rest of the course uses ``t = nh``.

=============================  ===================================================================  =========
function                       computes                                                             book
=============================  ===================================================================  =========
:func:`sharpness_gradient`     :math:`\nabla S = \nabla(u_0^\top H u_0) = D^3E(\theta)[u_0, u_0]`    chapter 8
:func:`sigma_squared`          :math:`\sigma^2 = \max(0, -2\langle\nabla S,\nabla E\rangle/\|\nabla S\|^2)` on the edge  chapter 8
:func:`stable_flow`            field :math:`-h\nabla E` (gradient flow, valid while :math:`S < 2/h`)  chapter 8
:func:`central_flow`           field :math:`-h[\nabla E + \tfrac12\sigma^2\nabla S]`                 chapter 8
:func:`central_flow_step`      one GD step of time: ``(theta, state) -> (theta, state), record``      chapter 8
:func:`run_central_flow`       the loop over :func:`central_flow_step`, with the checks              chapter 8
:func:`predicted_loss`         time-averaged loss :math:`E + \tfrac12\sigma^2 S`                     chapter 8
:func:`measured_oscillation`   :math:`x_n = u_0^\top(\theta_n^{GD} - \theta^{CF}(n))`               chapter 8
:func:`time_average`           moving average of a series over a window of steps                    chapter 8
=============================  ===================================================================  =========

Only **one** unstable direction is modelled. With several eigenvalues at :math:`2/h` the paper
solves a small semidefinite complementarity problem for the oscillation covariance; no solver for
it ships with pfcourse's dependencies, so :func:`run_central_flow` reports (``second_eigenvalue``)
when a second eigenvalue reaches the edge and warns, rather than silently pretending.

Losses may take any pytree; eigenvectors are flat vectors (``ravel_pytree`` order).

**Integrating the central flow.** The central flow is gradient flow constrained to :math:`S \le 2/h`:
:math:`\sigma^2` switches on where the constraint binds. :func:`central_flow_step` integrates the
*stabilised* field

.. math:: \dot\theta = -h\big[\nabla E + \tfrac12 s\,\nabla S\big],\qquad
          s = \max\!\Big(0,\ \frac{2\kappa(S - 2/h)/h - 2\langle\nabla S,\nabla E\rangle}{\|\nabla S\|^2}\Big),

for which :math:`dS/dt = -\kappa(S - 2/h)` whenever :math:`s > 0` (Baumgarte stabilisation of the
constraint, :math:`\kappa = 1/\delta`, :math:`\delta = 1/\text{substeps}`). On the edge
(:math:`S = 2/h`) :math:`s` is exactly :math:`\sigma^2` of :func:`sigma_squared`, so the exact
central flow solves this equation; a numerical drift off :math:`S = 2/h` decays like
:math:`e^{-\kappa t}` instead of accumulating; the flow arrives on the edge by itself (:math:`s`
turns on when, at the current rate, :math:`S` would reach :math:`2/h` within one substep: no
event location); and when gradient flow turns to lower :math:`S`, :math:`s = 0` and it leaves.

``method="rk4"`` (default) takes classical Runge–Kutta steps (:func:`pfcourse.flows.rk4_step`) of
size :math:`\delta` on this field and then, if the step overshoots (:math:`S > 2/h`), one Newton step
back onto :math:`S = 2/h` along :math:`\nabla S` (projection onto the constraint, as for
differential-algebraic equations: Hairer, Lubich & Wanner, §IV.4). ``method="euler"`` takes one
evaluation per substep, :math:`\theta \leftarrow \theta + \delta f(\theta)`; with :math:`\kappa = 1/\delta`
that is the *projected Euler* step: :math:`s` is the smallest value for which the linearised sharpness
after the substep is at most :math:`2/h`, so it lands on the edge. Both are first order overall,
because the field has a kink where :math:`s` switches on; RK4 is fourth order while the active set
does not change (the stable phase, and long stretches on the edge), and approaches the edge like
:math:`e^{-\kappa t}` instead of landing on it.

At the start of each substep :math:`u_0` is refreshed by Lanczos
(:func:`pfcourse.spectral.top_hessian_eigenpairs`, ``num_iter`` Hessian-vector products)
warm-started at the previous :math:`u_0`; within the substep :math:`u` is held fixed, the sharpness
is the Rayleigh quotient :math:`u^\top H(\theta)u` (equal to :math:`\lambda_0` to second order in the
eigenvector's drift) and :math:`\nabla S` its exact gradient, :func:`sharpness_gradient`; gradient,
:math:`Hu` and :math:`\nabla S` come from one nested forward pass.

Why not :func:`pfcourse.flows.integrate`: its fields are pure functions of the state, so the
eigensolver could not be warm-started (a cold Lanczos at each of dopri8's stages), and an adaptive
controller would fight the kink at the switch. The stable phase alone can be integrated with
:func:`stable_flow` and :func:`pfcourse.flows.integrate`; the distance between the two before the
edge measures this method's discretisation error (the book prints it).
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from tqdm.auto import tqdm

from . import spectral
from ._checks import check_finite, check_int, check_learning_rate, check_scalar_loss
from .flows import DivergenceError, VectorField, rk4_step

PyTree = Any
Loss = Callable[[PyTree], jax.Array]

__all__ = [
    "CentralFlow",
    "CentralFlowRun",
    "CentralFlowState",
    "StableFlow",
    "central_flow",
    "central_flow_step",
    "init_central_flow",
    "measured_oscillation",
    "predicted_loss",
    "run_central_flow",
    "sharpness_gradient",
    "sigma_squared",
    "stable_flow",
    "time_average",
]


# --------------------------------------------------------------------------- checks


def _as_tree(params: PyTree, u) -> PyTree:
    """``u`` as a pytree like ``params``: a flat ``(D,)`` vector is unravelled, a matching pytree passes."""
    flat, unravel = ravel_pytree(params)
    same = jax.tree_util.tree_structure(u) == jax.tree_util.tree_structure(params) and all(
        jnp.shape(a) == jnp.shape(b)
        for a, b in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(params))
    )
    if same:
        return u
    if jnp.ndim(u) == 1 and jnp.shape(u) == flat.shape:
        return unravel(jnp.asarray(u, flat.dtype))
    raise ValueError(
        f"u must be a flat vector of shape {flat.shape} (ravel_pytree order) or a pytree shaped like "
        f"params; got {jax.tree_util.tree_map(jnp.shape, u)}."
    )


# --------------------------------------------------------------------------- the sharpness and its gradient


def sharpness_gradient(E: Loss, params: PyTree, u) -> PyTree:
    r"""Gradient of the sharpness, :math:`\nabla S = \nabla_\theta\big(u_0^\top H(\theta)u_0\big)`, by autodiff.

    For a simple top eigenvalue, :math:`\nabla\lambda_0 = \nabla_\theta(u^\top H(\theta)u)` with the unit
    eigenvector :math:`u = u_0` held fixed (first-order perturbation theory: the change of :math:`u_0`
    does not move the Rayleigh quotient to first order). Component :math:`i` is the third derivative
    contracted twice with :math:`u`, :math:`\sum_{jk}\partial_{ijk}E\,u_ju_k`, and by the symmetry of
    third derivatives it equals the directional derivative of the Hessian-vector product along
    :math:`u`:

    .. math:: \nabla S = D^3E(\theta)[u, u, \cdot\,] = \frac{d}{d\varepsilon} H(\theta + \varepsilon u)\,u\Big|_{\varepsilon=0},

    i.e. ``jax.jvp`` over :func:`pfcourse.spectral.hvp` (forward over forward over reverse): a small
    constant times the cost of one gradient, never a Hessian.

    Args:
        E: scalar loss ``E(params)``, any pytree.
        params: the point :math:`\theta`.
        u: the unit top eigenvector :math:`u_0`, flat ``(D,)`` (``ravel_pytree`` order) or a pytree
            like ``params``. Any fixed ``u`` gives :math:`\nabla_\theta(u^\top H u)`; it is
            :math:`\nabla S` only for the unit top eigenvector.

    Returns:
        :math:`\nabla S`, a pytree like ``params``.

    References:
        Cohen, Damian, Talwalkar, Kolter & Lee, ICLR 2025 [cohen2025centralflows].

    Book: chapter 8, §The sharpness and its gradient (eq. ``eq-grad-sharpness``).
    """
    u_tree = _as_tree(params, u)
    return jax.jvp(lambda p: spectral.hvp(E, p, u_tree), (params,), (u_tree,))[1]


def _tree_dot(a: PyTree, b: PyTree) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def sigma_squared(grad_E: PyTree, grad_S: PyTree, S, h: float, *, edge_rtol: float = 0.0) -> jax.Array:
    r"""The central flow's oscillation variance along :math:`u_0`.

    .. math:: \sigma^2 = \begin{cases}
                 \max\!\big(0,\ -2\langle\nabla S, \nabla E\rangle / \|\nabla S\|^2\big) & S \ge 2/h,\\
                 0 & S < 2/h,
              \end{cases}

    the value that makes :math:`dS/dt = \langle\nabla S, \dot\theta\rangle = 0` along
    :math:`\dot\theta = -h[\nabla E + \tfrac12\sigma^2\nabla S]` when gradient flow alone would
    sharpen (:math:`\langle\nabla S, -\nabla E\rangle > 0`). "On the edge" means
    :math:`S \ge (2/h)(1 - \text{edge\_rtol})`.

    Args:
        grad_E, grad_S: :math:`\nabla E` and :math:`\nabla S`, pytrees of the same structure.
        S: the sharpness.
        h: the learning rate.
        edge_rtol: relative tolerance of "on the edge" (0: exactly :math:`S \ge 2/h`).

    Returns:
        :math:`\sigma^2 \ge 0`, a scalar.

    Raises:
        EquinoxRuntimeError (also under ``jit``): :math:`S > 2/h` with :math:`\|\nabla S\| = 0` —
        then no motion can lower :math:`S` (e.g. a quadratic with :math:`h\lambda_0 > 2`, where GD
        diverges).

    Book: chapter 8, §Holding the sharpness at 2/h (eq. ``eq-central-sigma``).
    """
    check_learning_rate(h)
    dot = _tree_dot(grad_S, grad_E)
    nrm2 = _tree_dot(grad_S, grad_S)
    needed = (S >= (2.0 / h) * (1.0 - edge_rtol)) & (dot < 0)
    sig2 = jnp.where(needed, -2.0 * dot / jnp.where(nrm2 > 0, nrm2, 1.0), 0.0)
    return eqx.error_if(
        sig2, (S > 2.0 / h) & (nrm2 == 0),
        "sigma_squared: the sharpness is above 2/h but grad S = 0, so no oscillation can bring it back "
        "(on a quadratic the Hessian is constant and GD with h*lambda_0 > 2 diverges). Lower h, or use "
        "a loss whose curvature depends on theta.",
    )


# --------------------------------------------------------------------------- the two fields


class StableFlow(VectorField):
    r"""The field of :func:`stable_flow` as data (``h`` an array leaf)."""

    loss: Callable
    h: jax.Array

    def __call__(self, theta: PyTree) -> PyTree:
        return jax.tree_util.tree_map(lambda g: -self.h * g, jax.grad(self.loss)(theta))


def stable_flow(E: Loss, h: float) -> StableFlow:
    r"""The stable flow, gradient flow with time in GD steps: :math:`\dot\theta = -h\nabla E(\theta)`.

    It models GD while :math:`S < 2/h` (Cohen et al., 2025). Integrate it with
    :func:`pfcourse.flows.integrate` at ``ts = range(steps + 1)``; it is
    :func:`pfcourse.flows.gradient_flow` with time rescaled by ``h``.

    Book: chapter 8, §Time in steps (eq. ``eq-stable-flow``).
    """
    check_learning_rate(h)
    return StableFlow(E, jnp.asarray(h))


def _top_eigenpairs(E, params, v0, num_iter):
    D = ravel_pytree(params)[0].size
    # A diverged state leaves a NaN warm start, which Lanczos refuses; start it from ones instead and
    # let run_central_flow report the divergence (with its step) after the chunk.
    v0 = jnp.where(jnp.all(jnp.isfinite(v0)), v0, jnp.ones_like(v0))
    k = min(2, D)
    vals, vecs = spectral.top_hessian_eigenpairs(E, params, k=k, num_iter=max(k, min(num_iter, D)), v0=v0)
    lam1 = vals[1] if k == 2 else -jnp.inf
    return vals[0], lam1, vecs[:, 0]


class CentralFlow(VectorField):
    r"""The field of :func:`central_flow` as data: the loss, ``h``, the Lanczos start ``key``."""

    loss: Callable
    h: jax.Array
    key: jax.Array
    num_iter: int = eqx.field(static=True)
    edge_rtol: float = eqx.field(static=True)

    def __call__(self, theta: PyTree) -> PyTree:
        E, h = self.loss, self.h
        flat = ravel_pytree(theta)[0]
        S, _, u = _top_eigenpairs(E, theta, jax.random.normal(self.key, flat.shape, flat.dtype), self.num_iter)
        g = jax.grad(E)(theta)
        dS = sharpness_gradient(E, theta, u)
        s2 = sigma_squared(g, dS, S, h, edge_rtol=self.edge_rtol)
        return jax.tree_util.tree_map(lambda a, b: -h * (a + 0.5 * s2 * b), g, dS)


def central_flow(E: Loss, h: float, *, num_iter: int = 20, edge_rtol: float = 1e-3, key=None) -> CentralFlow:
    r"""The central flow for one unstable direction, as a field (time in GD steps).

    .. math:: \dot\theta = -h\Big[\nabla E + \tfrac12\sigma^2(\theta)\,\nabla S\Big],

    with :math:`\sigma^2` from :func:`sigma_squared` (zero below the edge, where this is the stable
    flow). On the edge the field is :math:`-h` times :math:`\nabla E` with its component along
    :math:`\nabla S` removed, so :math:`dS/dt = 0`. Each evaluation finds :math:`(S, u_0)` afresh by
    Lanczos (``num_iter`` Hessian-vector products from a random start); :func:`run_central_flow`
    integrates the same field with warm starts and keeps :math:`S \le 2/h`, and is what to use for
    a trajectory. This field is for evaluating and testing the model at a point.

    Book: chapter 8, §Holding the sharpness at 2/h (eq. ``eq-central-flow``).
    """
    check_learning_rate(h)
    num_iter = check_int(num_iter, "num_iter")
    return CentralFlow(E, jnp.asarray(h), jax.random.key(0) if key is None else key, num_iter, float(edge_rtol))


# --------------------------------------------------------------------------- integration


class CentralFlowRun(NamedTuple):
    """A central-flow trajectory, sampled at every GD step ``n = 0, ..., steps`` (time in steps).

    Attributes:
        params: the states :math:`\\theta(n)`, a pytree with a leading axis of length ``steps + 1``.
        loss: :math:`E(\\theta(n))`.
        sharpness: :math:`S(\\theta(n))`.
        second_eigenvalue: :math:`\\lambda_1(\\theta(n))` (``-inf`` for one parameter).
        sigma2: the :math:`s` of the stabilised field at :math:`\\theta(n)` (see :func:`central_flow_step`):
            :math:`\\sigma^2` of :func:`sigma_squared` on the edge, 0 away from it, rising from 0 to
            :math:`\\sigma^2` within the last substep before the edge.
        predicted_loss: :math:`E + \\tfrac12\\sigma^2 S`, the predicted time average of GD's loss.
        directions: unit :math:`u_0(\\theta(n))`, flat, shape ``(steps + 1, D)``, signs kept continuous.
        residual: :math:`\\|Hu_0 - Su_0\\|`, the eigensolver's accuracy at each step.
        grad_S_norm: :math:`\\|\\nabla S\\|`.
        h, substeps, method: the learning rate and the integration settings.
    """

    params: PyTree
    loss: np.ndarray
    sharpness: np.ndarray
    second_eigenvalue: np.ndarray
    sigma2: np.ndarray
    predicted_loss: np.ndarray
    directions: np.ndarray
    residual: np.ndarray
    grad_S_norm: np.ndarray
    h: float
    substeps: int
    method: str


class CentralFlowState(NamedTuple):
    """What :func:`central_flow_step` carries besides :math:`\\theta`.

    Attributes:
        u: the unit top eigenvector :math:`u_0` (flat, ``ravel_pytree`` order): the warm start of the
            next Lanczos call, its sign kept continuous.
    """

    u: jax.Array


def init_central_flow(theta0: PyTree, key=None) -> CentralFlowState:
    """The state before the first :func:`central_flow_step`: a random (cold) Lanczos start from ``key``."""
    flat = ravel_pytree(theta0)[0]
    key = jax.random.key(0) if key is None else key
    return CentralFlowState(jax.random.normal(key, flat.shape, flat.dtype))


def _local_quantities(E, theta, u_tree):
    """``(grad E, H u, D^3E[u, u])`` at ``theta`` in one nested forward pass (jvp over jvp over grad)."""
    grad = jax.grad(E)

    def g_and_hu(p):
        return jax.jvp(grad, (p,), (u_tree,))

    (g, hu), (_, dS) = jax.jvp(g_and_hu, (theta,), (u_tree,))
    return g, hu, dS


def _velocity(E, theta, u, h, kappa):
    """The stabilised central-flow field at ``theta`` with the eigenvector ``u`` held fixed.

    The sharpness is the Rayleigh quotient ``S = u^T H(theta) u`` (equal to lambda_0 when ``u`` is
    the top eigenvector, and within O(|du|^2) of it for a nearby ``u``) and ``grad S`` its exact
    gradient. Returns ``(velocity, parts)``.
    """
    u_tree = _as_tree(theta, u)
    g, hu, dS = _local_quantities(E, theta, u_tree)
    S = _tree_dot(u_tree, hu)
    dot, nrm2 = _tree_dot(dS, g), _tree_dot(dS, dS)
    need = 2.0 * (kappa * (S - 2.0 / h) / h - dot)
    s = jnp.where(need > 0, need / jnp.where(nrm2 > 0, nrm2, 1.0), 0.0)
    velocity = jax.tree_util.tree_map(lambda a, b: -h * (a + 0.5 * s * b), g, dS)
    parts = dict(S=S, sigma2=s, grad_S_norm=jnp.sqrt(nrm2), stuck=(need > 0) & (nrm2 == 0),
                 residual=jnp.linalg.norm(ravel_pytree(hu)[0] - S * u))
    return velocity, parts


def _refresh(E, theta, u, num_iter):
    """Top eigenpairs by Lanczos warm-started at ``u``; the new ``u_0`` with its sign kept continuous."""
    S, lam1, u_new = _top_eigenpairs(E, theta, u, num_iter)
    return S, lam1, u_new * jnp.where(jnp.vdot(u_new, u) < 0, -1.0, 1.0)


def _axpy(theta, a, v):
    return jax.tree_util.tree_map(lambda p, w: p + a * w, theta, v)


def _record(E, theta, u, h, kappa, num_iter):
    """Lanczos at ``theta`` (warm start ``u``) and what the run records there; returns ``(u0, record)``."""
    _, lam1, u = _refresh(E, theta, u, num_iter)
    _, parts = _velocity(E, theta, u, h, kappa)
    parts.update(loss=E(theta), lam1=lam1, u=u)
    return u, parts


def _onto_edge(E, theta, u, h):
    """An overshoot :math:`S > 2/h` left by a step: one Newton step back onto :math:`S = 2/h` along
    :math:`\\nabla S` (projection onto the constraint; Hairer, Lubich & Wanner, §IV.4)."""
    u_tree = _as_tree(theta, u)
    _, hu, dS = _local_quantities(E, theta, u_tree)
    gap = _tree_dot(u_tree, hu) - 2.0 / h
    nrm2 = _tree_dot(dS, dS)
    step = jnp.where((gap > 0) & (nrm2 > 0), gap / jnp.where(nrm2 > 0, nrm2, 1.0), 0.0)
    return _axpy(theta, -step, dS)


def _substep(E, theta, u, h, dt, method):
    """One substep of size ``dt`` with ``u`` already refreshed at ``theta``; returns ``(theta, stuck)``."""
    field = functools.partial(_velocity, E, u=u, h=h, kappa=1.0 / dt)
    if method == "euler":
        k1, p1 = field(theta)
        return _axpy(theta, dt, k1), p1["stuck"]
    theta, parts = rk4_step(lambda th: field(th), theta, dt, has_aux=True)
    stuck = parts[0]["stuck"] | parts[1]["stuck"] | parts[2]["stuck"] | parts[3]["stuck"]
    return _onto_edge(E, theta, u, h), stuck


def central_flow_step(E: Loss, theta: PyTree, state: CentralFlowState, h, *, substeps: int = 2,
                      num_iter: int = 10, method: str = "rk4"):
    r"""One GD step of time of the central flow: ``(theta, state) -> (theta, state), record``.

    Records at :math:`\theta` (loss, :math:`S`, :math:`\lambda_1`, :math:`s`, :math:`u_0`, residual,
    :math:`\|\nabla S\|`, ``stuck``), then takes ``substeps`` substeps of size
    :math:`\delta = 1/\text{substeps}` on the stabilised field (module docstring, eq.
    ``eq-central-flow``), refreshing :math:`u_0` by warm-started Lanczos at the start of each.
    ``method="rk4"``: :func:`pfcourse.flows.rk4_step`, then a Newton step back onto :math:`S = 2/h`
    if it overshoots; ``"euler"``: the projected Euler step. Compiled once per loss, shapes,
    ``num_iter`` and ``method`` (``h`` and ``substeps`` are data). In outline (pseudocode, Euler)::

        for _ in range(substeps):
            S, u = lanczos(H(theta), start=u)
            g, dS = grad E(theta), grad S(theta; u)
            s = max(0, 2 * (kappa * (S - 2/h) / h - dS @ g) / (dS @ dS))
            theta = theta - dt * h * (g + s/2 * dS)

    Book: chapter 8, §Integrating the central flow.

    Returns:
        ``((theta, state), record)``; ``record`` is a dict of arrays (``record["stuck_step"]``: the
        constraint bound with :math:`\nabla S = 0` during a substep).
    """
    dtype = ravel_pytree(theta)[0].dtype
    return _step(E, theta, state, jnp.asarray(h, dtype), jnp.asarray(substeps), num_iter, method)


@eqx.filter_jit
def _step(E, theta, state, h, substeps, num_iter: int, method: str):
    dt = 1.0 / substeps.astype(h.dtype)
    u, rec = _record(E, theta, state.u, h, 1.0 / dt, num_iter)  # its Lanczos is the first refresh

    def substep(i, carry):
        theta, u, stuck = carry
        u = jax.lax.cond(i > 0, lambda: _refresh(E, theta, u, num_iter)[2], lambda: u)
        theta, st = _substep(E, theta, u, h, dt, method)
        return theta, u, stuck | st

    theta, u, stuck = jax.lax.fori_loop(0, substeps, substep, (theta, u, jnp.zeros((), bool)))
    rec["stuck_step"] = stuck
    return (theta, CentralFlowState(u)), rec


@eqx.filter_jit
def _final_record(E, theta, u, h, substeps, num_iter: int):
    """The record at the last state (no step after it)."""
    return _record(E, theta, u, h, substeps.astype(h.dtype), num_iter)[1]


@eqx.filter_jit
def _chunk(E, theta, state, h, n_valid, length: int, substeps, num_iter: int, method: str):
    """``length`` steps of :func:`central_flow_step` under ``lax.scan``, the first ``n_valid`` taken
    (the rest skipped: one compilation serves every chunk). Returns the final ``(theta, state)``, the
    records and the states after each step (entries past ``n_valid`` are placeholders)."""
    def take(theta, state):
        return _step(E, theta, state, h, substeps, num_iter, method)

    def skip(theta, state):
        shapes = jax.eval_shape(take, theta, state)[1]
        return (theta, state), jax.tree_util.tree_map(lambda sd: jnp.zeros(sd.shape, sd.dtype), shapes)

    def body(carry, i):
        carry, rec = jax.lax.cond(i < n_valid, take, skip, *carry)
        return carry, (rec, carry[0])

    (theta, state), (recs, states) = jax.lax.scan(body, (theta, state), jnp.arange(length))
    return theta, state, recs, states


METHODS = ("rk4", "euler")
_CHUNK = 20
_STUCK = ("the sharpness is at 2/h and gradient flow would raise it, but grad S = 0, so no oscillation "
          "can hold it there (e.g. a quadratic: constant Hessian, where GD with h*lambda_0 > 2 diverges). "
          "Lower h, or use a loss whose curvature depends on theta.")


def run_central_flow(E: Loss, theta0: PyTree, h: float, steps: int, *, method: str = "rk4", substeps: int = 2,
                     num_iter: int = 10, edge_rtol: float = 1e-3, key=None, progress: bool = True) -> CentralFlowRun:
    r"""Integrate the central flow (one unstable direction) for ``steps`` GD steps of time.

    The loop over :func:`central_flow_step` (the stabilised field and the two methods are explained in
    the module docstring), run in compiled chunks of 20 steps with the checks between chunks.
    Book: chapter 8, §Integrating the central flow.

    Args:
        E: scalar loss over any pytree.
        theta0: the start, with :math:`S(\theta_0) \le (2/h)(1 + \text{edge\_rtol})`.
        h: the learning rate of the GD run being modelled.
        steps: number of GD steps of time to integrate (positive int).
        method: ``"rk4"`` or ``"euler"``.
        substeps: steps of size :math:`\delta = 1/\text{substeps}` per GD step (positive int).
        num_iter: Lanczos iterations per substep (warm-started).
        edge_rtol: relative tolerance of the edge for the start check and the second-eigenvalue warning.
        key: PRNG key of the first (cold) Lanczos start.
        progress: show a ``tqdm`` progress bar.

    Returns:
        A :class:`CentralFlowRun` sampled at every step. It warns if a second eigenvalue reaches
        the edge (two unstable directions: the one-direction model no longer applies).

    Raises:
        ValueError: bad ``h``, ``steps``, ``substeps``, ``num_iter``, ``method``; non-finite
            ``theta0``; a start above the edge; the constraint binds while :math:`\nabla S = 0`.
        DivergenceError: the state left the finite numbers (the message names the step).
    """
    steps, substeps, num_iter = _check_run(E, theta0, h, steps, method, substeps, num_iter, edge_rtol)
    theta, state = theta0, init_central_flow(theta0, key)
    h_arr, sub_arr = jnp.asarray(h, ravel_pytree(theta0)[0].dtype), jnp.asarray(substeps)
    records, states = [], []
    with tqdm(total=steps, desc="central flow", disable=not progress, leave=False) as bar:
        for done in range(0, steps, _CHUNK):
            length = min(_CHUNK, steps - done)
            theta, state, recs, sts = _chunk(E, theta, state, h_arr, jnp.asarray(length), _CHUNK, sub_arr,
                                             num_iter, method)
            recs = {k: np.asarray(v)[:length] for k, v in recs.items()}
            sts = jax.tree_util.tree_map(lambda a: a[:length], sts)
            _check_chunk(recs, sts, done, steps, h, edge_rtol)
            records.append(recs)
            states.append(sts)
            bar.update(length)
    last = _final_record(E, theta, state.u, h_arr, sub_arr, num_iter)
    if bool(last["stuck"]):
        raise ValueError(f"run_central_flow: at step {steps} {_STUCK}")
    records.append({k: np.asarray(v)[None] for k, v in last.items()})
    return _assemble(theta0, records, states, h, substeps, method, edge_rtol)


def _check_run(E, theta0, h, steps, method, substeps, num_iter, edge_rtol):
    """The argument checks of :func:`run_central_flow`; returns the checked integers."""
    check_learning_rate(h)
    steps = check_int(steps, "steps")
    substeps = check_int(substeps, "substeps")
    num_iter = check_int(num_iter, "num_iter")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if not 0 <= edge_rtol < 1:
        raise ValueError(f"edge_rtol must be in [0, 1), got {edge_rtol!r}.")
    check_finite(theta0, "theta0")
    check_scalar_loss(E, theta0)
    return steps, substeps, num_iter


def _check_chunk(recs, states, done: int, steps: int, h, edge_rtol) -> None:
    """Raise for a start above the edge, a binding constraint with grad S = 0, or a divergence."""
    edge = 2.0 / h
    if done == 0 and recs["S"][0] > edge * (1 + edge_rtol):
        raise ValueError(
            f"run_central_flow: the start is above the edge of stability, S(theta0) = "
            f"{float(recs['S'][0]):.6g} > 2/h = {edge:.6g} (tolerance edge_rtol = {edge_rtol}). The "
            "central flow starts where GD is stable: start earlier in training, or lower h below "
            "2/S(theta0)."
        )
    flat = np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(states))
    finite = np.all(np.isfinite(flat), axis=1)
    bad = np.flatnonzero(recs["stuck"] | recs["stuck_step"])
    if bad.size and (finite.all() or bad[0] <= np.argmin(finite)):
        raise ValueError(f"run_central_flow: at step {done + int(bad[0])} {_STUCK}")
    if not finite.all():
        raise DivergenceError(
            f"run_central_flow: the state is not finite after step {done + int(np.argmin(finite)) + 1} "
            f"of {steps}; reduce h, or raise substeps."
        )


def _assemble(theta0, records, states, h, substeps, method, edge_rtol) -> CentralFlowRun:
    """The :class:`CentralFlowRun` from the chunks' records; warns if a second eigenvalue reaches 2/h."""
    def col(k):
        return np.concatenate([r[k] for r in records])

    lam1, edge = col("lam1"), 2.0 / h
    if np.any(lam1 >= edge * (1 - edge_rtol)):
        first = int(np.argmax(lam1 >= edge * (1 - edge_rtol)))
        warnings.warn(
            f"run_central_flow: a second Hessian eigenvalue reaches 2/h at step {first}; the one-direction "
            "central flow no longer models GD after that (two directions need the paper's complementarity "
            "problem).", RuntimeWarning, stacklevel=3,
        )
    loss, S, s2 = col("loss"), col("S"), col("sigma2")
    stacked = jax.tree_util.tree_map(lambda first, *rest: jnp.concatenate([first[None], *rest]), theta0, *states)
    return CentralFlowRun(
        params=stacked, loss=loss, sharpness=S, second_eigenvalue=lam1, sigma2=s2,
        predicted_loss=np.asarray(predicted_loss(loss, s2, S)), directions=col("u"),
        residual=col("residual"), grad_S_norm=col("grad_S_norm"), h=float(h), substeps=substeps,
        method=method,
    )


# --------------------------------------------------------------------------- predictions vs GD


def predicted_loss(loss, sigma2, S):
    r"""The central flow's prediction of GD's time-averaged loss, :math:`\bar E = E + \tfrac12\sigma^2 S`.

    GD sits at :math:`\theta + x u_0` with :math:`\mathbb{E}[x] = 0`, :math:`\mathbb{E}[x^2] = \sigma^2`;
    a quadratic model of the loss along :math:`u_0` gives
    :math:`\mathbb{E}[E(\theta + xu_0)] \approx E(\theta) + \tfrac12\sigma^2 u_0^\top Hu_0`. On the edge
    :math:`S = 2/h`, so :math:`\bar E = E + \sigma^2/h`.

    Book: chapter 8, §Holding the sharpness at 2/h (eq. ``eq-central-loss``).
    """
    return np.asarray(loss) + 0.5 * np.asarray(sigma2) * np.asarray(S)


def measured_oscillation(theta_gd: PyTree, theta_flow: PyTree, directions) -> np.ndarray:
    r"""GD's displacement from a flow along the flow's top eigenvector, :math:`x_n = u_0(n)^\top(\theta_n - \theta(n))`.

    To be compared with the central flow's :math:`\pm\sigma`: over a window,
    :math:`\sqrt{\text{mean}(x_n^2)}` against :math:`\sqrt{\text{mean}(\sigma^2)}`.

    Args:
        theta_gd: GD iterates, a pytree with a leading axis of length ``T``
            (:func:`pfcourse.flows.gradient_descent` returns ``steps + 1``).
        theta_flow: the flow at the same steps, same structure and length.
        directions: unit flat eigenvectors, shape ``(T, D)`` (``CentralFlowRun.directions``).

    Returns:
        ``x``, shape ``(T,)``.

    Raises:
        ValueError: when the lengths or shapes do not fit (e.g. 401 GD iterates against a 301-step flow).

    Book: chapter 8, §An MLP at the edge of stability.
    """
    a = np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(theta_gd))
    b = np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(theta_flow))
    U = np.asarray(directions)
    if not (a.shape == b.shape == U.shape):
        raise ValueError(
            "measured_oscillation: the runs do not fit: GD iterates have shape "
            f"{a.shape}, the flow {b.shape}, the directions {U.shape} (steps + 1, D). Run GD and the flow for "
            "the same number of steps, from the same start."
        )
    return np.einsum("nd,nd->n", U, a - b)


def time_average(values, window: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Centred moving average :math:`\bar v_k = \frac1w\sum_{j=0}^{w-1} v_{k+j}` over ``window = w`` steps.

    Returns ``(centres, averages)``: average ``k`` covers steps ``k, ..., k + w - 1`` and is placed at
    step ``k + (w - 1)/2``. Only full windows are returned (no padding).

    Raises:
        ValueError: ``window`` not a positive int, or longer than the series.

    Book: chapter 8, §An MLP at the edge of stability.
    """
    v = np.asarray(values, dtype=float)
    window = check_int(window, "window")
    if v.ndim != 1:
        raise ValueError(f"time_average needs a 1-D series, got shape {v.shape}.")
    if window > v.size:
        raise ValueError(f"time_average: window = {window} steps does not fit a series of {v.size} steps; "
                         "use a shorter window.")
    c = np.concatenate([[0.0], np.cumsum(v)])
    avg = (c[window:] - c[:-window]) / window
    return np.arange(avg.size) + (window - 1) / 2, avg
