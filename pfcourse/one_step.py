r"""One step of gradient descent against the flows that model it, on a real network (appendix B).

From an iterate :math:`\theta_n` of GD, each flow is integrated for time :math:`h` (one step) and
compared with the next iterate :math:`\theta_{n+1} = \theta_n - h\nabla E(\theta_n)`:

.. math:: \text{one-step error} = \frac{\|\operatorname{Re}\varphi_h(\theta_n) - \theta_{n+1}\|}{\|\theta_{n+1} - \theta_n\|},

:math:`\varphi_h` the time-:math:`h` flow of gradient flow (NGF), of IGR, or of the principal flow
(PF, complex state, its field by Lanczos: :func:`pfcourse.krylov.principal_flow_krylov`). The PF's
imaginary part at :math:`t = h`, :math:`\|\operatorname{Im}\varphi_h(\theta_n)\|/\|\theta_{n+1} - \theta_n\|`,
vanishes on a quadratic (chapter 3) and measures here how far the network is from one.

======================================  ===================================================  ==========
function                                computes                                             book
======================================  ===================================================  ==========
:func:`one_step_errors`                 the table above at a list of iterates                appendix B
:func:`digits_edge_run`                 a GD run of a tanh MLP on digits, sharpness tracked  appendix B
======================================  ===================================================  ==========
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import data, flows, krylov, models, spectral
from ._checks import check_int, check_learning_rate

PyTree = Any
FLOWS = ("NGF", "IGR", "PF")

__all__ = ["FLOWS", "digits_edge_run", "one_step_errors"]


def _flow_maps(E_flat: Callable, h: float, substeps: int, num_iter: int) -> dict:
    """``{name: x -> state at t = h}`` by :func:`pfcourse.flows.integrate` (RK4, ``substeps`` steps; the
    fields are Modules, so each compiles once for all starts). The PF's map, from a complex state with
    its Krylov field at the fixed dimension ``num_iter``, returns the results of ``substeps`` and
    ``substeps // 2`` steps."""
    ts = jnp.array([0.0, h])
    pf = krylov.principal_flow_krylov(E_flat, h, num_iter=num_iter, tol=None)

    def at_h(field, n):
        return lambda x: flows.integrate(field, x, ts, method="rk4", substeps=n)[-1]

    maps = {"NGF": at_h(flows.gradient_flow(E_flat), substeps), "IGR": at_h(flows.igr_flow(E_flat, h), substeps)}
    maps["PF"] = lambda x: (at_h(pf, substeps)(x), at_h(pf, substeps // 2)(x))
    return maps


def one_step_errors(
    E: Callable[[PyTree], jax.Array],
    thetas: Sequence[PyTree],
    h: float,
    *,
    substeps: int = 16,
    num_iter: int = 100,
    tol: float = 1e-6,
) -> dict[str, np.ndarray]:
    r"""The one-step error of gradient flow, IGR and the PF against GD, from each of ``thetas``.

    For each :math:`\theta_n` in ``thetas``: :math:`\theta_{n+1} = \theta_n - h\nabla E(\theta_n)`, and each
    flow integrated for time :math:`h` (:func:`pfcourse.flows.integrate`, RK4 with ``substeps`` steps).
    The PF runs with a complex state and its field :math:`f(H)\nabla E` by Lanczos
    (:func:`pfcourse.krylov.principal_flow_krylov`) at one Krylov dimension :math:`m` for all starts:
    the smallest multiple of 5 at which the
    a-posteriori estimate at every :math:`\theta_n` is within ``tol`` (at most ``num_iter``), plus 5.
    The estimate is checked again at the PF's end states (complex), and the RK4 error of the PF is
    estimated by Richardson extrapolation from ``substeps`` and ``substeps // 2`` steps
    (:math:`|y_N - y_{N/2}|/15`, RK4 being of order 4). Book: appendix B, §The PF on a real network.

    Args:
        E: scalar loss of a pytree (analytic, e.g. a ``tanh`` network with the square loss).
        thetas: the starting iterates, a sequence of pytrees (or of flat vectors).
        h: the learning rate of the GD step.
        substeps: RK4 steps over ``[0, h]``, even (16 resolve the edge of stability of the book's
            network, where the component along :math:`u_0` turns by :math:`\pi`; 8 do not).
        num_iter, tol: the largest Krylov dimension and the field's relative accuracy.

    Returns:
        A dict of arrays, one entry per start: ``"NGF"``, ``"IGR"``, ``"PF"``: the one-step errors
        :math:`\|\operatorname{Re}\varphi_h(\theta_n) - \theta_{n+1}\|/\|\theta_{n+1} - \theta_n\|`;
        ``"PF_imag"``: :math:`\|\operatorname{Im}\varphi_h(\theta_n)\|/\|\theta_{n+1} - \theta_n\|`;
        ``"PF_rk4_error"``, ``"PF_imag_rk4_error"``: the Richardson estimates of the integration errors
        of the PF's real and imaginary parts, same scale;
        ``"h_sharpness"``: :math:`h\lambda_0(\theta_n)` (Lanczos); ``"krylov_error_start"``,
        ``"krylov_error_end"``: the estimate of the field's relative error at :math:`\theta_n` and at the
        PF's end state; ``"cut_distance_end"``: the smallest :math:`|\operatorname{Re}(1 - h\theta_i)|`
        over Ritz values :math:`\theta_i` at the end state below the real axis (the "side" cut is
        :math:`\operatorname{Re} w = 0, \operatorname{Im} w < 0`); ``"singular_distance_end"``: the smallest
        :math:`|1 - h\theta_i|` there (the coefficient is singular at 0); ``"krylov_dim"``: :math:`m`;
        ``"seconds"``: the PF's time per start (compiled); ``"PF_end"``: the PF's state at
        :math:`t = h` (``substeps`` RK4 steps), flat and complex, shape ``(len(thetas), D)``.
    """
    check_learning_rate(h)
    check_int(substeps, "substeps", minimum=2, hint="It is the number of RK4 steps over one GD step.")
    if substeps % 2:
        raise ValueError(f"substeps must be even (the RK4 error is estimated from substeps // 2), got {substeps}.")
    if not thetas:
        raise ValueError("thetas is empty: pass at least one iterate of GD.")
    unravel = ravel_pytree(thetas[0])[1]
    E_flat = lambda x: E(unravel(x))  # noqa: E731
    xs = [ravel_pytree(theta)[0] for theta in thetas]
    probe = jax.jit(lambda x: _probe(E_flat, x, h, num_iter, tol))
    start = [probe(x) for x in xs]
    m = min(num_iter, 5 + 5 * -(-max(int(p[1]) for p in start) // 5))
    maps = _flow_maps(E_flat, h, substeps, m)
    rows = [_one_row(E_flat, x, h, maps, probe) for x in xs]
    out = {k: np.array([row[k] for row in rows]) for k in rows[0]}
    out.update(h_sharpness=h * np.array([float(p[0]) for p in start]), krylov_error_start=np.array(
        [float(p[2]) for p in start]), krylov_dim=np.full(len(xs), m))
    return out


def _one_row(E_flat: Callable, x: jax.Array, h: float, maps: dict, probe: Callable) -> dict:
    """The entries of :func:`one_step_errors` for one start ``x`` (flat)."""
    step = np.asarray(-h * jax.grad(E_flat)(x))
    scale, target = np.linalg.norm(step), np.asarray(x) + step
    row = {name: np.linalg.norm(np.asarray(maps[name](x)) - target) / scale for name in ("NGF", "IGR")}
    clock = time.perf_counter()
    y, y_half = jax.block_until_ready(maps["PF"](x.astype(complex)))
    row["seconds"] = time.perf_counter() - clock
    y, y_half = np.asarray(y), np.asarray(y_half)
    end = probe(jnp.asarray(y))
    row.update(PF=np.linalg.norm(y.real - target) / scale, PF_imag=np.linalg.norm(y.imag) / scale,
               PF_rk4_error=np.linalg.norm((y - y_half).real) / 15 / scale,
               PF_imag_rk4_error=np.linalg.norm((y - y_half).imag) / 15 / scale,
               krylov_error_end=float(end[2]), cut_distance_end=float(end[3]),
               singular_distance_end=float(end[4]), PF_end=y)
    return row


def _probe(E_flat: Callable, x: jax.Array, h: float, num_iter: int, tol: float):
    r"""``(lambda_0, Krylov dimension, error estimate, distance to the cut, min |w_i|)`` of the PF field at ``x``
    (real or complex): ``lambda_0`` is the top eigenvalue of the real part's Hessian, the distance is
    :math:`\min |\operatorname{Re} w_i|` over Ritz values with :math:`w_i = 1 - h\theta_i`,
    :math:`\operatorname{Im} w_i < 0` (``inf`` if none): how close the "side" branch's cut came."""
    lam0 = spectral.top_hessian_eigenpairs(E_flat, x.real, k=1, num_iter=min(40, x.size))[0][0]
    alpha = lambda lam: flows.pf_coefficient(h * lam)  # noqa: E731
    _, info = krylov.hessian_function_times(E_flat, x, jax.grad(E_flat, holomorphic=jnp.iscomplexobj(x))(x),
                                            alpha, num_iter, tol=tol, return_info=True)
    w = 1 - h * info.ritz_values  # the "side" branch's cut is Re w = 0, Im w < 0
    cut = jnp.min(jnp.where(w.imag < 0, jnp.abs(w.real), jnp.inf))
    return lam0, info.iterations, info.error_estimate, cut, jnp.min(jnp.abs(w))


def digits_edge_run(
    h: float = 0.5,
    steps: int = 600,
    widths: Sequence[int] = (16,),
    n_train: int = 256,
    seed: int = 0,
    eig_every: int = 25,
) -> dict:
    r"""Full-batch GD on scikit-learn digits with a ``tanh`` MLP and the square loss, in float64.

    :math:`\theta_{n+1} = \theta_n - h\nabla E(\theta_n)` from PyTorch's default initialisation
    (:func:`pfcourse.models.init_mlp`), ``64 -> widths -> 10``, the first ``n_train`` shuffled digits;
    the sharpness :math:`\lambda_0` by Lanczos (:func:`pfcourse.spectral.top_hessian_eigenpairs`)
    every ``eig_every`` steps. Small enough to run in seconds on a CPU; it reaches the edge of
    stability :math:`h\lambda_0 \approx 2` at the default settings. Needs ``jax_enable_x64``.
    Book: appendix B, §The PF on a real network.

    Returns:
        ``{"loss": E over pytrees, "iterates": list of pytrees (steps + 1), "eig_steps": (M,),
        "h_sharpness": h * lambda_0 at those steps (M,), "train_loss": (steps + 1,), "h": h}``.
    """
    check_learning_rate(h)
    check_int(steps, "steps", minimum=1)
    check_int(eig_every, "eig_every")
    if not jax.config.jax_enable_x64:
        raise ValueError("digits_edge_run computes in float64: call jax.config.update('jax_enable_x64', True) first.")
    ds = data.load_digits(n_train=n_train, n_test=0, seed=seed, dtype=np.float64)
    params = models.init_mlp(jax.random.key(seed), [ds.input_dim, *widths, ds.num_classes], "tanh")
    E = models.full_batch_loss(models.mlp_apply("tanh"), ds.x_train, ds.y_train)
    flat0, unravel = ravel_pytree(params)
    E_flat = lambda x: E(unravel(x))  # noqa: E731
    its = flows.gradient_descent(E_flat, flat0, h, steps)
    eig_steps = np.arange(0, steps + 1, eig_every)
    sharp = jax.jit(jax.vmap(lambda x: spectral.top_hessian_eigenpairs(E_flat, x, k=1, num_iter=min(40, x.size))[0][0]))
    return {"loss": E, "iterates": [unravel(x) for x in its], "eig_steps": eig_steps,
            "h_sharpness": h * np.asarray(sharp(its[eig_steps])), "train_loss": np.asarray(jax.vmap(E_flat)(its)),
            "h": h}
