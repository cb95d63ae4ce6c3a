r"""The principal flow followed along a whole run of gradient descent on a network.

Chapter 5 measures the flows over *one* step of GD, each from GD's own iterate. Here each flow
starts where GD starts and runs on its own for ``steps`` steps' time, :math:`t = nh`,
:math:`n = 0, \dots,` ``steps``: gradient flow (NGF), implicit gradient regularisation (IGR,
:math:`\dot\theta = -\nabla(E + \tfrac h4\|\nabla E\|^2)`) and the PF with its Krylov field
(:func:`pfcourse.krylov.principal_flow_krylov`, complex state), each by RK4 with ``substeps``
steps per GD step and again with half as many (the difference estimates the integration error).
What is compared, at every :math:`n`: the loss at the flow's (real) state, the distance to GD's
iterate :math:`\|\operatorname{Re}\theta(nh) - \theta_n\|` relative to the distance GD has
travelled :math:`\|\theta_n - \theta_0\|`, and the PF's imaginary part; the sharpness
:math:`\lambda_0` (Lanczos) of GD's iterate and of the PF's real state at a few steps.

Book: appendix A, the PF along a training run (appendix B, §The PF on a real network, compares the
flows over one step).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from pfcourse import flows, krylov, spectral
from pfcourse._checks import check_int, check_learning_rate


class FollowedRun(NamedTuple):
    """What :func:`follow_run` returns; per-step arrays have length ``steps + 1``.

    Attributes:
        loss: ``{"GD", "NGF", "IGR", "PF"}`` (and ``"PF+c"``, see :func:`follow_run`) -> the loss at
            each step (the PF's at its real part).
        distance: ``{"NGF", "IGR", "PF"}`` (and ``"PF+c"``) -> distance to GD's iterate over GD's
            distance travelled (``NaN`` at step 0).
        pf_imag: :math:`\\|\\operatorname{Im}\\theta_{PF}(nh)\\|` over GD's distance travelled.
        rk4_error: ``{"NGF", "IGR", "PF"}`` (and ``"PF+c"``) -> the largest Richardson estimate of the RK4 error
            over the run, relative to GD's distance travelled at that step.
        sharp_steps: the steps where the sharpness was measured.
        h_sharpness: ``{"GD", "PF"}`` -> :math:`h\\lambda_0` there.
        krylov_gap: the PF's field at its last state with ``num_iter`` Krylov steps against
            ``2 num_iter`` steps and no early stop (relative): how much the Krylov settings change the field.
        stop_step: ``{"NGF", "IGR", "PF"}`` -> the last step reached (``steps`` unless the field
            failed; later entries are ``NaN``).
        stop_reason: why each flow stopped there (the field's error message), ``""`` if it did not.
        singular_distance: at each step, :math:`\\min_i |1 - h\\theta_i|` over the Ritz values
            :math:`\\theta_i` (``num_iter`` Lanczos steps) at the PF's state: how close an eigenvalue
            of its complex Hessian is to the field's singular point :math:`h\\lambda = 1`
            (``NaN`` past ``stop_step``).
        nearest_ritz: at each step, the value :math:`h\\theta_i` nearest to 1 (complex).
        states: each flow's (flat) state at each step, complex for the PF, ``NaN`` past ``stop_step``.
        rk4_steps: each flow's Richardson estimate at each step (``rk4_error`` is its largest).
    """

    loss: dict
    distance: dict
    pf_imag: np.ndarray
    rk4_error: dict
    sharp_steps: np.ndarray
    h_sharpness: dict
    krylov_gap: float
    stop_step: dict
    stop_reason: dict
    singular_distance: np.ndarray
    nearest_ritz: np.ndarray
    states: dict
    rk4_steps: dict


def follow_run(E: Callable, theta0, h: float, steps: int, *, substeps: int = 8, num_iter: int = 60,
               tol: float | None = 1e-5, sharp_every: int = 10, corrected: bool = False) -> FollowedRun:
    r"""GD, gradient flow, IGR and the Krylov PF, all from ``theta0``, compared over ``steps`` GD steps:

    .. math:: \theta_{n+1} = \theta_n - h\nabla E(\theta_n) \quad\text{against}\quad \theta(nh),
              \qquad \dot\theta = f(\theta), \ \theta(0) = \theta_0,

    for each flow's field :math:`f` (the PF's :math:`\tfrac1h\log(I - hH)H^{-1}\nabla E`).

    ``E`` is the loss of a pytree, analytic (the PF's state is complex); ``num_iter`` and ``tol`` the
    largest Krylov dimension of the PF's field and its error estimate's target
    (:func:`pfcourse.krylov.principal_flow_krylov`); ``substeps`` the RK4 steps per GD step, even. A flow whose
    field fails (the PF's near :math:`h\lambda_i = 1`) stops there: ``stop_step``, ``stop_reason``.
    ``corrected`` adds ``"PF+c"``, the PF plus the first non-principal term of backward error analysis,
    :math:`-\tfrac{h^2}{12}\nabla^3E[\nabla E, \nabla E]` (:func:`pfcourse.flows.pf_corrected_flow`,
    here on the Krylov PF; it costs about as much as the PF).
    Book: appendix A, §Twenty steps from five starts and §The first correction.
    """
    check_learning_rate(h)
    check_int(steps, "steps")
    check_int(sharp_every, "sharp_every")
    check_int(substeps, "substeps", minimum=2, hint="It is the number of RK4 steps per GD step.")
    if substeps % 2:
        raise ValueError(f"substeps must be even (the RK4 error is estimated from substeps // 2), got {substeps}.")
    x0 = ravel_pytree(theta0)[0]
    E_flat, fields, top, ritz_values = _problem(E, theta0, h, num_iter, tol)
    gd = np.asarray(flows.gradient_descent(E_flat, x0, h, steps))
    if corrected:
        fields = {**fields, "PF+c": flows.PFCorrectedFlow(fields["PF"])}
    fields = {name: (field, x0.astype(complex) if name.startswith("PF") else x0) for name, field in fields.items()}
    travelled = np.linalg.norm(gd - gd[0], axis=1)
    scale = np.where(travelled > 0, travelled, np.nan)
    loss = {"GD": np.asarray(jax.vmap(E_flat)(gd))}
    distance, rk4_error, rk4_steps, states, stops = {}, {}, {}, {}, {}
    for name, (field, start) in fields.items():
        fine, stops[name] = _follow(field, start, h, steps, substeps)
        coarse, _ = _follow(field, start, h, len(fine) - 1, substeps // 2)
        states[name] = fine = _pad(fine, steps + 1)
        loss[name] = np.asarray(jax.vmap(E_flat)(jnp.asarray(fine.real)))
        distance[name] = np.linalg.norm(fine.real - gd, axis=1) / scale
        gap = np.linalg.norm(fine - _pad(coarse, steps + 1), axis=1) / 15 / scale
        rk4_error[name] = float(np.nanmax(gap)) if np.isfinite(gap).any() else math.nan
        rk4_steps[name] = gap
    sharp_steps = np.arange(0, steps + 1, sharp_every)
    pf_real = np.nan_to_num(states["PF"][sharp_steps].real)
    h_sharp = {"GD": h * np.asarray(top(jnp.asarray(gd[sharp_steps]))),
               "PF": np.where(sharp_steps <= stops["PF"][0], h * np.asarray(top(jnp.asarray(pf_real))), np.nan)}
    pf_imag = np.linalg.norm(states["PF"].imag, axis=1) / scale
    last = stops["PF"][0]
    ritz = np.full(steps + 1, np.nan, complex)
    for n in range(last + 1):
        ritz[n] = _nearest_to_one(ritz_values, jnp.asarray(states["PF"][n]))
    gap = _krylov_gap(E_flat, h, jnp.asarray(states["PF"][last]), num_iter)
    return FollowedRun(loss, distance, pf_imag, rk4_error, sharp_steps, h_sharp, gap,
                       {k: v[0] for k, v in stops.items()}, {k: v[1] for k, v in stops.items()},
                       np.abs(1 - ritz), ritz, states, rk4_steps)


_PROBLEMS: dict = {}


def _problem(E: Callable, theta0, h: float, num_iter: int, tol: float | None) -> tuple:
    """``(E_flat, fields, top, ritz_values)`` for :func:`follow_run`: the loss of the flat parameters,
    the three flows' fields, the jitted sharpness and Ritz values. Kept for the last ``E`` (by
    identity: it need not be hashable), parameter structure and setting, so that runs from other
    starts reuse the same objects and their compilations (appendix A's five starts: one)."""
    flat = ravel_pytree(theta0)
    key = (id(E), jax.tree_util.tree_structure(theta0), flat[0].shape, str(flat[0].dtype), h, num_iter, tol)
    if key not in _PROBLEMS:
        unravel = flat[1]
        E_flat = lambda x: E(unravel(x))  # noqa: E731
        fields = {"NGF": flows.gradient_flow(E_flat), "IGR": flows.igr_flow(E_flat, h),
                  "PF": krylov.principal_flow_krylov(E_flat, h, num_iter=num_iter, tol=tol)}
        top = jax.jit(jax.vmap(lambda x: spectral.top_hessian_eigenpairs(E_flat, x, k=1,
                                                                         num_iter=min(40, x.size))[0][0]))
        ritz_values = eqx.filter_jit(lambda x: _ritz_values(E_flat, h, x, num_iter))   # its errors stay Equinox's
        _PROBLEMS.clear()                   # one problem at a time: no memory kept for old ones
        _PROBLEMS[key] = E, (E_flat, fields, top, ritz_values)     # E kept: its id stays its own
    return _PROBLEMS[key][1]


def _ritz_values(E_flat: Callable, h: float, x: jax.Array, num_iter: int) -> jax.Array:
    """:math:`h\\theta_i` for the Ritz values :math:`\\theta_i` of ``num_iter`` Lanczos steps on the
    Hessian at ``x`` and the gradient there (the Krylov space of the PF's field)."""
    _, info = krylov.hessian_function_times(E_flat, x, jax.grad(E_flat, holomorphic=True)(x),
                                            lambda lam: flows.pf_coefficient(h * lam),
                                            min(num_iter, x.size), tol=None, return_info=True)
    return h * info.ritz_values


def _nearest_to_one(ritz_values: Callable, x: jax.Array) -> complex:
    """Of ``ritz_values(x)``, the value nearest to 1; ``NaN`` where the recurrence fails."""
    try:
        scaled = np.asarray(ritz_values(x))
    except eqx.EquinoxRuntimeError:
        return complex(math.nan)
    return complex(scaled[np.argmin(np.abs(1 - scaled))])


def _krylov_gap(E_flat: Callable, h: float, x: jax.Array, num_iter: int) -> float:
    """The PF's field at ``x`` with ``num_iter`` Krylov steps against ``2 num_iter`` (relative);
    ``NaN`` where the recurrence fails there."""
    try:
        f = [eqx.filter_jit(krylov.principal_flow_krylov(E_flat, h, num_iter=min(k, x.size), tol=None))(x)
             for k in (num_iter, 2 * num_iter)]
    except eqx.EquinoxRuntimeError:
        return math.nan
    return float(jnp.linalg.norm(f[0] - f[1]) / jnp.linalg.norm(f[1]))


def _follow(field, start, h: float, steps: int, substeps: int) -> tuple[np.ndarray, tuple[int, str]]:
    """The flow at ``t = nh`` by RK4, one GD step's time per call (one compilation for all), until
    ``steps`` or the first step the field cannot be evaluated (an error of the field or a divergence):
    ``(states (n + 1, D), (n, why it stopped or ""))``."""
    states = [np.asarray(start)]
    for n in range(steps):
        try:
            nxt = flows.integrate(field, jnp.asarray(states[-1]), h * jnp.array([n, n + 1.0]), method="rk4",
                                  substeps=substeps)[-1]
        except (eqx.EquinoxRuntimeError, flows.DivergenceError) as err:
            lines = [line.strip() for line in str(err).splitlines()]
            why = next((line for line in lines if line.startswith(_REASONS)), type(err).__name__)
            return np.array(states), (n, why)
        states.append(np.asarray(nxt))
    return np.array(states), (steps, "")


_REASONS = ("principal_flow", "complex symmetric Lanczos", "integrate", "the flow", "the state")


def _pad(states: np.ndarray, length: int) -> np.ndarray:
    """``states`` with ``NaN`` rows appended up to ``length``."""
    fill = np.full((length - len(states),) + states.shape[1:], np.nan, states.dtype)
    return np.concatenate([states, fill])


def departure_step(run: FollowedRun, flow: str = "PF") -> int | None:
    """The first step :math:`n \\ge 1` at which ``flow`` (the PF, or ``"PF+c"``) is farther from GD's
    iterate than gradient flow is (or has stopped): where it stops being the better model of the run.
    ``None`` if it never does. Book: appendix A, §Where it stops tracking."""
    pf, ngf = run.distance[flow][1:], run.distance["NGF"][1:]
    worse = ~(pf <= ngf)                   # NaN (the PF stopped) counts as worse
    return int(np.argmax(worse)) + 1 if worse.any() else None


def closest_approach(run: FollowedRun) -> float:
    """:math:`\\min_n |1 - h\\theta(n)|` over the steps before the PF's departure
    (:func:`departure_step`; all steps if it never leaves): how near an eigenvalue of the Hessian
    along its path came to the field's branch point :math:`h\\lambda = 1`. Book: as above."""
    stop = departure_step(run)
    return float(np.nanmin(run.singular_distance[:stop]))
