r"""The principal flow through the edge of stability, beside gradient descent and the central flow.

On the two-parameter toys :math:`E(x, y) = (4 - y)\,\varphi(x) + 0.02\,y`, with
:math:`\varphi(x) = \tfrac12 x^2` (:func:`quadratic_toy_loss`, no singularity anywhere) or
:math:`\varphi(x) = \log\cosh x` (:func:`edge_toy_loss`, the chapter's saturating toy), and in detail
for the second,

.. math:: E(x, y) = (4 - y)\log\cosh x + 0.02\,y, \qquad \lambda(y) = \partial_x^2 E(0, y) = 4 - y,

gradient descent at :math:`h = 0.5` from :math:`(0.05, 0.1)` slides down the slope in :math:`y`
towards the sharp side, reaches :math:`h\lambda(y) = 2` within about ten steps and then *holds* it:
its oscillation :math:`x_n` pushes :math:`y` back up by exactly :math:`h\sum_k \log\cosh x_k`
(self-stabilisation). The central flow (:mod:`pfcourse.central_flow`) models that time average:
it keeps :math:`S = 2/h` with :math:`\sigma^2 = 0.04` (on the valley, :math:`\nabla S = (0, -1)` and
:math:`\nabla E = (0, 0.02)`). The principal flow (:func:`pfcourse.flows.principal_flow`, complex state,
appendix B's ``"side"`` branch policy) has no such mechanism: its oscillation is complex, the push
:math:`\tfrac12 z^2\nabla S` averages out, and its :math:`\mathrm{Re}\,h\lambda(y)` keeps growing.

In outline (pseudocode)::

    gd = gradient_descent(E, theta0, h, steps)
    pf = integrate(principal_flow(E, h), complex(theta0), h * arange(steps + 1), rk4, substeps)
    cf = run_central_flow(E, theta0, h, steps)
    h * (4 - y) for each of them (real part for the PF)

The PF is also integrated in arbitrary precision (:func:`pf_mp`, mpmath), to tell what the flow does
from what float64 and the step let it do: on the log-cosh toy the PF's :math:`x` runs into
:math:`i\pi/2`, a zero of :math:`\cosh` and a singularity of the continued loss, and from there on its
values are set by the precision and the step, not by the flow.

==============================  ============================================================  =========
function                        computes                                                      book
==============================  ============================================================  =========
:func:`edge_toy_loss`           :math:`E(x, y)` with log cosh (analytic: takes complex states)  chapter 8
:func:`quadratic_toy_loss`      :math:`E(x, y)` with :math:`x^2/2`: an entire function          chapter 8
:func:`pf_mp`                   the PF on either toy in mpmath, at a chosen precision         chapter 8
:func:`pf_through_the_edge`     GD, the PF and the central flow on the toy, step by step      chapter 8
:func:`edge_summary`            the figures the chapter quotes, from one run                  chapter 8
==============================  ============================================================  =========

Book: chapter 8, §The PF through the edge.
"""
from __future__ import annotations

from typing import NamedTuple

from typing import Callable

import jax.numpy as jnp
import mpmath
import numpy as np
from tqdm.auto import tqdm

from pfcourse import central_flow, flows

__all__ = ["EdgeToyRun", "PreciseRun", "edge_summary", "edge_toy_loss", "pf_float64", "pf_mp",
           "pf_through_the_edge", "quadratic_toy_loss"]

SLOPE = 0.02
TOP = 4.0


def edge_toy_loss(theta: jnp.ndarray) -> jnp.ndarray:
    r""":math:`E(x, y) = (4 - y)\log\cosh x + 0.02y` for ``theta = (x, y)``, real or complex.

    Its curvature across the valley is :math:`\lambda(y) = 4 - y` at :math:`x = 0`, falling off as
    :math:`\mathrm{sech}^2 x` away from it. Book: chapter 8, §A toy with a closed form and §The PF
    through the edge.
    """
    return (TOP - theta[1]) * jnp.log(jnp.cosh(theta[0])) + SLOPE * theta[1]


