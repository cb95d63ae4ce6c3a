r"""Toy losses the chapters use, each a plain ``E(theta)`` with its analytic Hessian where known.

Every loss is a polynomial (or a quadratic form) in ``theta``, hence analytic: it can be evaluated
at complex ``theta``, which the principal flow needs off quadratics (chapter 5).
Book: chapter 1 (quadratics), chapters 4–5 (saddle, double well, banana).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_shape

__all__ = ["Landscape", "quadratic", "saddle", "double_well", "rosenbrock", "local_minimum"]


@dataclass(frozen=True)
class Landscape:
    """A loss with what a chapter needs to draw it.

    Attributes:
      name: a short human-readable name.
      loss: ``E(theta)``, a scalar for ``theta`` of shape ``(dim,)`` (real or complex).
      hessian: ``theta -> (dim, dim)`` analytic Hessian, or ``None`` if not given.
      dim: the number of parameters.
      minima: the known local minima (each an array of shape ``(dim,)``).
      start: a starting point that the chapters use.
      bounds: ``((xmin, xmax), (ymin, ymax))`` for contour plots of 2-D losses.

    ``loss`` and ``hessian`` refuse a ``theta`` whose shape is not ``(dim,)`` with a ``ValueError``
    (the formulas index ``theta[0]``, ``theta[1]`` or broadcast, so a wrong length would otherwise
    give a number, and gradient descent would run on the wrong problem). Batch with ``jax.vmap``.
    They are data (equinox Modules: a module-level formula and its constants as arrays), so two
    landscapes of one kind share every compilation (:func:`pfcourse.flows.integrate`, ...).
    """

    name: str
    loss: Callable
    hessian: Optional[Callable]
    dim: int
    minima: tuple = ()
    start: Optional[np.ndarray] = None
    bounds: tuple = ((-2.0, 2.0), (-2.0, 2.0))
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "loss", _shape_checked(self.loss, self.dim, f"{self.name} loss"))
        if self.hessian is not None:
            object.__setattr__(self, "hessian", _shape_checked(self.hessian, self.dim, f"{self.name} hessian"))


class _ShapeChecked(eqx.Module):
    """``fn`` with its argument checked to have shape ``(dim,)``; a pytree (``fn``'s constants are leaves)."""

    fn: Callable
    dim: int = eqx.field(static=True)
    what: str = eqx.field(static=True)

    def __call__(self, theta):
        check_shape(theta, (self.dim,), f"{self.what}: theta",
                    f"This landscape has {self.dim} parameters; pass one point of shape ({self.dim},) "
                    "(use jax.vmap for a batch of points).")
        return self.fn(theta)

    def __hash__(self):  # by identity: ``jax.jit(L.loss)`` works (array leaves have no value hash)
        return id(self)

    def __eq__(self, other):  # by identity too: JAX's caches compare functions, and arrays have no ==
        return self is other


def _shape_checked(fn: Callable, dim: int, what: str) -> Callable:
    """``fn`` with its argument checked to have shape ``(dim,)`` (once: a checked ``fn`` is returned as is)."""
    if isinstance(fn, _ShapeChecked) and fn.dim == dim:
        return fn
    return _ShapeChecked(fn, dim, what)


def _formula(fn: Callable, *constants) -> Callable:
    """``theta -> fn(*constants, theta)`` as data: the constants are array leaves, ``fn`` is static."""
    return jax.tree_util.Partial(fn, *(jnp.asarray(c) for c in constants))


def quadratic(eigenvalues, angle: float = 0.0, eigenvectors=None, center=None) -> Landscape:
    r"""The quadratic :math:`E(\theta) = \tfrac12(\theta - c)^\top A(\theta - c)`, :math:`A = U\operatorname{diag}(\lambda)U^\top`.

    The Hessian is ``A`` everywhere. In 2-D, ``angle`` rotates the eigenvectors (radians);
    otherwise pass orthonormal ``eigenvectors`` as columns (default: the identity).
    Book: chapter 1, §The quadratic case.
    """
    lam = np.asarray(eigenvalues, dtype=float)
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"eigenvalues must be a non-empty 1-D list, got shape {lam.shape}.")
    d = lam.size
    if eigenvectors is None:
        U = np.eye(d)
        if angle:
            if d != 2:
                raise ValueError("angle rotates 2-D quadratics only; pass eigenvectors for dim != 2.")
            c, s = np.cos(angle), np.sin(angle)
            U = np.array([[c, -s], [s, c]])
    else:
        U = np.asarray(eigenvectors, dtype=float)
        if U.shape != (d, d) or not np.allclose(U.T @ U, np.eye(d), atol=1e-10):
            raise ValueError(f"eigenvectors must be an orthonormal ({d}, {d}) matrix (columns).")
    A = U @ np.diag(lam) @ U.T
    A = 0.5 * (A + A.T)
    cen = np.zeros(d) if center is None else np.asarray(center, dtype=float)
    if cen.shape != (d,):
        raise ValueError(f"center must have shape ({d},), got {cen.shape}.")
    loss, hessian = _formula(_quadratic_loss, A, cen), _formula(_quadratic_hessian, A)
    minima = (cen,) if np.all(lam > 0) else ()
    start = cen + U @ np.ones(d)
    return Landscape("quadratic", loss, hessian, d, minima, start,
                     params={"A": A, "eigenvalues": lam, "eigenvectors": U, "center": cen})


