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
:func:`run_central_flow`       projected Euler integration with a warm-started eigensolver           chapter 8
:func:`predicted_loss`         time-averaged loss :math:`E + \tfrac12\sigma^2 S`                     chapter 8
:func:`measured_oscillation`   :math:`x_n = u_0^\top(\theta_n^{GD} - \theta^{CF}(n))`               chapter 8
:func:`time_average`           moving average of a series over a window of steps                    chapter 8
=============================  ===================================================================  =========

Only **one** unstable direction is modelled. With several eigenvalues at :math:`2/h` the paper
solves a small semidefinite complementarity problem for the oscillation covariance; no solver for
it ships with pfcourse's dependencies, so :func:`run_central_flow` reports (``second_eigenvalue``)
when a second eigenvalue reaches the edge and warns, rather than silently pretending.

Losses may take any pytree; eigenvectors are flat vectors (``ravel_pytree`` order).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from tqdm.auto import tqdm

from . import spectral
from .flows import DivergenceError, check_finite, check_learning_rate

PyTree = Any
Loss = Callable[[PyTree], jax.Array]

__all__ = [
    "CentralFlowRun",
    "central_flow",
    "measured_oscillation",
    "predicted_loss",
    "run_central_flow",
    "sharpness_gradient",
    "sigma_squared",
    "stable_flow",
    "time_average",
]


# --------------------------------------------------------------------------- checks


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


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
        EquinoxRuntimeError (also under ``jit``): on the edge with :math:`\|\nabla S\| = 0` and a
        gradient that sharpens — then no :math:`\sigma^2` can hold :math:`S` (e.g. a quadratic with
        :math:`h\lambda_0 \ge 2`, where GD diverges).

    Book: chapter 8, §Deriving sigma squared (eq. ``eq-central-sigma``).
    """
    check_learning_rate(h)
    dot = _tree_dot(grad_S, grad_E)
    nrm2 = _tree_dot(grad_S, grad_S)
    on_edge = S >= (2.0 / h) * (1.0 - edge_rtol)
    needed = on_edge & (dot < 0)
    sig2 = jnp.where(needed, -2.0 * dot / jnp.where(nrm2 > 0, nrm2, 1.0), 0.0)
    return eqx.error_if(
        sig2, needed & (nrm2 == 0),
        "sigma_squared: the sharpness is at 2/h and gradient flow would raise it, but grad S = 0, so "
        "no oscillation can hold it there (on a quadratic the Hessian is constant and GD with "
        "h*lambda_0 >= 2 diverges). Lower h, or use a loss whose curvature depends on theta.",
    )


# --------------------------------------------------------------------------- the two fields


def stable_flow(E: Loss, h: float) -> Callable[[PyTree], PyTree]:
    r"""The stable flow, gradient flow with time in GD steps: :math:`\dot\theta = -h\nabla E(\theta)`.

    It models GD while :math:`S < 2/h` (Cohen et al., 2025). Integrate it with
    :func:`pfcourse.flows.integrate` at ``ts = range(steps + 1)``; it is
    :func:`pfcourse.flows.gradient_flow` with time rescaled by ``h``.

    Book: chapter 8, §Two flows (eq. ``eq-stable-flow``).
    """
    check_learning_rate(h)
    grad = jax.grad(E)

    def field(theta):
        return jax.tree_util.tree_map(lambda g: -h * g, grad(theta))

    return field


def _top_eigenpairs(E, params, v0, num_iter):
    D = ravel_pytree(params)[0].size
    k = min(2, D)
    vals, vecs = spectral.top_hessian_eigenpairs(E, params, k=k, num_iter=max(k, min(num_iter, D)), v0=v0)
    lam1 = vals[1] if k == 2 else -jnp.inf
    return vals[0], lam1, vecs[:, 0]


def central_flow(E: Loss, h: float, *, num_iter: int = 20, edge_rtol: float = 1e-3, key=None):
    r"""The central flow for one unstable direction, as a field (time in GD steps).

    .. math:: \dot\theta = -h\Big[\nabla E + \tfrac12\sigma^2(\theta)\,\nabla S\Big],

    with :math:`\sigma^2` from :func:`sigma_squared` (zero below the edge, where this is the stable
    flow). On the edge the field is :math:`-h` times :math:`\nabla E` with its component along
    :math:`\nabla S` removed, so :math:`dS/dt = 0`. Each evaluation finds :math:`(S, u_0)` afresh by
    Lanczos (``num_iter`` Hessian-vector products from a random start); :func:`run_central_flow`
    integrates the same field with warm starts and keeps :math:`S \le 2/h`, and is what to use for
    a trajectory. This field is for evaluating and testing the model at a point.

    Book: chapter 8, §Two flows (eq. ``eq-central-flow``).
    """
    check_learning_rate(h)
    _check_positive_int(num_iter, "num_iter")
    key = jax.random.key(0) if key is None else key

    def field(theta):
        flat = ravel_pytree(theta)[0]
        v0 = jax.random.normal(key, flat.shape, flat.dtype)
        S, _, u = _top_eigenpairs(E, theta, v0, num_iter)
        g = jax.grad(E)(theta)
        dS = sharpness_gradient(E, theta, u)
        s2 = sigma_squared(g, dS, S, h, edge_rtol=edge_rtol)
        return jax.tree_util.tree_map(lambda a, b: -h * (a + 0.5 * s2 * b), g, dS)

    return field


# --------------------------------------------------------------------------- integration


class CentralFlowRun(NamedTuple):
    """A central-flow trajectory, sampled at every GD step ``n = 0, ..., steps`` (time in steps).

    Attributes:
        params: the states :math:`\\theta(n)`, a pytree with a leading axis of length ``steps + 1``.
        loss: :math:`E(\\theta(n))`.
        sharpness: :math:`S(\\theta(n))`.
        second_eigenvalue: :math:`\\lambda_1(\\theta(n))` (``-inf`` for one parameter).
        sigma2: :math:`\\sigma^2(\\theta(n))` by :func:`sigma_squared` (``edge_rtol`` of the run).
        predicted_loss: :math:`E + \\tfrac12\\sigma^2 S`, the predicted time average of GD's loss.
        directions: unit :math:`u_0(\\theta(n))`, flat, shape ``(steps + 1, D)``, signs kept continuous.
        residual: :math:`\\|Hu_0 - Su_0\\|`, the eigensolver's accuracy at each step.
        grad_S_norm: :math:`\\|\\nabla S\\|`.
        h: the learning rate; ``substeps``: Euler substeps per GD step.
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