def quadratic_toy_loss(theta: jnp.ndarray) -> jnp.ndarray:
    r""":math:`E(x, y) = \tfrac12(4 - y)x^2 + 0.02y` for ``theta = (x, y)``, real or complex.

    The same valley and the same central flow as :func:`edge_toy_loss` (curvature :math:`4 - y` on
    :math:`x = 0`, :math:`\nabla S = (0, -1)`, :math:`\sigma^2 = 0.04`), but a polynomial: its
    continuation to complex states has no singularity. Book: chapter 8, §The PF through the edge.
    """
    return 0.5 * (TOP - theta[1]) * theta[0] ** 2 + SLOPE * theta[1]


class EdgeToyRun(NamedTuple):
    r"""GD, the PF and the central flow on :func:`edge_toy_loss`, sampled at steps ``0..steps``.

    Attributes:
        h: the learning rate.
        gd: GD's iterates :math:`(x_n, y_n)`, ``(steps + 1, 2)``, real.
        pf: the PF at :math:`t = nh`, ``(pf_steps + 1, 2)``, complex.
        central: the central flow's :class:`pfcourse.central_flow.CentralFlowRun`.
        gd_h_lambda, pf_h_lambda, central_h_lambda: :math:`h\lambda(y) = h(4 - y)` along each
            (the PF's from :math:`\mathrm{Re}\,y`), ``(steps + 1,)`` (the PF's ``(pf_steps + 1,)``).
        central_sigma: the central flow's predicted oscillation :math:`\sigma`, ``(steps + 1,)``.
    """

    h: float
    gd: np.ndarray
    pf: np.ndarray
    central: central_flow.CentralFlowRun
    gd_h_lambda: np.ndarray
    pf_h_lambda: np.ndarray
    central_h_lambda: np.ndarray
    central_sigma: np.ndarray


def pf_through_the_edge(h: float = 0.5, theta0=(0.05, 0.1), steps: int = 120, *, substeps: int = 40,
                        loss: Callable = edge_toy_loss, pf_steps: int | None = None) -> EdgeToyRun:
    r"""Run GD, integrate the PF and the central flow on ``loss`` (a toy of this module) for ``steps`` steps.

    GD: :math:`\theta_{n+1} = \theta_n - h\nabla E(\theta_n)`. PF: :math:`\dot\theta =
    \tfrac1h\log(I - hH)H^{-1}\nabla E` from the complex start ``theta0 + 0i`` (RK4, ``substeps`` per
    step, ``"side"`` branch). Central flow: :math:`\dot\theta = -h[\nabla E + \tfrac12\sigma^2\nabla S]`
    with time in steps (RK4, 2 substeps). All in float64 when x64 is enabled (call
    ``jax.config.update("jax_enable_x64", True)`` first: the chapter's figures are float64).

    Args:
        h: the learning rate, ``> 0``.
        theta0: the start :math:`(x_0, y_0)`, below the edge (:math:`h(4 - y_0)\,\mathrm{sech}^2 x_0 \le 2`).
        steps: the number of GD steps (and of step-times of the flows).
        substeps: RK4 steps per GD step of the PF.
        loss: :func:`edge_toy_loss` (default) or :func:`quadratic_toy_loss`.
        pf_steps: integrate the PF for this many steps only (default ``steps``): on the quadratic toy
            it leaves for infinity in the complex plane soon after the edge, and float64 overflows.

    Returns:
        an :class:`EdgeToyRun`.

    Book: chapter 8, §The PF through the edge.
    """
    pf_steps = steps if pf_steps is None else pf_steps
    if not 0 < pf_steps <= steps:
        raise ValueError(f"pf_steps must be in 1..steps = {steps}, got {pf_steps}")
    th0 = jnp.asarray(theta0, dtype=float)
    gd = np.asarray(flows.gradient_descent(loss, th0, h, steps))
    pf = pf_float64(h, theta0, pf_steps, substeps=substeps, loss=loss)
    cf = central_flow.run_central_flow(loss, th0, h, steps, progress=False)
    return EdgeToyRun(h, gd, pf, cf, h * (TOP - gd[:, 1]), h * (TOP - pf[:, 1].real),
                      h * np.asarray(cf.sharpness), np.sqrt(np.asarray(cf.sigma2)))