def saddle(a: float = 1.0, b: float = 1.0) -> Landscape:
    r"""A saddle with bounded escape: :math:`E(x, y) = \tfrac a2 x^2 - \tfrac b2 y^2 + \tfrac b4 y^4`.

    At the origin the Hessian is :math:`\operatorname{diag}(a, -b)` (one negative eigenvalue);
    the minima are :math:`(0, \pm 1)` with Hessian :math:`\operatorname{diag}(a, 2b)`.
    Book: chapter 4, §Saddles and maxima.
    """

    loss, hessian = _formula(_saddle_loss, a, b), _formula(_saddle_hessian, a, b)

    return Landscape("saddle", loss, hessian, 2, (np.array([0.0, 1.0]), np.array([0.0, -1.0])),
                     np.array([1.0, 1e-3]), ((-1.5, 1.5), (-1.5, 1.5)), {"a": a, "b": b})


def double_well(kappa: float = 1.0) -> Landscape:
    r"""A double well :math:`E(x, y) = \tfrac14(x^2 - 1)^2 + \tfrac\kappa2 y^2`.

    Minima at :math:`(\pm1, 0)` with Hessian :math:`\operatorname{diag}(2, \kappa)`; a saddle at the
    origin with Hessian :math:`\operatorname{diag}(-1, \kappa)`.
    Book: chapter 5, §Beyond quadratics.
    """

    loss, hessian = _formula(_double_well_loss, kappa), _formula(_double_well_hessian, kappa)

    return Landscape("double well", loss, hessian, 2, (np.array([1.0, 0.0]), np.array([-1.0, 0.0])),
                     np.array([0.2, 1.0]), ((-1.8, 1.8), (-1.5, 1.5)), {"kappa": kappa})


def rosenbrock(a: float = 1.0, b: float = 100.0) -> Landscape:
    r"""Rosenbrock's banana :math:`E(x, y) = (a - x)^2 + b(y - x^2)^2` (Rosenbrock, 1960).

    Minimum at :math:`(a, a^2)`, where the Hessian is
    :math:`\begin{pmatrix} 2 + 8ba^2 & -4ba \\ -4ba & 2b\end{pmatrix}`.
    Book: chapter 5, §Beyond quadratics.
    """

    loss, hessian = _formula(_rosenbrock_loss, a, b), _formula(_rosenbrock_hessian, a, b)

    return Landscape("Rosenbrock", loss, hessian, 2, (np.array([a, a * a]),),
                     np.array([-1.0, 1.5]), ((-2.0, 2.0), (-1.0, 3.0)), {"a": a, "b": b})


