r"""The principal flow through the edge of stability, beside gradient descent and the central flow.

On the two-parameter toy

.. math:: E(x, y) = (4 - y)\log\cosh x + 0.02\,y, \qquad \lambda(y) = \partial_x^2 E(0, y) = 4 - y,

gradient descent at :math:`h = 0.5` from :math:`(0.05, 0.1)` slides down the slope in :math:`y`
towards the sharp side, reaches :math:`h\lambda(y) = 2` within about ten steps and then *holds* it:
its oscillation :math:`x_n` pushes :math:`y` back up by exactly :math:`h\sum_k \log\cosh x_k`
(self-stabilisation). The central flow (:mod:`pfcourse.central_flow`) models that time average:
it keeps :math:`S = 2/h` with :math:`\sigma^2 = 0.04` (on the valley, :math:`\nabla S = (0, -1)` and
:math:`\nabla E = (0, 0.02)`). The principal flow (:func:`pfcourse.flows.principal_flow`, complex state,
chapter 5's ``"side"`` branch policy) has no such mechanism: its oscillation is complex, the push
:math:`\tfrac12 z^2\nabla S` averages out, and its :math:`\mathrm{Re}\,h\lambda(y)` keeps growing.

In plain Python::

    gd = gradient_descent(E, theta0, h, steps)
    pf = integrate(principal_flow(E, h), complex(theta0), h * arange(steps + 1), rk4, substeps)
    cf = run_central_flow(E, theta0, h, steps)
    h * (4 - y) for each of them (real part for the PF)

==============================  ============================================================  =========
function                        computes                                                      book
==============================  ============================================================  =========
:func:`edge_toy_loss`           :math:`E(x, y)` above (analytic: takes complex states)        chapter 8
:func:`pf_through_the_edge`     GD, the PF and the central flow on the toy, step by step      chapter 8
:func:`edge_summary`            the figures the chapter quotes, from one run                  chapter 8
==============================  ============================================================  =========

Book: chapter 8, §The PF through the edge.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from pfcourse import central_flow, flows

__all__ = ["EdgeToyRun", "edge_summary", "edge_toy_loss", "pf_through_the_edge"]

SLOPE = 0.02
TOP = 4.0


def edge_toy_loss(theta: jnp.ndarray) -> jnp.ndarray:
    r""":math:`E(x, y) = (4 - y)\log\cosh x + 0.02y` for ``theta = (x, y)``, real or complex.

    Its curvature across the valley is :math:`\lambda(y) = 4 - y` at :math:`x = 0`, falling off as
    :math:`\mathrm{sech}^2 x` away from it. Book: chapter 8, §A toy with a closed form and §The PF
    through the edge.
    """
    return (TOP - theta[1]) * jnp.log(jnp.cosh(theta[0])) + SLOPE * theta[1]


class EdgeToyRun(NamedTuple):
    r"""GD, the PF and the central flow on :func:`edge_toy_loss`, sampled at steps ``0..steps``.

    Attributes:
        h: the learning rate.
        gd: GD's iterates :math:`(x_n, y_n)`, ``(steps + 1, 2)``, real.
        pf: the PF at :math:`t = nh`, ``(steps + 1, 2)``, complex.
        central: the central flow's :class:`pfcourse.central_flow.CentralFlowRun`.
        gd_h_lambda, pf_h_lambda, central_h_lambda: :math:`h\lambda(y) = h(4 - y)` along each
            (the PF's from :math:`\mathrm{Re}\,y`), ``(steps + 1,)``.
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


def pf_through_the_edge(h: float = 0.5, theta0=(0.05, 0.1), steps: int = 120, *, substeps: int = 40) -> EdgeToyRun:
    r"""Run GD, integrate the PF and the central flow on :func:`edge_toy_loss` for ``steps`` steps.

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

    Returns:
        an :class:`EdgeToyRun`.

    Book: chapter 8, §The PF through the edge.
    """
    th0 = jnp.asarray(theta0, dtype=float)
    gd = np.asarray(flows.gradient_descent(edge_toy_loss, th0, h, steps))
    pf = np.asarray(flows.integrate(flows.principal_flow(edge_toy_loss, h), th0.astype(complex),
                                    h * np.arange(steps + 1), method="rk4", substeps=substeps))
    cf = central_flow.run_central_flow(edge_toy_loss, th0, h, steps, progress=False)
    return EdgeToyRun(h, gd, pf, cf, h * (TOP - gd[:, 1]), h * (TOP - pf[:, 1].real),
                      h * np.asarray(cf.sharpness), np.sqrt(np.asarray(cf.sigma2)))


def edge_summary(run: EdgeToyRun, window: tuple[int, int] = (60, 120)) -> dict:
    r"""The figures chapter 8 quotes, over the steps ``window[0]..window[1]`` (inclusive).

    Returns a dict: ``gd_h_lambda_range`` (min, max of GD's :math:`h\lambda(y_n)`), ``gd_rms_x``
    (:math:`\sqrt{\mathrm{mean}\,x_n^2}`), ``central_h_s_range`` (min, max of the central flow's
    :math:`hS`), ``central_sigma`` (its :math:`\sigma` at the last step), ``pf_h_lambda`` (the PF's
    :math:`\mathrm{Re}\,h\lambda` at the window's two ends) and ``pf_im_x_end`` (:math:`\mathrm{Im}\,x`
    of the PF at the end; :math:`\pi/2` is the zero of :math:`\cosh`, a singularity of the continued loss).
    """
    a, b = window
    sl = slice(a, b + 1)
    gd_hl = run.gd_h_lambda[sl]
    return dict(gd_h_lambda_range=(float(gd_hl.min()), float(gd_hl.max())),
                gd_rms_x=float(np.sqrt(np.mean(run.gd[sl, 0] ** 2))),
                central_h_s_range=(float(run.central_h_lambda[sl].min()), float(run.central_h_lambda[sl].max())),
                central_sigma=float(run.central_sigma[b]),
                pf_h_lambda=(float(run.pf_h_lambda[a]), float(run.pf_h_lambda[b])),
                pf_im_x_end=float(run.pf[b, 0].imag))