@eqx.filter_jit
def _diagnostics(E, theta, v0, h, num_iter, edge_rtol):
    S, lam1, u = _top_eigenpairs(E, theta, v0, num_iter)
    u = u * jnp.where(jnp.vdot(u, v0) < 0, -1.0, 1.0)  # keep the sign continuous along the run
    loss, g = jax.value_and_grad(E)(theta)
    dS = sharpness_gradient(E, theta, u)
    dot, nrm2 = _tree_dot(dS, g), _tree_dot(dS, dS)
    needed = (S >= (2.0 / h) * (1.0 - edge_rtol)) & (dot < 0)
    s2 = jnp.where(needed, -2.0 * dot / jnp.where(nrm2 > 0, nrm2, 1.0), 0.0)
    Hu = spectral.hvp(E, theta, _as_tree(theta, u))
    res = jnp.linalg.norm(ravel_pytree(Hu)[0] - S * u)
    return dict(loss=loss, S=S, lam1=lam1, u=u, sigma2=s2, residual=res, grad_S_norm=jnp.sqrt(nrm2),
                stuck=needed & (nrm2 == 0))


@eqx.filter_jit
def _one_step(E, theta, u, h, substeps: int, num_iter: int):
    dt = 1.0 / substeps
    target = 2.0 / h

    def substep(carry, _):
        theta, u = carry
        S, _, u_new = _top_eigenpairs(E, theta, u, num_iter)
        u_new = u_new * jnp.where(jnp.vdot(u_new, u) < 0, -1.0, 1.0)
        g = jax.grad(E)(theta)
        dS = sharpness_gradient(E, theta, u_new)
        dot, nrm2 = _tree_dot(dS, g), _tree_dot(dS, dS)
        # Projected Euler: the smallest sigma^2 >= 0 for which the linearised sharpness after the
        # substep, S - dt*h*(<dS, g> + sigma^2/2 |dS|^2), is at most 2/h.
        need = 2.0 * ((S - target) / (dt * h) - dot)
        s2 = jnp.where(need > 0, need / jnp.where(nrm2 > 0, nrm2, 1.0), 0.0)
        stuck = (need > 0) & (nrm2 == 0)
        theta = jax.tree_util.tree_map(lambda p, a, b: p - dt * h * (a + 0.5 * s2 * b), theta, g, dS)
        return (theta, u_new), stuck

    (theta, u), stuck = jax.lax.scan(substep, (theta, u), None, length=substeps)
    return theta, u, jnp.any(stuck)