def pf_float64(h: float = 0.5, theta0=(0.05, 0.1), steps: int = 56, *, substeps: int = 40,
               loss: Callable = edge_toy_loss) -> np.ndarray:
    r"""The PF on ``loss`` from the complex start ``theta0 + 0i``, at :math:`t = nh`, ``n = 0..steps``:
    RK4 with ``substeps`` per step, ``"side"`` branch, in the precision JAX runs in (float64 with x64).

    Returns a complex array ``(steps + 1, 2)``. Book: chapter 8, §The PF through the edge.
    """
    start = jnp.asarray(theta0, dtype=float).astype(complex)
    return np.asarray(flows.integrate(flows.principal_flow(loss, h), start, h * np.arange(steps + 1),
                                      method="rk4", substeps=substeps))


def edge_summary(run: EdgeToyRun, window: tuple[int, int] = (60, 120)) -> dict:
    r"""The figures chapter 8 quotes, over the steps ``window[0]..window[1]`` (inclusive).

    Returns a dict: ``gd_h_lambda_range`` (min, max of GD's :math:`h\lambda(y_n)`), ``gd_rms_x``
    (:math:`\sqrt{\mathrm{mean}\,x_n^2}`), ``central_h_s_range`` (min, max of the central flow's
    :math:`hS`) and ``central_sigma`` (its :math:`\sigma` at the last step).
    """
    a, b = window
    sl = slice(a, b + 1)
    gd_hl = run.gd_h_lambda[sl]
    return dict(gd_h_lambda_range=(float(gd_hl.min()), float(gd_hl.max())),
                gd_rms_x=float(np.sqrt(np.mean(run.gd[sl, 0] ** 2))),
                central_h_s_range=(float(run.central_h_lambda[sl].min()), float(run.central_h_lambda[sl].max())),
                central_sigma=float(run.central_sigma[b]))


# ------------------------------------------------------------------ the PF in arbitrary precision

#: :math:`(\varphi, \varphi', \varphi'')` of each toy's profile, in mpmath
PROFILES = {
    "logcosh": lambda x: (mpmath.log(mpmath.cosh(x)), mpmath.tanh(x), mpmath.sech(x) ** 2),
    "square": lambda x: (x * x / 2, x, mpmath.mpf(1)),
}