def local_minimum(c: float = 0.2, kappa: float = 1.0, eps: float = 0.25) -> Landscape:
    r"""A sharp local minimum next to a flat global one, which GD escapes at large learning rates.

    .. math:: E(x, y) = \tfrac14x^4 - \tfrac c3x^3 - \tfrac12x^2 + cx + \tfrac12 y^2\big(\kappa(1 + x)^2 + \varepsilon\big),
       \qquad 0 < c < 1,\ \kappa > 0,\ \varepsilon > 0.

    Critical points: :math:`\partial_y E = y(\kappa(1 + x)^2 + \varepsilon) = 0` forces :math:`y = 0`, and
    then :math:`\partial_x E = x^3 - cx^2 - x + c = (x^2 - 1)(x - c) = 0`. So there are exactly three:

    * :math:`(1, 0)`, the **local** minimum: :math:`E = -\tfrac14 + \tfrac{2c}3`, Hessian
      :math:`\operatorname{diag}(2(1 - c),\ 4\kappa + \varepsilon)` (sharp along :math:`y`);
    * :math:`(-1, 0)`, the **global** minimum: :math:`E = -\tfrac14 - \tfrac{2c}3`, Hessian
      :math:`\operatorname{diag}(2(1 + c),\ \varepsilon)` (flat along :math:`y`);
    * :math:`(c, 0)`, a saddle: Hessian :math:`\operatorname{diag}(c^2 - 1,\ \kappa(1 + c)^2 + \varepsilon)`.

    (:math:`E_{xx} = 3x^2 - 2cx - 1 + \kappa y^2`, :math:`E_{xy} = 2\kappa y(1 + x)`,
    :math:`E_{yy} = \kappa(1 + x)^2 + \varepsilon`.) GD is linearly stable at the local minimum iff
    :math:`h < \min(2/(2(1 - c)),\ 2/(4\kappa + \varepsilon))` and at the global one iff
    :math:`h < \min(2/(2(1 + c)),\ 2/\varepsilon)`: with the defaults, :math:`0.47 < h < 0.83` makes the
    local minimum unstable and the global one stable. When GD oscillates along :math:`y` near
    :math:`x = 1`, the term :math:`\tfrac12\kappa y^2(1 + x)^2` pushes :math:`x` towards :math:`-1`,
    where the valley is flatter: the instability itself carries GD to the flat minimum.
    The minima are listed global first; ``params`` names them.
    Book: chapter 5, §A minimum that GD escapes.
    """
    if not 0 < c < 1 or kappa <= 0 or eps <= 0:
        raise ValueError(f"local_minimum needs 0 < c < 1, kappa > 0 and eps > 0; got c={c}, kappa={kappa}, eps={eps}.")

    loss = _formula(_local_minimum_loss, c, kappa, eps)
    hessian = _formula(_local_minimum_hessian, c, kappa, eps)

    glob, loc, sad = np.array([-1.0, 0.0]), np.array([1.0, 0.0]), np.array([c, 0.0])
    params = {
        "c": c, "kappa": kappa, "eps": eps,
        "global_minimum": glob, "local_minimum": loc, "saddle": sad,
        "global_value": -0.25 - 2 * c / 3, "local_value": -0.25 + 2 * c / 3,
        "global_curvatures": np.array([2 * (1 + c), eps]),
        "local_curvatures": np.array([2 * (1 - c), 4 * kappa + eps]),
        "saddle_curvatures": np.array([c**2 - 1, kappa * (1 + c) ** 2 + eps]),
    }
    return Landscape("local minimum", loss, hessian, 2, (glob, loc), np.array([1.2, 0.3]),
                     ((-1.8, 1.8), (-1.4, 1.4)), params)


# --------------------------------------------------------------------------- the formulas (module level: data, not closures)


def _quadratic_loss(A, c, theta):
    r = theta - c
    return 0.5 * r @ (A @ r)


def _quadratic_hessian(A, theta):
    return A


def _saddle_loss(a, b, t):
    x, y = t[0], t[1]
    return 0.5 * a * x**2 - 0.5 * b * y**2 + 0.25 * b * y**4


def _saddle_hessian(a, b, t):
    y = t[1]
    return jnp.array([[a, 0.0 * y], [0.0 * y, -b + 3 * b * y**2]])


def _double_well_loss(kappa, t):
    x, y = t[0], t[1]
    return 0.25 * (x**2 - 1) ** 2 + 0.5 * kappa * y**2


def _double_well_hessian(kappa, t):
    x = t[0]
    return jnp.array([[3 * x**2 - 1, 0.0 * x], [0.0 * x, kappa + 0.0 * x]])


def _rosenbrock_loss(a, b, t):
    x, y = t[0], t[1]
    return (a - x) ** 2 + b * (y - x**2) ** 2


def _rosenbrock_hessian(a, b, t):
    x, y = t[0], t[1]
    return jnp.array([[2 - 4 * b * (y - x**2) + 8 * b * x**2, -4 * b * x],
                      [-4 * b * x, 2 * b + 0.0 * x]])


def _local_minimum_loss(c, kappa, eps, t):
    x, y = t[0], t[1]
    return x**4 / 4 - c * x**3 / 3 - x**2 / 2 + c * x + 0.5 * y**2 * (kappa * (1 + x) ** 2 + eps)


def _local_minimum_hessian(c, kappa, eps, t):
    x, y = t[0], t[1]
    return jnp.array([[3 * x**2 - 2 * c * x - 1 + kappa * y**2, 2 * kappa * y * (1 + x)],
                      [2 * kappa * y * (1 + x), kappa * (1 + x) ** 2 + eps]])
