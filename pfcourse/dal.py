r"""DAL, drift adjusted learning: a learning rate set by the curvature the gradient sees.

One step of gradient descent drifts away from gradient flow by about :math:`\tfrac{h^2}{2}H\nabla E`
(chapter 2; the first principal term of chapter 3). Measured against the step :math:`h\nabla E`
itself, the drift is :math:`\tfrac h2\,\|H\nabla E\|/\|\nabla E\|`. DAL (Rosca et al., TMLR 2023)
picks the learning rate from that ratio at every step:

.. math:: h_t = \min\!\Big(\frac{2}{(\|H g_t\| / \|g_t\|)^p},\ h_{\max}\Big),\qquad g_t = \nabla E(\theta_t),

with :math:`p = 0` meaning plain gradient descent at a fixed rate. :math:`p = 1` makes the
first-order drift exactly as long as the step. The ratio :math:`\|Hg\|/\|g\|` is a weighted RMS of
the Hessian's eigenvalues, so it is at most :math:`\max_i|\lambda_i|`: DAL-1 holds the curvature
*seen by the gradient* at :math:`2/h`, not the sharpness.

=============================  ===============================================================  =========
function                       computes                                                         book
=============================  ===============================================================  =========
:func:`drift_ratio`            :math:`r = \|Hg\|/\|g\|`                                         chapter 7
:func:`finite_difference_hvp`  :math:`Hv` by a forward difference of gradients                  chapter 7
:func:`dal_learning_rate`      :math:`h_t` from ``g`` and ``Hg``                                chapter 7
:func:`dal_learning_rate_at`   :math:`h_t` from a loss and parameters                           chapter 7
:func:`scale_by_dal`           optax transformation ``g -> h_t g`` (chain it)                   chapter 7
:func:`dal`                    optax optimiser ``g -> -h_t g`` (gradient descent with DAL)      chapter 7
=============================  ===============================================================  =========

The rule follows the authors' public code (google-deepmind/discretisation_drift,
``principal_flow_instability_single_objective/dal.py``): clip to :math:`[0, h_{\max}]` with default
:math:`h_{\max} = 5`, the exact HVP or the finite difference with :math:`\varepsilon = 0.01/\|g\|`,
the fixed rate outside an optional window of iterations.

Special inputs, by design (each is tested):

* ``p < 0``, ``h_max <= 0``, a non-positive or missing fixed ``learning_rate``, a bad window:
  ``ValueError`` when the transform is built (under ``jit``/``vmap``, where they are traced, a runtime error
  from :func:`equinox.error_if` when the rate is computed).
* a zero gradient, :math:`g = 0`: the gradient sees no curvature; the ratio is defined as 0, so
  :math:`h_t = h_{\max}` (``p > 0``), and the step :math:`h_t g = 0` whatever the rate. The
  finite-difference HVP of the zero vector is exactly 0 (no division by :math:`\|g\| = 0`).
* :math:`Hg = 0` with :math:`g \ne 0` (a locally linear loss): ratio 0, :math:`h_t = h_{\max}`.
* a gradient or an HVP with a NaN or an infinity: a runtime error (under ``jit`` too) that says
  training has diverged, never a NaN rate.
"""
from __future__ import annotations

from typing import Any, Callable, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pfcourse import spectral
from pfcourse._checks import is_concrete

PyTree = Any
Loss = Callable[[PyTree], jax.Array]
HVPMethod = Literal["exact", "finite_difference"]
HVP_METHODS = ("exact", "finite_difference")

__all__ = [
    "DALState",
    "HVP_METHODS",
    "dal",
    "dal_learning_rate",
    "dal_learning_rate_at",
    "drift_ratio",
    "finite_difference_hvp",
    "scale_by_dal",
]


# --------------------------------------------------------------------------- helpers


def _tree_norm(tree: PyTree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.abs(x) ** 2) for x in leaves))