def run_central_flow(
    E: Loss,
    theta0: PyTree,
    h: float,
    steps: int,
    *,
    substeps: int = 4,
    num_iter: int = 20,
    edge_rtol: float = 1e-3,
    key=None,
    progress: bool = True,
) -> CentralFlowRun:
    r"""Integrate the central flow (one unstable direction) for ``steps`` GD steps of time.

    The flow :math:`\dot\theta = -h[\nabla E + \tfrac12\sigma^2\nabla S]` is a gradient flow
    constrained to :math:`S \le 2/h`; :math:`\sigma^2` switches on where the constraint binds. We step
    it with **projected Euler**, ``substeps`` steps of :math:`\delta = 1/\text{substeps}` per GD step:

    .. math:: \theta \leftarrow \theta - \delta h\big[\nabla E + \tfrac12 s\,\nabla S\big],\qquad
              s = \max\!\Big(0,\ \frac{2(S - 2/h)}{\delta h\|\nabla S\|^2}
                  - \frac{2\langle\nabla S,\nabla E\rangle}{\|\nabla S\|^2}\Big),

    the smallest :math:`s \ge 0` for which the linearised sharpness after the substep is at most
    :math:`2/h`. On the edge (:math:`S = 2/h`) this is :math:`\sigma^2` of :func:`sigma_squared`;
    a small overshoot :math:`S > 2/h` left by the curvature of :math:`S` is pulled back in the next
    substep (no drift accumulates); a step that would cross :math:`2/h` lands on it (no event
    location needed); and when gradient flow turns to lower :math:`S`, :math:`s = 0` and the flow
    leaves the edge by itself. :math:`(S, u_0)` come from Lanczos (:func:`pfcourse.spectral.
    top_hessian_eigenpairs`, ``num_iter`` Hessian-vector products) warm-started at the previous
    :math:`u_0`, and :math:`\nabla S` from :func:`sharpness_gradient`. In plain Python::

        u = random vector
        for n in range(steps):
            for _ in range(substeps):
                S, u = lanczos(H(theta), start=u)
                g, dS = grad E(theta), grad S(theta; u)
                s = max(0, 2 * ((S - 2/h) / (dt*h) - dS @ g) / (dS @ dS))
                theta = theta - dt * h * (g + s/2 * dS)

    Why not :func:`pfcourse.flows.integrate`: its fields are pure functions of the state, so the
    eigensolver could not be warm-started (a cold Lanczos at each of dopri8's 13 stages), an
    adaptive Runge–Kutta method gains no order across the switch at :math:`S = 2/h` (the field is
    only Lipschitz there) nor at eigenvalue crossings (:math:`\nabla S` jumps), and the inequality
    constraint would drift. Projected Euler is first order: halving :math:`\delta` halves the
    discretisation error (tested); the stable phase alone can be integrated accurately with
    :func:`stable_flow` and :func:`pfcourse.flows.integrate` to measure that error.

    Book: chapter 8, §Integrating the central flow.

    Args:
        E: scalar loss over any pytree.
        theta0: the start, with :math:`S(\theta_0) \le (2/h)(1 + \text{edge\_rtol})`.
        h: the learning rate of the GD run being modelled.
        steps: number of GD steps of time to integrate (positive int).
        substeps: Euler substeps per GD step (positive int; 4 keeps :math:`\delta h\lambda_0 \le 1/2`).
        num_iter: Lanczos iterations per substep.
        edge_rtol: relative tolerance of the edge for the start check and the recorded ``sigma2``.
        key: PRNG key of the first (cold) Lanczos start.
        progress: show a ``tqdm`` progress bar.

    Returns:
        A :class:`CentralFlowRun` sampled at every step; it warns if a second eigenvalue reaches
        the edge (two unstable directions: the one-direction model no longer applies).

    Raises:
        ValueError: bad ``h``, ``steps``, ``substeps``, ``num_iter``; non-finite ``theta0``; a start
            above the edge; the constraint binds while :math:`\nabla S = 0`.
        DivergenceError: the state left the finite numbers (the message names the step).
    """
    check_learning_rate(h)
    steps = _check_positive_int(steps, "steps")
    substeps = _check_positive_int(substeps, "substeps")
    num_iter = _check_positive_int(num_iter, "num_iter")
    if not 0 <= edge_rtol < 1:
        raise ValueError(f"edge_rtol must be in [0, 1), got {edge_rtol!r}.")
    check_finite(theta0, "theta0")
    out = jax.eval_shape(E, theta0)
    if getattr(out, "shape", None) != ():
        raise ValueError(f"the loss E must return a scalar, but E(theta0) has shape {out.shape}.")
    flat0 = ravel_pytree(theta0)[0]
    key = jax.random.key(0) if key is None else key
    u = jax.random.normal(key, flat0.shape, flat0.dtype)
    theta = theta0
    records, states = [], [theta0]
    edge = 2.0 / h
    for n in tqdm(range(steps + 1), desc="central flow", disable=not progress, leave=False):
        rec = _diagnostics(E, theta, u, h, num_iter, edge_rtol)
        rec = {k: np.asarray(v) for k, v in rec.items()}
        if n == 0 and rec["S"] > edge * (1 + edge_rtol):
            raise ValueError(
                f"run_central_flow: the start is above the edge of stability, S(theta0) = {float(rec['S']):.6g} "
                f"> 2/h = {edge:.6g} (tolerance edge_rtol = {edge_rtol}). The central flow starts where GD is "
                "stable: start earlier in training, or lower h below 2/S(theta0)."
            )
        if bool(rec["stuck"]):
            raise ValueError(
                f"run_central_flow: at step {n} the sharpness is at 2/h but grad S = 0, so no oscillation can "
                "hold it there (e.g. a quadratic: constant Hessian). Lower h, or use a loss whose curvature "
                "depends on theta."
            )
        records.append(rec)
        u = jnp.asarray(rec["u"])
        if n == steps:
            break
        theta, u, stuck = _one_step(E, theta, u, h, substeps, num_iter)
        if bool(stuck):
            raise ValueError(
                f"run_central_flow: during step {n} the constraint S <= 2/h binds but grad S = 0; the central "
                "flow is undefined there. Lower h, or use a loss whose curvature depends on theta."
            )
        if not np.all(np.isfinite(np.asarray(ravel_pytree(theta)[0]))):
            raise DivergenceError(
                f"run_central_flow: the state is not finite after step {n + 1} of {steps}; reduce h, or raise "
                "substeps (each substep must keep delta*h*lambda_max < 2)."
            )
        states.append(theta)

    def col(k):
        return np.stack([r[k] for r in records])

    lam1 = col("lam1")
    if np.any(lam1 >= edge * (1 - edge_rtol)):
        first = int(np.argmax(lam1 >= edge * (1 - edge_rtol)))
        warnings.warn(
            f"run_central_flow: a second Hessian eigenvalue reaches 2/h at step {first}; the one-direction "
            "central flow no longer models GD after that (two directions need the paper's complementarity "
            "problem).", RuntimeWarning, stacklevel=2,
        )
    loss, S, s2 = col("loss"), col("S"), col("sigma2")
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)
    return CentralFlowRun(
        params=stacked, loss=loss, sharpness=S, second_eigenvalue=lam1, sigma2=s2,
        predicted_loss=np.asarray(predicted_loss(loss, s2, S)), directions=col("u"),
        residual=col("residual"), grad_S_norm=col("grad_S_norm"), h=float(h), substeps=substeps,
    )


