r"""The edge of stability: full-batch gradient descent on a network, with the sharpness tracked.

Gradient descent :math:`\theta_{n+1} = \theta_n - h\nabla E(\theta_n)` on a full-batch training loss
(:func:`pfcourse.models.full_batch_loss`), recording

* every step: the train loss :math:`E(\theta_n)`, the train accuracy, :math:`\lVert\nabla E\rVert`
  and the projection :math:`u_0^\top\nabla E(\theta_n)` on the most recently computed top
  eigenvector;
* every ``eig_every`` steps: the top-k Hessian eigenpairs :math:`(\lambda_i, u_i)` by Lanczos
  (:func:`pfcourse.spectral.top_hessian_eigenpairs`, warm-started from the previous ones), the
  projections :math:`u_i^\top\nabla E`, and the principal flow's reading of the top direction: its
  coefficient :math:`\alpha(h\lambda_0) = \log(1 - h\lambda_0)/(h\lambda_0)` and the factor by which
  the PF multiplies :math:`u_0^\top\nabla E` over one step, :math:`e^{h\lambda_0\alpha(h\lambda_0)} = 1 - h\lambda_0`
  (exact on a quadratic), next to the factor GD actually produced.

In outline (pseudocode; one learning rate)::

    u = random unit vectors (D, k)
    for n in range(steps + 1):
        if n % eig_every == 0:
            lam, u = lanczos(hvp at theta, start = u)           # top-k eigenpairs
            record lam, u.T @ grad E(theta), alpha(h lam[0]), 1 - h lam[0]
        loss, acc, g = E(theta), accuracy(theta), grad E(theta)
        record loss, acc, u[:, 0] @ g
        if acc >= goal or n == steps: stop
        if loss is not finite or loss > divergence_factor * loss_0: raise DivergenceError
        theta = theta - h * g

The training itself is :func:`pfcourse.training.train` with ``optax.sgd(h)``: the steps between two
eigen-solves run as one jit-compiled ``lax.scan`` (no Python per step); several learning rates run
side by side under ``vmap`` (their parameters stacked on a leading axis), each stopping on its own.
This module adds the experiment's reading: the PF's factors, the loss change along the top
direction, the settled sharpness, and the records as an :class:`EoSHistory`.

References: Cohen, Kaur, Li, Kolter, Talwalkar, ICLR 2021 [cohen2021gradient];
Rosca, Wu, Qin, Dherin, TMLR 2023 [rosca2023continuous].
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from . import models, spectral, training
from ._checks import check_finite, check_int
from .flows import DivergenceError, pf_coefficient
from .stability import pf_step_factor

PyTree = Any

__all__ = [
    "DivergenceError",
    "EoSHistory",
    "factor_check",
    "fit_check",
    "gd_edge_of_stability",
    "loss_change_along",
    "loss_change_check",
    "pf_projection_segments",
    "settled_sharpness",
    "UnstableGrowth",
    "unstable_growth",
]


class EoSHistory(NamedTuple):
    r"""What :func:`gd_edge_of_stability` records; ``R`` runs (learning rates), ``T = steps + 1``, ``M`` eigen-solves.

    Per-step arrays are ``NaN`` after a run stopped; per-solve ones too (and ``eig_step = -1``).

    Attributes:
        h: learning rates, shape ``(R,)``.
        loss, accuracy, grad_norm: per step, shape ``(R, T)``, at :math:`\theta_n` (before the step).
        projection: per step, :math:`u_0^\top\nabla E(\theta_n)` with the latest :math:`u_0`, ``(R, T)``.
        eig_step: step of each eigen-solve, ``(R, M)`` (``-1`` where none).
        eigenvalues: :math:`\lambda_0 \ge \dots \ge \lambda_{k-1}`, ``(R, M, k)``.
        eig_projections: :math:`u_i^\top\nabla E` at the solve, ``(R, M, k)``.
        pf_coefficient: :math:`\alpha(h\lambda_0)`, complex, ``(R, M)``.
        pf_factor: the PF's factor on :math:`u_0^\top\nabla E` over one step, :math:`1 - h\lambda_0`, ``(R, M)``.
        gd_factor: the factor GD produced, :math:`u_0^\top\nabla E(\theta_{n+1}) / u_0^\top\nabla E(\theta_n)`
            with the same :math:`u_0`, ``(R, M)``.
        stop_step: the last step of each run, ``(R,)``.
        status: per run, ``"goal"`` (accuracy goal reached), ``"steps"`` (ran all steps) or
            ``"diverged: ..."`` with the reason.
        params: final parameters of each run, stacked on a leading axis of length ``R``.
        eigenvectors: the last top-k eigenvectors, flat, ``(R, D, k)``.
        config: the settings of the run (a dict of plain values).
    """

    h: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    grad_norm: np.ndarray
    projection: np.ndarray
    eig_step: np.ndarray
    eigenvalues: np.ndarray
    eig_projections: np.ndarray
    pf_coefficient: np.ndarray
    pf_factor: np.ndarray
    gd_factor: np.ndarray
    stop_step: np.ndarray
    status: tuple
    params: PyTree
    eigenvectors: np.ndarray
    config: dict

    @property
    def sharpness(self) -> np.ndarray:
        """:math:`\\lambda_0` at each eigen-solve, ``(R, M)``."""
        return self.eigenvalues[..., 0]

    @property
    def steps(self) -> np.ndarray:
        """Step numbers ``0..T-1`` of the per-step arrays."""
        return np.arange(self.loss.shape[1])

    def run(self, i: int) -> dict:
        """The records of run ``i`` alone, trimmed to the steps and solves it made (a dict of arrays)."""
        T = int(self.stop_step[i]) + 1
        m = self.eig_step[i] >= 0
        return dict(
            h=float(self.h[i]), step=np.arange(T), loss=self.loss[i, :T], accuracy=self.accuracy[i, :T],
            grad_norm=self.grad_norm[i, :T], projection=self.projection[i, :T],
            eig_step=self.eig_step[i, m], eigenvalues=self.eigenvalues[i, m],
            sharpness=self.eigenvalues[i, m, 0], eig_projections=self.eig_projections[i, m],
            pf_coefficient=self.pf_coefficient[i, m], pf_factor=self.pf_factor[i, m],
            gd_factor=self.gd_factor[i, m], status=self.status[i],
        )

    def arrays(self) -> dict:
        """All numeric records as a dict of NumPy arrays (what :meth:`save` writes to ``.npz``)."""
        out = {k: np.asarray(getattr(self, k)) for k in (
            "h", "loss", "accuracy", "grad_norm", "projection", "eig_step", "eigenvalues",
            "eig_projections", "pf_coefficient", "pf_factor", "gd_factor", "stop_step")}
        out["status"] = np.asarray(self.status)
        return out

    def summary(self) -> list[dict]:
        """Per run: learning rate, status, final loss and accuracy, settled sharpness against :math:`2/h`."""
        rows = []
        for i, h in enumerate(self.h):
            r = self.run(i)
            lam = settled_sharpness(r["eig_step"], r["sharpness"], int(self.stop_step[i]))
            rows.append(dict(
                h=float(h), status=self.status[i], steps=int(self.stop_step[i]),
                final_loss=float(r["loss"][-1]), final_accuracy=float(r["accuracy"][-1]),
                max_sharpness=float(np.nanmax(r["sharpness"])) if r["sharpness"].size else float("nan"),
                settled_sharpness=lam, two_over_h=2.0 / float(h),
                settled_ratio=lam * float(h) / 2.0,
            ))
        return rows

    def save(self, folder: str | os.PathLike, name: str = "eos") -> dict:
        """Write ``name.npz`` (all arrays) and ``name.json`` (config, summary, per-run records) in ``folder``."""
        os.makedirs(folder, exist_ok=True)
        paths = {"npz": os.path.join(folder, f"{name}.npz"), "json": os.path.join(folder, f"{name}.json")}
        arrays = self.arrays()
        np.savez_compressed(paths["npz"], **arrays)

        def plain(v):
            v = np.asarray(v)
            if np.iscomplexobj(v):
                return {"real": plain(v.real), "imag": plain(v.imag)}
            return np.where(np.isfinite(v), v, None).tolist() if v.dtype.kind == "f" else v.tolist()

        runs = []
        for i in range(len(self.h)):
            r = self.run(i)
            runs.append({k: (plain(v) if isinstance(v, np.ndarray) else v) for k, v in r.items()})
        with open(paths["json"], "w") as f:
            json.dump({"config": self.config, "summary": self.summary(), "runs": runs}, f, indent=1,
                      default=lambda o: o.item() if hasattr(o, "item") else str(o))
        return paths


# --------------------------------------------------------------------------- the PF's reading


def loss_change_along(h, lam, projection) -> np.ndarray:
    r"""The loss change of one GD step from the motion along one eigen-direction, on the local quadratic.

    On :math:`E \approx E^* + \tfrac12(\theta - \theta^*)^\top H(\theta - \theta^*)` with :math:`Hu = \lambda u`,
    one step multiplies :math:`z = u^\top(\theta - \theta^*)` by :math:`1 - h\lambda` (eq. ``eq-eos-factor``),
    so the loss along :math:`u` changes by

    .. math:: \Delta E = \tfrac12\lambda z^2\big((1 - h\lambda)^2 - 1\big) = \tfrac12\lambda z^2\,h\lambda(h\lambda - 2),

    positive exactly when :math:`h\lambda > 2` (for :math:`\lambda > 0`). The unknown :math:`z` is
    eliminated with :math:`u^\top\nabla E = \lambda z`: in terms of the projection :math:`p = u^\top\nabla E`,
    :math:`\Delta E = \tfrac12 h p^2 (h\lambda - 2)`, which needs no division by :math:`\lambda`. On a
    quadratic the changes along all eigen-directions add up to the exact change of one GD step.

    Args:
        h: learning rate(s).
        lam: eigenvalue(s) :math:`\lambda`.
        projection: :math:`p = u^\top\nabla E`; the three are broadcast against each other (NumPy).

    Returns:
        :math:`\tfrac12 h p^2 (h\lambda - 2)`, float64.

    Book: chapter 6, §The loss increase, eq. ``eq-eos-loss-change``.
    """
    h = np.asarray(h, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)
    p = np.asarray(projection, dtype=np.float64)
    return 0.5 * h * p**2 * (h * lam - 2.0)


def loss_change_check(run: dict, edge: float = 2.0, top: int = 1) -> dict:
    r"""Test :func:`loss_change_along` on a recorded run: the step after each eigen-solve.

    At each solve :math:`n` (not the last step) the prediction is the top direction's term
    :math:`\tfrac12 h p^2 (h\lambda_0 - 2)` with :math:`p = u_0^\top\nabla E(\theta_n)`, and the
    measurement is :math:`E(\theta_{n+1}) - E(\theta_n)`. For the diagnosis, the other directions are
    added to first order in :math:`h`: :math:`-h(\lVert\nabla E\rVert^2 - p^2)` (their curvature and all
    third-order terms left out).

    With ``top = k > 1`` the prediction is the sum of the terms of the top ``k`` recorded eigenpairs,
    :math:`\sum_{i<k}\tfrac12 h p_i^2 (h\lambda_i - 2)`, and the rest and the share use
    :math:`\sum_{i<k} p_i^2`: where :math:`\lambda_0` and :math:`\lambda_1` nearly coincide, a few
    Lanczos iterations fix the plane of :math:`u_0, u_1` better than :math:`u_0` alone. The regimes
    are still split by :math:`h\lambda_0`.

    Args:
        run: one run of an :class:`EoSHistory` (``history.run(i)``).
        edge: the value of :math:`h\lambda_0` that separates the two regimes.
        top: how many of the recorded eigenpairs make the prediction (at most the run's ``k``).

    Returns:
        a dict with keys ``"before"`` (:math:`h\lambda_0 <` ``edge``) and ``"edge"`` (:math:`\ge`), each a
        dict: ``solves`` (how many; a step that left the loss unchanged is not counted), ``rose``
        (fraction of them after which the loss rose), ``sign`` (fraction where prediction and
        measurement have the same sign), ``size`` (median :math:`|{\rm predicted}|/|{\rm measured}|`),
        ``error`` (median :math:`|{\rm predicted} - {\rm measured}|/|{\rm measured}|`),
        ``error_with_rest`` (the same with the other directions' first-order term added), ``share``
        (median :math:`p^2/\lVert\nabla E\rVert^2`, the top direction's share of the gradient); the
        statistics are ``NaN`` where a regime has no solve. Also ``"per_solve"``: the arrays
        ``step, x`` (:math:`h\lambda_0`), ``predicted, measured, rest``.

    Book: chapter 6, §The loss increase.
    """
    h, loss = run["h"], np.asarray(run["loss"], dtype=np.float64)
    steps = np.asarray(run["eig_step"])
    keep = (steps >= 0) & (steps + 1 < loss.size)
    s = steps[keep]
    recorded = np.asarray(run["eig_projections"], dtype=np.float64)
    check_int(top, "top", minimum=1)
    if top > recorded.shape[1]:
        raise ValueError(f"top = {top} eigenpairs asked for, but the run recorded {recorded.shape[1]}.")
    lam = (np.asarray(run["sharpness"], dtype=np.float64)[:, None] if top == 1
           else np.asarray(run["eigenvalues"], dtype=np.float64)[:, :top])[keep]
    p = recorded[keep, :top]
    predicted = loss_change_along(h, lam, p).sum(axis=1)
    measured = loss[s + 1] - loss[s]
    grad2 = np.asarray(run["grad_norm"], dtype=np.float64)[s] ** 2
    p2 = np.sum(p**2, axis=1)
    rest = -h * (grad2 - p2)
    x = h * lam[:, 0]
    ok = np.isfinite(predicted) & np.isfinite(measured) & (measured != 0)

    def stats(sel):
        sel = sel & ok
        if not sel.any():
            return dict(solves=0, rose=np.nan, sign=np.nan, size=np.nan, error=np.nan, error_with_rest=np.nan,
                        share=np.nan)
        pr, me = predicted[sel], measured[sel]
        return dict(
            solves=int(sel.sum()), rose=float(np.mean(me > 0)), sign=float(np.mean(np.sign(pr) == np.sign(me))),
            size=float(np.median(np.abs(pr) / np.abs(me))), error=float(np.median(np.abs(pr - me) / np.abs(me))),
            error_with_rest=float(np.median(np.abs(pr + rest[sel] - me) / np.abs(me))),
            share=float(np.median(p2[sel] / grad2[sel])),
        )

    return dict(before=stats(x < edge), edge=stats(x >= edge),
                per_solve=dict(step=s, x=x, predicted=predicted, measured=measured, rest=rest))


def factor_check(E: Callable[[PyTree], jax.Array], params: PyTree, h: float, *, k: int = 2, num_iter: int = 20,
                 solves: int = 10, every: int = 20, key: jax.Array | None = None) -> dict:
    r"""Test the one-step factor :math:`1 - h\lambda_i` (eq. ``eq-eos-factor``) on the top direction alone
    and on the top ``k`` directions together, continuing gradient descent from ``params``.

    At each of ``solves`` points, ``every`` GD steps (rate ``h``) apart, the top-k eigenpairs
    :math:`(\lambda_i, u_i)` by Lanczos (``num_iter`` iterations, warm-started from the previous
    :math:`u_0`, as in training), the projections :math:`p_i = u_i^\top\nabla E(\theta_n)` and, with the
    same :math:`u_i`, :math:`p_i' = u_i^\top\nabla E(\theta_{n+1})`, and the relative error of the
    prediction :math:`p_i' = (1 - h\lambda_i)p_i`: on :math:`u_0` alone,
    :math:`|p_0' - (1 - h\lambda_0)p_0| / |(1 - h\lambda_0)p_0|` (what ``gd_factor`` against ``pf_factor``
    of an :class:`EoSHistory` measures), and on all ``k`` together,
    :math:`\lVert p' - (1 - h\Lambda)p\rVert / \lVert(1 - h\Lambda)p\rVert`. Where :math:`\lambda_0` and
    :math:`\lambda_1` nearly coincide, a few Lanczos iterations fix the plane of :math:`u_0, u_1` better
    than :math:`u_0` itself; the joint error does not depend on how the plane is split. In plain
    Python::

        for m in range(solves):
            lam, U = lanczos(hvp at theta, k, num_iter, start = U[:, 0])
            p, p_next = U.T @ grad E(theta), U.T @ grad E(theta - h grad E(theta))
            record h lam[0], (lam[0] - lam[1]) / lam[0], errors of p_next ~ (1 - h lam) p
            theta = theta after `every` GD steps

    Args:
        E: the loss ``E(params)`` (e.g. :func:`pfcourse.models.full_batch_loss`).
        params: where to start (e.g. a run's final parameters), any pytree.
        h: the learning rate.
        k, num_iter: eigenpairs per solve (``k >= 2``) and Lanczos iterations.
        solves, every: how many solves, and GD steps between two of them.
        key: PRNG key of the first Lanczos start (default ``jax.random.key(0)``).

    Returns:
        a dict of float64 arrays of shape ``(solves,)``: ``x`` (:math:`h\lambda_0`), ``gap``
        (:math:`(\lambda_0 - \lambda_1)/\lambda_0`), ``single`` and ``joint`` (the two errors),
        ``share`` (:math:`\sum_{i<k} p_i^2/\lVert\nabla E\rVert^2`).

    Book: chapter 6, §The principal flow's reading.
    """
    for name, value, lo in (("k", k, 2), ("num_iter", num_iter, 1), ("solves", solves, 1), ("every", every, 1)):
        check_int(value, name, minimum=lo)
    flat, unravel = ravel_pytree(params)
    E_flat = lambda f: E(unravel(f))  # noqa: E731
    grad = jax.jit(jax.grad(E_flat))
    solve = jax.jit(lambda f, v: spectral.top_hessian_eigenpairs(E_flat, f, k, num_iter, v0=v))
    advance = jax.jit(lambda f: jax.lax.fori_loop(0, every, lambda _, f: f - h * jax.grad(E_flat)(f), f))
    v = jax.random.normal(jax.random.key(0) if key is None else key, flat.shape, flat.dtype)
    rows = []
    for _ in range(solves):
        lam, U = solve(flat, v)
        g = grad(flat)
        p, p_next = (np.asarray(U.T @ a, np.float64) for a in (g, grad(flat - h * g)))
        lam = np.asarray(lam, np.float64)
        predicted = (1 - h * lam) * p
        rows.append((h * lam[0], (lam[0] - lam[1]) / lam[0], abs(p_next[0] - predicted[0]) / abs(predicted[0]),
                     np.linalg.norm(p_next - predicted) / np.linalg.norm(predicted),
                     np.sum(p**2) / float(jnp.sum(g.astype(jnp.float64) ** 2))))
        v, flat = U[:, 0], advance(flat)
    return dict(zip(("x", "gap", "single", "joint", "share"), np.asarray(rows, np.float64).T))


def settled_sharpness(eig_step, sharpness, stop_step: int, tail: float = 0.25) -> float:
    r"""The sharpness a run settled at: the median of :math:`\lambda_0` over the last ``tail`` of its steps.

    Book: chapter 6, §Sharpness at 2/h.
    """
    eig_step, sharpness = np.asarray(eig_step), np.asarray(sharpness)
    keep = (eig_step >= (1 - tail) * stop_step) & np.isfinite(sharpness)
    return float(np.median(sharpness[keep])) if keep.any() else float("nan")


def fit_check(history: EoSHistory, tolerance: float = 0.1) -> list[str]:
    """Lines stating, per run, whether the settled sharpness is within ``tolerance`` of ``2/h``."""
    lines = []
    for row in history.summary():
        ok = abs(row["settled_ratio"] - 1) <= tolerance
        lines.append(
            f"h = {row['h']:.4g}: settled sharpness {row['settled_sharpness']:.3f}, 2/h = {row['two_over_h']:.3f}, "
            f"ratio {row['settled_ratio']:.3f} ({'within' if ok else 'NOT within'} {tolerance:.0%})"
        )
    return lines


def pf_projection_segments(run: dict, start: int, stop: int) -> list[tuple[np.ndarray, np.ndarray]]:
    r"""The PF's prediction of :math:`|u_0^\top\nabla E|` between eigen-solves, as segments to plot.

    From each solve :math:`s_m` in ``[start, stop)`` on, until the next solve (or ``stop``, or the run's
    last step), the measured :math:`|p_{s_m}| = |u_0^\top\nabla E(\theta_{s_m})|` times the PF's factor
    per step (eq. ``eq-eos-factor``),

    .. math:: |p_n| \approx |p_{s_m}|\,|1 - h\lambda_0(s_m)|^{\,n - s_m}, \qquad s_m \le n < s_{m+1}.

    Args:
        run: one run of an :class:`EoSHistory` (``history.run(i)``).
        start, stop: the window of steps.

    Returns:
        a list of ``(steps, predicted)`` pairs of arrays, one per solve in the window.

    Book: chapter 6, §The principal flow's reading.
    """
    eig_step = np.asarray(run["eig_step"])
    solves = np.flatnonzero((eig_step >= start) & (eig_step < stop))
    last = int(run["step"][-1])
    segments = []
    for i, m in enumerate(solves):
        s0 = int(eig_step[m])
        s1 = min(int(eig_step[solves[i + 1]]) if i + 1 < len(solves) else stop, last)
        factor = abs(float(pf_step_factor(run["h"], run["sharpness"][m])))
        steps = np.arange(s0, s1)
        segments.append((steps, abs(run["projection"][s0]) * factor ** (steps - s0)))
    return segments


class UnstableGrowth(NamedTuple):
    r"""GD's growth along :math:`u_0` past the edge, against the PF's factor (:func:`unstable_growth`).

    Attributes:
        factor_gd: measured :math:`|c_{n+1}/c_n|`, :math:`c_n = u_0^\top\nabla E(\theta_n)`, ``(N - 1,)``.
        factor_pf: the PF's :math:`|1 - h\lambda_0(n)|`, ``(N - 1,)``.
        crossing: first index with :math:`h\lambda_0 > 2`.
        peak: index of the largest :math:`|c_n|` (the catapult).
        floor: the size of :math:`|c_n|` over the first ``floor_steps`` (when GD crosses :math:`2/h`).
        free: indices before ``peak - 2`` where :math:`|c_n|` exceeds ``dominance`` times ``floor``:
            where the unstable mode dominates.
        log_growth: :math:`\sum \log|1 - h\lambda_0|` from ``crossing`` to ``free[0]``, the PF's
            growth of the unstable mode before it dominates (``NaN`` if it never does).
    """

    factor_gd: np.ndarray
    factor_pf: np.ndarray
    crossing: int
    peak: int
    floor: float
    free: np.ndarray
    log_growth: float


def unstable_growth(h: float, sharpness, projection, floor_steps: int = 30, dominance: float = 30.0) -> UnstableGrowth:
    r"""Read GD's growth along the top direction step by step, against the PF's (and GD's linearisation's) factor.

    Given, at consecutive GD steps :math:`n`, the sharpness :math:`\lambda_0(n)` and the projection
    :math:`c_n = u_0(n)^\top\nabla E(\theta_n)` (e.g. from :func:`pfcourse.training.train` with
    ``eig_every=1``), compares the measured factor :math:`|c_{n+1}/c_n|` with
    :math:`|1 - h\lambda_0(n)|` (eq. ``eq-step-factors``), and finds where the unstable mode
    dominates: :math:`|c_n|` above ``dominance`` times its size when GD crossed :math:`2/h`, before
    the catapult (the largest :math:`|c_n|`).

    Returns:
        an :class:`UnstableGrowth`.

    Book: chapter 8, §The PF's reading of the onset.
    """
    lam0 = np.asarray(sharpness, dtype=np.float64)
    c = np.abs(np.asarray(projection, dtype=np.float64))
    factor_gd = c[1:] / c[:-1]
    factor_pf = np.abs(pf_step_factor(h, lam0[:-1]))
    crossing = int(np.argmax(h * lam0 > 2))
    peak = int(np.argmax(c))
    floor = float(np.max(c[:floor_steps]))
    free = np.flatnonzero((c[:-1] > dominance * floor) & (np.arange(c.size - 1) < peak - 2))
    log_growth = float(np.sum(np.log(factor_pf[crossing:free[0]]))) if free.size else float("nan")
    return UnstableGrowth(factor_gd, factor_pf, crossing, peak, floor, free, log_growth)


# --------------------------------------------------------------------------- training


def _memory_limit() -> float:
    """Bytes we allow one batch of runs to use: a quarter of device (or host) memory."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
        if "bytes_limit" in stats:
            return 0.25 * stats["bytes_limit"]
    except Exception:  # noqa: BLE001 - CPU backends may not report memory
        pass
    try:
        return 0.25 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4e9


def _bytes_per_run(n, widths, D, k, num_iter, itemsize, chunk):
    """A rough upper bound on one run's working memory: activations of forward, backward and HVP
    passes over ``chunk`` examples, plus the Lanczos basis."""
    return itemsize * (6 * min(n, chunk or n) * sum(widths) + (num_iter + k + 8) * D)


def gd_edge_of_stability(
    apply: Callable, params0: PyTree, x, y, h: float | Sequence[float], *, labels=None, loss: str = "square",
    steps: int = 1000, eig_every: int = 50, k: int = 2, num_iter: int = 20, accuracy_goal: float | None = None,
    divergence_factor: float = 1e3, on_divergence: str = "raise", chunk_size: int | None = None,
    max_parallel: int | None = None, key: jax.Array | None = None, progress: bool = True,
    callback: Callable[[dict], None] | None = None, vmap_solves: bool | None = None,
) -> EoSHistory:
    r"""Full-batch gradient descent :math:`\theta_{n+1} = \theta_n - h\nabla E(\theta_n)` with the sharpness tracked.

    Runs one or several learning rates from the same start through :func:`pfcourse.training.train` with
    ``optax.sgd(h)``, recording what the module docstring lists. A run stops when its train accuracy
    reaches ``accuracy_goal`` (its parameters are those of that step), after ``steps`` steps, or when it
    diverges: the loss is not finite, or exceeds ``divergence_factor`` times the initial loss.

    Args:
        apply: ``apply(params, x) -> outputs`` (e.g. :func:`pfcourse.models.mlp_apply`).
        params0: the start, any pytree (e.g. from :func:`pfcourse.models.init_mlp`).
        x, y: inputs ``(n, d)`` and targets (one-hot for the square loss), all used every step.
        h: a learning rate or a sequence of them.
        labels: integer labels for the accuracy (default: ``argmax`` of one-hot ``y``).
        loss: ``"square"`` or ``"cross_entropy"``.
        steps, eig_every, k, num_iter, accuracy_goal, divergence_factor: as in
            :class:`~pfcourse.training.TrainConfig` (most steps per run; steps between eigen-solves;
            top eigenpairs; Lanczos iterations per solve; stop at this train accuracy; a loss above
            this multiple of the initial loss counts as divergence).
        on_divergence: ``"raise"`` a :class:`~pfcourse.flows.DivergenceError` (after all runs
            finish), or ``"stop"`` the run and record why in ``status``.
        chunk_size: examples per chunk in the loss (bounds memory; see :func:`~pfcourse.models.full_batch_loss`).
        max_parallel: most learning rates run together under ``vmap`` (default: as many as a
            quarter of the device memory allows; ``1`` runs them one after the other).
        key, progress: PRNG key of the first Lanczos start vectors; show a ``tqdm`` bar.
        callback: called after every chunk with a dict ``step, loss, accuracy, sharpness, h`` (NumPy).
        vmap_solves: eigen-solves under ``vmap`` or one run after the other (default: by backend).

    Returns: an :class:`EoSHistory`.

    Raises:
        ValueError: bad settings (non-positive ``h``, ``k > num_iter``, mismatched data ...).
        DivergenceError: with ``on_divergence="raise"``, naming the run, the step and the reason.

    References: Cohen et al., ICLR 2021 [cohen2021gradient]; Rosca et al., TMLR 2023 [rosca2023continuous].

    Book: chapter 6, §The experiment.
    """
    hs = _learning_rates(h)
    config = training.TrainConfig(steps, eig_every, k, num_iter, accuracy_goal=accuracy_goal,
                                  divergence_factor=divergence_factor, vmap_solves=vmap_solves)
    if on_divergence not in ("raise", "stop"):
        raise ValueError(f"on_divergence must be 'raise' or 'stop', got {on_divergence!r}.")
    check_finite(params0, "params0")
    objective = _objective(apply, x, y, labels, loss, chunk_size)
    key = jax.random.key(0) if key is None else key
    records = [_train_group(objective, params0, group, config, jax.random.fold_in(key, gi), progress, callback)
               for gi, group in enumerate(_groups(hs, max_parallel, objective, params0, config))]
    hist = _assemble(hs, records, _settings(hs, loss, config, objective, params0, records))
    failed = [(hh, s) for hh, s in zip(hist.h, hist.status) if s.startswith("diverged")]
    if failed and on_divergence == "raise":
        raise DivergenceError("; ".join(f"GD with h = {hh:.4g} {s}" for hh, s in failed)
                              + ". Lower h, or pass on_divergence='stop' to keep the records.")
    return hist


def _learning_rates(h) -> np.ndarray:
    hs = np.atleast_1d(np.asarray(h, dtype=np.float64))
    if hs.ndim != 1 or hs.size == 0 or not np.all(np.isfinite(hs)) or np.any(hs <= 0):
        raise ValueError(f"h must be a positive learning rate or a non-empty sequence of them, got {h!r}.")
    return hs


def _train_group(objective, params0, hs, config, key, progress, callback) -> training.TrainRecord:
    """The learning rates ``hs`` side by side: :func:`pfcourse.training.train` with ``optax.sgd``."""
    report = None if callback is None else (lambda r: callback(dict(
        step=r.step, h=hs, loss=r.loss, accuracy=r.accuracy, sharpness=r.sharpness)))
    dtype = ravel_pytree(params0)[0].dtype
    return training.train(objective, params0, optax.sgd, config, hyperparams=jnp.asarray(hs, dtype), key=key,
                          callback=report, progress="GD (edge of stability)" if progress else False)


def _settings(hs, loss, config, objective, params0, records) -> dict:
    """The run's settings and timings as plain values (``EoSHistory.config``, saved to JSON)."""
    flat0 = ravel_pytree(params0)[0]
    return dict(
        h=[float(v) for v in hs], loss=loss, steps=config.steps, eig_every=config.eig_every, k=config.k,
        num_iter=min(config.num_iter, flat0.shape[0]), accuracy_goal=config.accuracy_goal,
        divergence_factor=config.divergence_factor, num_params=int(flat0.shape[0]), num_examples=int(objective.n),
        dtype=str(np.dtype(flat0.dtype)), backend=jax.default_backend(),
        matmul_precision=str(jax.config.jax_default_matmul_precision),
        time_gd_s=sum(r.time_steps_s for r in records), time_eig_s=sum(r.time_probes_s for r in records),
        eigen_solves=sum(r.probes for r in records),
    )


def _objective(apply, x, y, labels, loss, chunk_size) -> models.FullBatchLoss:
    """The full-batch loss and accuracy of ``apply`` on ``(x, y)``, checked."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    if labels is None:
        if y.ndim != 2:
            raise ValueError("pass labels= (integer classes) when y is not one-hot.")
        labels = jnp.argmax(y, axis=1)
    labels = jnp.asarray(labels)
    if not (x.shape[0] == y.shape[0] == labels.shape[0]):
        raise ValueError(f"x, y and labels must have the same number of examples, got {x.shape[0]}, {y.shape[0]}, {labels.shape[0]}.")
    return models.loss_and_accuracy(apply, x, y, labels, loss, chunk_size)


def _groups(hs, max_parallel, objective, params0, config) -> list[np.ndarray]:
    """The learning rates in batches that fit in memory (at most ``max_parallel`` each)."""
    flat0 = ravel_pytree(params0)[0]
    out_dim = jax.eval_shape(objective.apply, params0, objective.x[:1]).shape[-1] if objective.chunk_size is None \
        else jax.eval_shape(objective.apply, params0, objective.x[0, :1]).shape[-1]
    widths = [int(leaf.shape[-1]) for leaf in jax.tree_util.tree_leaves(params0) if np.ndim(leaf) == 2] or [out_dim]
    d_in = objective.x.shape[-1]
    per_run = _bytes_per_run(objective.n, [d_in] + widths, flat0.shape[0], config.k, config.num_iter,
                             np.dtype(flat0.dtype).itemsize, objective.chunk_size)
    if max_parallel is None:
        max_parallel = max(1, int(_memory_limit() // max(per_run, 1)))
    else:
        check_int(max_parallel, "max_parallel", hint="It is the most learning rates run side by side (vmap).")
    return [hs[i : i + max_parallel] for i in range(0, hs.size, int(max_parallel))]


def _concat(parts: list[np.ndarray], fill) -> np.ndarray:
    """Concatenate per-group arrays ``(R_g, M_g, ...)`` on axis 0, padding axis 1 to the largest ``M_g``."""
    M = max(p.shape[1] for p in parts)
    return np.concatenate([np.pad(p, [(0, 0), (0, M - p.shape[1])] + [(0, 0)] * (p.ndim - 2), constant_values=fill)
                           for p in parts])


def _assemble(hs, records: list[training.TrainRecord], config) -> EoSHistory:
    """One :class:`EoSHistory` from the groups' records, with the PF's reading of each solve."""
    cat = lambda name: np.concatenate([getattr(r, name) for r in records])  # noqa: E731
    loss, projection, stop = cat("loss"), cat("projection"), cat("stop_step")
    eig_step = _concat([r.probe_step for r in records], -1)
    lam = _concat([r.eigenvalues for r in records], np.nan)
    hcol = hs[:, None]
    with np.errstate(invalid="ignore"):
        x = hcol * lam[..., 0]
        alpha = np.where(np.isfinite(x), np.asarray(pf_coefficient(jnp.asarray(np.nan_to_num(x)))), np.nan)
        factor = np.where(np.isfinite(x), pf_step_factor(hcol, np.nan_to_num(lam[..., 0])), np.nan)
    gd_factor = np.full(eig_step.shape, np.nan)
    for r, m in zip(*np.nonzero((eig_step >= 0) & (eig_step < stop[:, None]))):
        s = eig_step[r, m]
        with np.errstate(divide="ignore", invalid="ignore"):
            gd_factor[r, m] = projection[r, s + 1] / projection[r, s]
    diverged = cat("diverged")
    status = tuple(_status(hs[r], diverged[r], stop[r], eig_step[r], lam[r], loss[r], config) for r in range(hs.size))
    params = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *[r.params for r in records])
    return EoSHistory(
        h=hs, loss=loss, accuracy=cat("accuracy"), grad_norm=cat("grad_norm"), projection=projection,
        eig_step=eig_step, eigenvalues=lam, eig_projections=_concat([r.eig_projections for r in records], np.nan),
        pf_coefficient=alpha, pf_factor=factor, gd_factor=gd_factor, stop_step=stop, status=status,
        params=params, eigenvectors=cat("eigenvectors"), config=config,
    )


def _status(h, diverged, stop, eig_step, lam, loss, config) -> str:
    if diverged:
        n = int(stop)
        l_n = loss[n] if n < loss.size else np.nan
        why = (f"the loss is not finite ({l_n})" if not np.isfinite(l_n)
               else f"the loss {l_n:.4g} exceeds {config['divergence_factor']:g} x the initial loss {loss[0]:.4g}")
        seen = (eig_step >= 0) & (eig_step <= n) & np.isfinite(lam[:, 0])
        if seen.any():
            m = np.flatnonzero(seen)[-1]
            lam0 = float(lam[m, 0])
            why += (f"; the last sharpness measured (step {int(eig_step[m])}) was lambda_0 = {lam0:.4g}, "
                    f"h*lambda_0 = {h * lam0:.3g}" + (" > 2: GD is unstable along u_0" if h * lam0 > 2 else "")
                    + f" (2/lambda_0 = {2 / lam0:.3g})" if lam0 > 0 else "")
        return f"diverged at step {n}: {why}"
    if config["accuracy_goal"] is not None and stop < config["steps"]:
        return "goal"
    return "steps"