def _all_finite(tree: PyTree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def _float_dtype(tree: PyTree):
    leaves = jax.tree_util.tree_leaves(tree)
    dt = jnp.result_type(*leaves) if leaves else jnp.float32
    return dt if jnp.issubdtype(dt, jnp.floating) else jax.dtypes.canonicalize_dtype(jnp.float64)


def _check_config(p, h_max, learning_rate, window) -> None:
    """``ValueError`` for concrete bad settings; traced ones are checked at run time."""
    if is_concrete(p):
        arr = np.asarray(p)
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(
                f"DAL: the power p must be finite and >= 0, got p = {p}. p = 0 is gradient descent "
                "at the fixed learning_rate, p = 1 puts ||Hg||/||g|| at 2/h; pass e.g. p = 1."
            )
    if is_concrete(h_max):
        arr = np.asarray(h_max)
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(
                f"DAL: h_max must be positive and finite, got h_max = {h_max}. It caps the rate where "
                "the gradient sees little curvature; the authors use h_max = 5."
            )
    if learning_rate is not None and is_concrete(learning_rate):
        arr = np.asarray(learning_rate)
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(
                f"DAL: the fixed learning_rate must be positive and finite, got {learning_rate}. "
                "It is the rate used when p = 0 and outside the window; pass e.g. 0.1."
            )
    if window is not None:
        if not (isinstance(window, tuple) and len(window) == 2):
            raise ValueError(f"DAL: window must be a pair (start, stop), got {window!r}.")
        start, stop = window
        ok = isinstance(start, (int, np.integer)) and start >= 0 and (
            stop is None or (isinstance(stop, (int, np.integer)) and stop > start))
        if not ok:
            raise ValueError(
                f"DAL: window must be (start, stop) with integers 0 <= start < stop (stop may be None "
                f"for 'until the end'), got {window!r}. DAL adapts the rate at steps start <= t < stop."
            )


def _in_window(step, window) -> jax.Array:
    if window is None:
        return jnp.asarray(True)
    start, stop = window
    step = jnp.asarray(step)
    inside = step >= start
    return inside if stop is None else inside & (step < stop)


# --------------------------------------------------------------------------- the rule


def drift_ratio(g: PyTree, Hg: PyTree) -> jax.Array:
    r"""The curvature seen by the gradient, :math:`r = \|Hg\| / \|g\|`.

    With :math:`g = \sum_i c_i u_i` in the Hessian's eigenbasis,

    .. math:: r^2 = \frac{\sum_i \lambda_i^2 c_i^2}{\sum_i c_i^2} \le \max_i \lambda_i^2 ,

    a weighted mean of the squared eigenvalues, weighted by where the gradient points. So
    :math:`r \le \max_i |\lambda_i|`, with equality only when :math:`g` lies in the eigenspaces of
    the largest :math:`|\lambda_i|`. The first-order drift of one GD step measured against the step
    is :math:`\tfrac{h^2}{2}\|Hg\| / (h\|g\|) = \tfrac h2 r`.

    Args:
      g: the gradient, any pytree.
      Hg: the Hessian-vector product :math:`Hg`, a pytree like ``g``.

    Returns:
      :math:`r \ge 0`, a scalar. For :math:`g = 0` it returns 0 (a zero gradient sees no curvature;
      with it DAL takes :math:`h_{\max}`, and the step is zero).

    Book: chapter 7, §The curvature the gradient sees.
    """
    gn, hn = _tree_norm(g), _tree_norm(Hg)
    return jnp.where(gn > 0, hn / jnp.where(gn > 0, gn, 1.0), 0.0)


def finite_difference_hvp(E: Loss, params: PyTree, v: PyTree, *, step: float = 0.01,
                          grad: PyTree | None = None) -> PyTree:
    r"""Hessian-vector product by a forward difference of gradients.

    .. math:: Hv \approx \frac{\nabla E(\theta + \varepsilon v) - \nabla E(\theta)}{\varepsilon},
              \qquad \varepsilon = \frac{\text{step}}{\|v\|},

    so the parameters move by exactly ``step`` (0.01 by default, as in the authors' code with
    :math:`v = g`). The error is :math:`\tfrac\varepsilon2\nabla^3E[v, v] + O(\varepsilon^2)`: zero on a
    quadratic (up to rounding), first order in ``step`` otherwise. It costs one extra gradient
    (none more if ``grad`` is passed) and needs no forward-mode differentiation.

    Args:
      E: scalar loss ``E(params)``.
      params: the point :math:`\theta`, any pytree.
      v: the direction, a pytree like ``params``. ``v = 0`` returns exactly 0 (:math:`H\cdot0`).
      step: the length :math:`\|\varepsilon v\|` of the probe step, > 0.
      grad: :math:`\nabla E(\theta)` if already computed (e.g. the gradient being scaled).

    Returns:
      The estimate of :math:`Hv`, a pytree like ``params``.

    References:
      Rosca et al. (2023), their ``hg_finite_differences_approx``.

    Book: chapter 7, §Computing Hg.
    """
    if is_concrete(step) and not (np.isfinite(step) and step > 0):
        raise ValueError(f"finite_difference_hvp: step must be positive and finite, got {step}.")
    g0 = jax.grad(E)(params) if grad is None else grad
    vn = _tree_norm(v)
    eps = step / jnp.where(vn > 0, vn, 1.0)
    moved = jax.tree_util.tree_map(lambda p, d: p + eps * d, params, v)
    g1 = jax.grad(E)(moved)
    return jax.tree_util.tree_map(lambda a, b: jnp.where(vn > 0, (a - b) / eps, 0.0 * a), g1, g0)


def dal_learning_rate(
    g: PyTree,
    Hg: PyTree,
    p,
    h_max=5.0,
    *,
    learning_rate=None,
    step=None,
    window: tuple[int, int | None] | None = None,
) -> jax.Array:
    r"""The DAL-p learning rate :math:`h_t = \min\big(2 / (\|Hg\|/\|g\|)^p,\ h_{\max}\big)`.

    The rule of Rosca et al. (2023). ``p = 0`` returns the fixed ``learning_rate`` (plain GD: the
    authors' convention; the formula would give the constant :math:`\min(2, h_{\max})`). With
    ``window = (start, stop)``, the rate adapts only at steps ``start <= step < stop`` and is the
    fixed ``learning_rate`` elsewhere. In plain Python::

        r = norm(Hg) / norm(g)            # 0 if g == 0
        if p == 0 or not (start <= step < stop):
            return learning_rate
        return min(2 / r**p, h_max)       # r == 0 gives h_max

    For :math:`g = (1, 1)` and :math:`H = \mathrm{diag}(4, 0)`: :math:`r = 4/\sqrt2`, so DAL-1 gives
    :math:`2/r = 1/\sqrt2` and DAL-2 :math:`2/r^2 = 1/4`:

    >>> import jax.numpy as jnp
    >>> g, Hg = jnp.array([1.0, 1.0]), jnp.array([4.0, 0.0])
    >>> round(float(dal_learning_rate(g, Hg, 1)), 4), round(float(dal_learning_rate(g, Hg, 2)), 4)
    (0.7071, 0.25)

    Every argument may be traced (``jit``, ``vmap`` over ``p``, ``h_max`` or ``learning_rate``).

    Args:
      g: the gradient :math:`\nabla E(\theta_t)`, any pytree.
      Hg: :math:`H(\theta_t)g`, exact (:func:`pfcourse.spectral.hvp`) or estimated
        (:func:`finite_difference_hvp`).
      p: the power, ``p >= 0``.
      h_max: the cap, ``> 0`` (default 5, as in the authors' code).
      learning_rate: the fixed rate for ``p = 0`` and outside the window (required then).
      step: the iteration count ``t``, needed with ``window``.
      window: ``(start, stop)``, integers, ``stop`` may be ``None``.

    Returns:
      :math:`h_t`, a scalar.

    Raises:
      ValueError: concrete ``p < 0``, ``h_max <= 0``, ``learning_rate <= 0``, a bad window, a
        window without ``step``, or ``p = 0`` without ``learning_rate``.
      equinox's runtime error (also under ``jit``): traced bad settings, or a non-finite
        ``g`` or ``Hg`` (training has diverged).

    Book: chapter 7, eq. ``eq-dal``.
    """
    _check_rate_args(p, h_max, learning_rate, step, window)
    r = drift_ratio(g, Hg)
    p = jnp.asarray(p, r.dtype)
    adaptive = jnp.minimum(2.0 / jnp.power(r, p), h_max)       # r = 0: 2/0 = inf -> h_max
    fixed = jnp.asarray(jnp.nan if learning_rate is None else learning_rate, r.dtype)
    use_fixed = (p == 0) | ~_in_window(step if step is not None else 0, window)
    return _guard_rate(jnp.where(use_fixed, fixed, adaptive), g, Hg, p, h_max, learning_rate)


def _check_rate_args(p, h_max, learning_rate, step, window) -> None:
    """:func:`dal_learning_rate`'s ``ValueError`` for concrete bad settings or missing arguments."""
    _check_config(p, h_max, learning_rate, window)
    if window is not None and step is None:
        raise ValueError("dal_learning_rate: pass step (the iteration count) together with window.")
    if learning_rate is None and is_concrete(p) and np.any(np.asarray(p) == 0):
        raise ValueError("dal_learning_rate: p = 0 is gradient descent at a fixed rate; pass learning_rate.")
    if learning_rate is None and window is not None:
        raise ValueError("dal_learning_rate: outside the window the rate is the fixed learning_rate; pass it.")


def _guard_rate(rate, g, Hg, p, h_max, learning_rate) -> jax.Array:
    """``rate`` with runtime errors (under ``jit`` too) for a non-finite ``g`` or ``Hg`` and for
    traced bad settings; ``p`` is already an array."""
    rate = eqx.error_if(rate, ~(_all_finite(g) & _all_finite(Hg)),
                        "DAL: the gradient or the Hessian-vector product is not finite (NaN or inf): "
                        "training has diverged before this step. Lower h_max or the fixed learning_rate.")
    bad = (p < 0) | ~(jnp.asarray(h_max) > 0) | ~jnp.isfinite(p) | ~jnp.isfinite(jnp.asarray(h_max))
    if learning_rate is not None:
        bad = bad | ~(jnp.asarray(learning_rate) > 0) | ~jnp.isfinite(jnp.asarray(learning_rate))
    else:
        bad = bad | (p == 0)
    return eqx.error_if(rate, bad, "DAL: need p >= 0, h_max > 0, learning_rate > 0 (and a "
                        "learning_rate when p = 0); a traced setting broke this.")


def _hvp(E: Loss, params: PyTree, v: PyTree, method: HVPMethod, grad=None, fd_step: float = 0.01):
    if method == "exact":
        return spectral.hvp(E, params, v)
    return finite_difference_hvp(E, params, v, step=fd_step, grad=grad)


def dal_learning_rate_at(
    E: Loss,
    params: PyTree,
    p,
    h_max=5.0,
    *,
    learning_rate=None,
    hvp: HVPMethod = "exact",
) -> jax.Array:
    r"""The DAL-p learning rate at ``params``: :func:`dal_learning_rate` with :math:`g = \nabla E` and
    :math:`Hg` computed here.

    .. math:: h = \min\!\Big(\frac{2}{(\|H\nabla E\| / \|\nabla E\|)^p},\ h_{\max}\Big).

    Args:
      E: scalar loss ``E(params)``.
      params: any pytree.
      p, h_max, learning_rate: as in :func:`dal_learning_rate`.
      hvp: ``"exact"`` (:func:`pfcourse.spectral.hvp`, forward over reverse) or
        ``"finite_difference"`` (:func:`finite_difference_hvp`, :math:`\varepsilon = 0.01/\|g\|`).

    Book: chapter 7, eq. ``eq-dal``.
    """
    if hvp not in HVP_METHODS:
        raise ValueError(f"DAL: hvp must be one of {HVP_METHODS}, got {hvp!r}.")
    g = jax.grad(E)(params)
    return dal_learning_rate(g, _hvp(E, params, g, hvp, grad=g), p, h_max, learning_rate=learning_rate)


# --------------------------------------------------------------------------- optax


class DALState(NamedTuple):
    """State of :func:`scale_by_dal` / :func:`dal`.

    Attributes:
      count: the number of updates so far (int32); the step ``t`` of the window.
      rate: the learning rate :math:`h_t` chosen at the last update (the fixed rate before the first).
      ratio: :math:`\\|Hg\\|/\\|g\\|` at the last update (0 before the first), for logging.
    """

    count: jax.Array
    rate: jax.Array
    ratio: jax.Array


def scale_by_dal(p, learning_rate, h_max=5.0, *, window: tuple[int, int | None] | None = None,
                 hvp: HVPMethod = "exact", fd_step: float = 0.01,
                 flip_sign: bool = False) -> optax.GradientTransformationExtraArgs:
    r"""An optax transformation that multiplies the gradient by the DAL-p rate: :math:`g \mapsto h_t g`.

    .. math:: h_t = \min\!\Big(\frac{2}{(\|Hg\|/\|g\|)^p},\ h_{\max}\Big), \qquad g = \text{updates},

    (the fixed ``learning_rate`` when ``p = 0`` or outside ``window``). It must come *first* in a
    chain, where ``updates`` is still the raw gradient: the HVP is taken along it. Chain it as the
    authors do with SGD, or with any optax optimiser, e.g. heavy-ball momentum::

        opt = optax.chain(scale_by_dal(p=1, learning_rate=0.1), optax.trace(0.9), optax.scale(-1.0))
        updates, state = opt.update(grads, state, params, loss_fn=E)

    :func:`dal` is plain gradient descent with DAL. Cost: one HVP per step (forward over reverse),
    or one extra gradient with ``hvp="finite_difference"``.

    Args:
      p: the power, ``>= 0`` (may be traced: build the transform inside ``jax.vmap`` over ``p``).
      learning_rate: the fixed rate used when ``p = 0`` and outside the window, ``> 0``.
      h_max: the cap on the rate, ``> 0`` (authors' default 5).
      window: ``(start, stop)``: adapt only at update counts ``start <= t < stop`` (``stop`` may be
        ``None``). The authors' code adapts at ``start < t < stop``; ours starts one step earlier.
      hvp: how ``update`` computes :math:`Hg` from ``loss_fn``: ``"exact"`` or ``"finite_difference"``.
      fd_step: the probe length of the finite difference (:math:`\varepsilon\|g\|`).
      flip_sign: return :math:`-h_t g` (a complete descent update).

    Returns:
      ``optax.GradientTransformationExtraArgs``. ``update(updates, state, params, *, loss_fn=None,
      hvp_fn=None)`` needs ``params`` and either ``loss_fn`` (``params -> scalar``, the loss whose
      gradient ``updates`` is) or ``hvp_fn`` (``(params, v) -> Hv``, used as given). The state is a
      :class:`DALState`; read the last rate with ``state.rate`` (inside a chain:
      ``optax.tree_utils.tree_get(state, "rate")``).

    Raises:
      ValueError: bad settings (see :func:`dal_learning_rate`), ``learning_rate=None``, unknown
        ``hvp`` (all when the transform is built); missing ``params`` / ``loss_fn`` (at ``update``).

    References:
      Rosca, Wu, Qin, Dherin, TMLR 2023 [rosca2023continuous], section on DAL, and their public
      ``DriftAdaptiveLearningRateScaler``.

    Book: chapter 7, §DAL as an optax transformation.
    """
    _check_transform(p, learning_rate, h_max, window, hvp, fd_step)
    rule = dict(p=p, h_max=h_max, learning_rate=learning_rate, window=window)

    def init_fn(params):
        return _dal_init(params, learning_rate)

    def update_fn(updates, state, params=None, *, loss_fn=None, hvp_fn=None, **extra_args):
        del extra_args
        Hg = _update_hvp(updates, params, loss_fn, hvp_fn, hvp, fd_step)
        return _dal_update(updates, Hg, state, rule, flip_sign)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check_transform(p, learning_rate, h_max, window, hvp, fd_step) -> None:
    """:func:`scale_by_dal`'s ``ValueError`` for bad settings, when the transform is built."""
    if learning_rate is None:
        raise ValueError(
            "DAL: learning_rate is required (got None): it is the rate before the first update, when "
            "p = 0 and outside the window. Pass a positive number, e.g. learning_rate=0.1."
        )
    _check_config(p, h_max, learning_rate, window)
    if hvp not in HVP_METHODS:
        raise ValueError(f"DAL: hvp must be one of {HVP_METHODS}, got {hvp!r}.")
    if is_concrete(fd_step) and not (np.isfinite(fd_step) and fd_step > 0):
        raise ValueError(f"DAL: fd_step must be positive and finite, got {fd_step}.")


def _dal_init(params: PyTree, learning_rate) -> DALState:
    """The state before the first update: count 0, the fixed rate, ratio 0 (in the params' float dtype)."""
    dt = _float_dtype(params)
    return DALState(count=jnp.zeros([], jnp.int32), rate=jnp.asarray(learning_rate, dt),
                    ratio=jnp.zeros([], dt))


def _update_hvp(updates: PyTree, params: PyTree, loss_fn, hvp_fn, method: HVPMethod, fd_step) -> PyTree:
    """:math:`Hg` with ``g = updates`` at ``params``: ``hvp_fn`` as given, else from ``loss_fn``."""
    if params is None:
        raise ValueError("DAL: update needs params (the point where the gradient was taken).")
    if hvp_fn is not None:
        return hvp_fn(params, updates)
    if loss_fn is not None:
        return _hvp(loss_fn, params, updates, method, grad=updates, fd_step=fd_step)
    raise ValueError("DAL: update needs loss_fn=E (a function params -> scalar loss) or "
                     "hvp_fn=(params, v) -> Hv, to compute the Hessian-vector product Hg.")


def _dal_update(updates: PyTree, Hg: PyTree, state: DALState, rule: dict, flip_sign: bool):
    r"""One update of :func:`scale_by_dal`: :math:`g \mapsto \pm h_t g` and the next :class:`DALState`.
    ``rule`` holds ``p``, ``h_max``, ``learning_rate`` and ``window`` of :func:`dal_learning_rate`."""
    rate = dal_learning_rate(updates, Hg, rule["p"], rule["h_max"], learning_rate=rule["learning_rate"],
                             step=state.count, window=rule["window"])
    rate = rate.astype(state.rate.dtype)
    sign = -1.0 if flip_sign else 1.0
    new = jax.tree_util.tree_map(lambda u: (sign * rate).astype(u.dtype) * u, updates)
    ratio = drift_ratio(updates, Hg).astype(state.ratio.dtype)
    return new, DALState(count=optax.safe_increment(state.count), rate=rate, ratio=ratio)


def dal(
    p,
    learning_rate,
    h_max=5.0,
    *,
    window: tuple[int, int | None] | None = None,
    hvp: HVPMethod = "exact",
    fd_step: float = 0.01,
) -> optax.GradientTransformationExtraArgs:
    r"""Gradient descent with DAL-p as an optax optimiser: :math:`\theta_{t+1} = \theta_t - h_t\nabla E(\theta_t)`.

    .. math:: h_t = \min\!\Big(\frac{2}{(\|H\nabla E\|/\|\nabla E\|)^p},\ h_{\max}\Big)

    :func:`scale_by_dal` with ``flip_sign=True``; the state is a :class:`DALState`, so the rate
    chosen at the last step is ``state.rate``. Usage::

        opt = dal(p=1.0, learning_rate=0.1)
        state = opt.init(params)
        grads = jax.grad(E)(params)
        updates, state = opt.update(grads, state, params, loss_fn=E)
        params = optax.apply_updates(params, updates)

    Book: chapter 7, §DAL as an optax transformation.
    """
    return scale_by_dal(p, learning_rate, h_max, window=window, hvp=hvp, fd_step=fd_step, flip_sign=True)
