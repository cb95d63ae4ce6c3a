r"""Chapter 4 (ch-stability): how fast each model grows or shrinks along one eigen-direction.

Along an eigen-direction :math:`u` of the Hessian, :math:`Hu = \lambda u`, every model of gradient
descent is a 1-D problem in :math:`x = h\lambda`. This module holds that reading in one place:

=========================  =====================================================================
name                       what it gives
=========================  =====================================================================
:func:`growth_rates`       growth rate per unit time of GD, PF, NGF and IGR (eq. ``eq-stab-rate``)
:func:`pf_step_factor`     the PF's signed factor over one step, :math:`1 - h\lambda`
:func:`stability_regime`   the name of the regime of :math:`x` (one of :data:`REGIMES`)
:data:`REGIME_BANDS`       the bands of :math:`x` coloured in :func:`pfcourse.plots.regime_map`
=========================  =====================================================================

Core math: it uses :mod:`pfcourse.flows` only.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ._checks import check_learning_rate
from .flows import log_one_minus, pf_coefficient

__all__ = ["REGIMES", "REGIME_BANDS", "growth_rates", "pf_step_factor", "stability_regime"]


def growth_rates(h: float, lam) -> dict:
    r"""Growth rates per unit time of the four models along one eigen-direction of curvature ``lam``.

    On :math:`E = \tfrac\lambda2 z^2` each model gives :math:`|z(t)| = e^{rt}|z_0|` (GD at :math:`t = nh`):

    .. math::
        r_{\rm GD} = r_{\rm PF} = \frac{\operatorname{Re}\log(1 - h\lambda)}{h} = \frac{\log|1 - h\lambda|}{h},\qquad
        r_{\rm NGF} = -\lambda,\qquad r_{\rm IGR} = -\lambda\big(1 + \tfrac{h\lambda}2\big).

    For :math:`\lambda < 0` (a saddle or maximum): :math:`r_{\rm GD} = \log(1 + h|\lambda|)/h < |\lambda| = r_{\rm NGF}`
    and :math:`r_{\rm IGR} = |\lambda|(1 - h|\lambda|/2)`, negative once :math:`h|\lambda| > 2`.
    The per-step factor of the modulus is :math:`e^{hr}`; :math:`h\lambda = 1` gives :math:`r = -\infty`.
    The PF's rate is the one chapter 6 reads off the sharpness (eq. ``eq-eos-growth``): negative for
    :math:`0 < h\lambda < 2`, zero at 2, positive beyond.
    Book: chapter 4, eqs. ``eq-stab-rate`` and ``eq-stab-rates-ngf-igr``; chapter 6, eq. ``eq-eos-growth``.

    Args:
      h: the learning rate, ``h > 0``.
      lam: a curvature or an array of them.

    Returns:
      ``{"GD": r, "PF": r, "NGF": r, "IGR": r}``, NumPy arrays shaped like ``lam``.
    """
    check_learning_rate(h)
    lam = np.asarray(lam, dtype=float)
    with np.errstate(divide="ignore"):
        r = np.log(np.abs(1.0 - h * lam)) / h
    pf = np.asarray(log_one_minus(jnp.asarray(h * lam))).real / h
    return {"GD": r, "PF": pf, "NGF": -lam, "IGR": -lam * (1 + h * lam / 2)}


REGIMES = (
    "escape (negative curvature)",
    "flat",
    "monotone convergence",
    "one-step convergence",
    "oscillating convergence",
    "period-2 cycle",
    "oscillating divergence",
)


def stability_regime(h_lambda, atol: float = 1e-12):
    r"""Name the regime of gradient descent (and of the PF) along a direction with :math:`x = h\lambda`.

    ==================  ===============================  =========================================
    :math:`x`           regime                           GD factor :math:`1 - x` per step
    ==================  ===============================  =========================================
    :math:`x < 0`       escape (negative curvature)      :math:`> 1`: grows, same sign
    :math:`x = 0`       flat                             :math:`1`
    :math:`0 < x < 1`   monotone convergence             in :math:`(0, 1)`
    :math:`x = 1`       one-step convergence             :math:`0`
    :math:`1 < x < 2`   oscillating convergence          in :math:`(-1, 0)`: flips sign, shrinks
    :math:`x = 2`       period-2 cycle                   :math:`-1`
    :math:`x > 2`       oscillating divergence           :math:`< -1`: flips sign, grows
    ==================  ===============================  =========================================

    The boundaries are matched with tolerance ``atol``.
    Book: chapter 4, §One direction at a time.

    Args:
      h_lambda: a real number or an array of them.

    Returns:
      One of :data:`REGIMES` (a string), or a list of them for an array.
    """
    arr = np.asarray(h_lambda)
    if np.iscomplexobj(arr):
        raise ValueError("stability_regime needs real h*lambda (eigenvalues of a real symmetric Hessian); "
                         "pass the real part if the imaginary part is rounding noise.")
    arr = arr.astype(float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"h*lambda must be finite, got {h_lambda!r}.")

    def one(x):
        for edge, name in ((0.0, REGIMES[1]), (1.0, REGIMES[3]), (2.0, REGIMES[5])):
            if abs(x - edge) <= atol:
                return name
        if x < 0:
            return REGIMES[0]
        if x < 1:
            return REGIMES[2]
        return REGIMES[4] if x < 2 else REGIMES[6]

    return one(float(arr)) if arr.ndim == 0 else [one(float(v)) for v in arr.ravel()]


def pf_step_factor(h, lam) -> np.ndarray:
    r"""The PF's factor on the gradient's component along an eigen-direction over one step of GD.

    Along :math:`u` with :math:`Hu = \lambda u` the PF (eq. ``eq-pf``) on a quadratic gives
    :math:`\tfrac{d}{dt}(u^\top\nabla E) = \lambda\,\alpha(h\lambda)\,(u^\top\nabla E)`, so over a time
    :math:`h` the component is multiplied by

    .. math:: e^{h\lambda\,\alpha(h\lambda)} = e^{\log(1 - h\lambda)} = 1 - h\lambda ,

    GD's own factor (eq. ``eq-step-factors``). It is negative (a sign flip every step) once
    :math:`h\lambda > 1` and larger than one in modulus (growth) once :math:`h\lambda > 2`.
    Computed through :func:`pfcourse.flows.pf_coefficient`; returns the real part (the imaginary
    part is zero up to rounding at :math:`t = h`).

    Book: chapter 4 (eq. ``eq-stab-rate``) and chapter 6, eq. ``eq-eos-factor``.
    """
    x = np.asarray(h, dtype=np.float64) * np.asarray(lam, dtype=np.float64)
    alpha = np.asarray(pf_coefficient(jnp.asarray(x)))
    return np.real(np.exp(x * alpha))


#: Background colour of each band of h*lambda in :func:`pfcourse.plots.regime_map`.
REGIME_BANDS = (
    (-np.inf, 0.0, "#fde8d4", "escape"),
    (0.0, 1.0, "#ffffff", "monotone"),
    (1.0, 2.0, "#e1ecf7", "flips sign,\nconverges"),
    (2.0, np.inf, "#f7dede", "flips sign,\ndiverges"),
)