# --------------------------------------------------------------------------- predictions vs GD


def predicted_loss(loss, sigma2, S):
    r"""The central flow's prediction of GD's time-averaged loss, :math:`\bar E = E + \tfrac12\sigma^2 S`.

    GD sits at :math:`\theta + x u_0` with :math:`\mathbb{E}[x] = 0`, :math:`\mathbb{E}[x^2] = \sigma^2`;
    a quadratic model of the loss along :math:`u_0` gives
    :math:`\mathbb{E}[E(\theta + xu_0)] \approx E(\theta) + \tfrac12\sigma^2 u_0^\top Hu_0`. On the edge
    :math:`S = 2/h`, so :math:`\bar E = E + \sigma^2/h`.

    Book: chapter 8, §What the central flow predicts (eq. ``eq-central-loss``).
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

    Book: chapter 8, §What the central flow predicts.
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

    Book: chapter 8, §What the central flow predicts.
    """
    v = np.asarray(values, dtype=float)
    window = _check_positive_int(window, "window")
    if v.ndim != 1:
        raise ValueError(f"time_average needs a 1-D series, got shape {v.shape}.")
    if window > v.size:
        raise ValueError(f"time_average: window = {window} steps does not fit a series of {v.size} steps; "
                         "use a shorter window.")
    c = np.concatenate([[0.0], np.cumsum(v)])
    avg = (c[window:] - c[:-window]) / window
    return np.arange(avg.size) + (window - 1) / 2, avg