def _alpha_mp(z):
    r""":math:`\alpha(z) = \log(1 - z)/z` on the ``"side"`` branch (:func:`pfcourse.flows.log_one_minus`),
    its series :math:`-1 - z/2 - z^2/3 - z^3/4` below :math:`10^{-d/3}` for ``d`` working digits."""
    if abs(z) < mpmath.mpf(10) ** (-(mpmath.mp.dps // 3)):
        return -1 - z / 2 - z ** 2 / 3 - z ** 3 / 4
    w = 1 - z
    log = mpmath.log(w) if mpmath.re(w) >= 0 else mpmath.log(-w) + 1j * mpmath.pi
    return log / z


def pf_field_mp(theta, h, profile: str = "logcosh"):
    r"""The PF's field :math:`\sum_i \alpha(h\lambda_i)\,P_i\nabla E` on :math:`E = (4 - y)\varphi(x) + 0.02y`,
    in mpmath at its working precision.

    :math:`\nabla E = ((4 - y)\varphi', 0.02 - \varphi)`, :math:`H = \begin{pmatrix}(4-y)\varphi'' & -\varphi'\\
    -\varphi' & 0\end{pmatrix}`; its eigenvalues are :math:`\lambda_1 = m \pm d` (the larger in modulus,
    :math:`m = H_{xx}/2`, :math:`d = \sqrt{m^2 + \varphi'^2}`) and :math:`\lambda_2 = \det H/\lambda_1`
    (no cancellation), and :math:`P_i = (H - \lambda_j I)/(\lambda_i - \lambda_j)` the spectral projectors:
    :func:`pfcourse.flows.principal_flow` for a 2x2 complex symmetric Hessian, without ``eig``.
    Book: chapter 8, §The PF through the edge.
    """
    x, y = theta
    phi, dphi, ddphi = PROFILES[profile](x)
    gx, gy = (TOP - y) * dphi, SLOPE - phi
    a, b = (TOP - y) * ddphi, -dphi
    m = a / 2
    d = mpmath.sqrt(m * m + b * b)
    l1 = m + d if mpmath.re(m * mpmath.conj(d)) >= 0 else m - d
    l2 = -b * b / l1
    out = [mpmath.mpc(0), mpmath.mpc(0)]
    for lam, other in ((l1, l2), (l2, l1)):
        alpha = _alpha_mp(h * lam) / (lam - other)
        out[0] += alpha * ((a - other) * gx + b * gy)
        out[1] += alpha * (b * gx - other * gy)
    return out


class PreciseRun(NamedTuple):
    r"""The PF of :func:`pf_mp` at :math:`t = nh`, ``n = 0..steps``.

    Attributes:
        digits, substeps: the working precision (decimal digits) and RK4 steps per GD step.
        h_lambda: :math:`\mathrm{Re}\,h\lambda(y) = h(4 - \mathrm{Re}\,y)`, ``(steps + 1,)``.
        x: the PF's :math:`x` rounded to complex128, ``(steps + 1,)``.
        pole_distance: :math:`|x - i\pi/2|`, computed at the working precision, ``(steps + 1,)``.
    """

    digits: int
    substeps: int
    h_lambda: np.ndarray
    x: np.ndarray
    pole_distance: np.ndarray


def pf_mp(h: float = 0.5, theta0=(0.05, 0.1), steps: int = 56, *, substeps: int = 40, digits: int = 30,
          profile: str = "logcosh", progress: bool = True) -> PreciseRun:
    r"""Integrate the PF on a toy of this module with RK4 in mpmath at ``digits`` decimal digits.

    The same flow and the same branch as :func:`pf_through_the_edge`'s, but the arithmetic is chosen:
    a value that changes with ``digits`` (or with ``substeps``) is the arithmetic's, not the flow's.
    About 0.1 ms per field evaluation at 30 digits: 56 steps at 40 substeps take a few seconds.

    Args:
        h, theta0, steps, substeps: as for :func:`pf_through_the_edge` (``theta0`` real).
        digits: the working precision, ``>= 15``.
        profile: ``"logcosh"`` (:func:`edge_toy_loss`) or ``"square"`` (:func:`quadratic_toy_loss`).
        progress: show a progress bar over the steps (``tqdm.auto``).

    Book: chapter 8, §The PF through the edge.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    if digits < 15 or substeps < 1 or steps < 1:
        raise ValueError(f"need digits >= 15, substeps >= 1 and steps >= 1; got {digits}, {substeps}, {steps}")
    rows = []
    with mpmath.workdps(digits):
        hh = mpmath.mpf(h)
        dt = hh / substeps
        theta = [mpmath.mpc(mpmath.mpf(str(float(v)))) for v in theta0]
        rows.append(_record(theta, hh))
        for _ in tqdm(range(steps), desc=f"PF, {digits} digits", disable=not progress, leave=False):
            for _ in range(substeps):
                theta = _rk4_mp(theta, dt, hh, profile)
            rows.append(_record(theta, hh))
    h_lambda, x, pole = (np.array(column) for column in zip(*rows))
    return PreciseRun(digits, substeps, h_lambda, x, pole)


def _rk4_mp(theta, dt, h, profile):
    """One classical RK4 step of :func:`pf_field_mp` (at the caller's working precision)."""
    def shifted(k, c):
        return [t + c * ki for t, ki in zip(theta, k)]
    k1 = pf_field_mp(theta, h, profile)
    k2 = pf_field_mp(shifted(k1, dt / 2), h, profile)
    k3 = pf_field_mp(shifted(k2, dt / 2), h, profile)
    k4 = pf_field_mp(shifted(k3, dt), h, profile)
    return [t + dt / 6 * (a + 2 * b + 2 * c + d) for t, a, b, c, d in zip(theta, k1, k2, k3, k4)]


def _record(theta, h):
    """``(Re h lambda, x, |x - i pi/2|)`` of one PF state, the last at the working precision."""
    x, y = theta
    return (float(h * (TOP - mpmath.re(y))), complex(x), float(abs(x - 1j * mpmath.pi / 2)))
