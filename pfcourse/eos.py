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

In plain Python (one learning rate)::

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

The steps between two eigen-solves run as one jit-compiled ``lax.scan`` (no Python per step);
several learning rates run side by side under ``vmap`` (their parameters stacked on a leading
axis), each stopping on its own.

References: Cohen, Kaur, Li, Kolter, Talwalkar, ICLR 2021 [cohen2021gradient];
Rosca, Wu, Qin, Dherin, TMLR 2023 [rosca2023continuous].
"""
from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import models, spectral
from ._checks import check_finite, check_int
from .flows import DivergenceError, pf_coefficient
from .stability import pf_step_factor

PyTree = Any

__all__ = [
    "DivergenceError",
    "EoSHistory",
    "fit_check",
    "gd_edge_of_stability",
    "loss_change_along",
    "loss_change_check",
    "settled_sharpness",
]


#: Run the eigen-solves of several learning rates under ``vmap`` (``True``), one after the other
#: (``False``), or by backend (``None``: vmapped on accelerators, sequential on CPU).
VMAP_SOLVES: bool | None = None


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


def loss_change_check(run: dict, edge: float = 2.0) -> dict:
    r"""Test :func:`loss_change_along` on a recorded run: the step after each eigen-solve.

    At each solve :math:`n` (not the last step) the prediction is the top direction's term
    :math:`\tfrac12 h p^2 (h\lambda_0 - 2)` with :math:`p = u_0^\top\nabla E(\theta_n)`, and the
    measurement is :math:`E(\theta_{n+1}) - E(\theta_n)`. For the diagnosis, the other directions are
    added to first order in :math:`h`: :math:`-h(\lVert\nabla E\rVert^2 - p^2)` (their curvature and all
    third-order terms left out).

    Args:
        run: one run of an :class:`EoSHistory` (``history.run(i)``).
        edge: the value of :math:`h\lambda_0` that separates the two regimes.

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
    lam0 = np.asarray(run["sharpness"], dtype=np.float64)[keep]
    p = np.asarray(run["eig_projections"], dtype=np.float64)[keep, 0]
    predicted = loss_change_along(h, lam0, p)
    measured = loss[s + 1] - loss[s]
    grad2 = np.asarray(run["grad_norm"], dtype=np.float64)[s] ** 2
    rest = -h * (grad2 - p**2)
    x = h * lam0
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
            share=float(np.median(p[sel] ** 2 / grad2[sel])),
        )

    return dict(before=stats(x < edge), edge=stats(x >= edge),
                per_solve=dict(step=s, x=x, predicted=predicted, measured=measured, rest=rest))


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
            f"h*lambda_0/2 = {row['settled_ratio']:.3f} ({'within' if ok else 'NOT within'} {tolerance:.0%})"
        )
    return lines


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
    apply: Callable,
    params0: PyTree,
    x,
    y,
    h: float | Sequence[float],
    *,
    labels=None,
    loss: str = "square",
    steps: int = 1000,
    eig_every: int = 50,
    k: int = 2,
    num_iter: int = 20,
    accuracy_goal: float | None = None,
    divergence_factor: float = 1e3,
    on_divergence: str = "raise",
    chunk_size: int | None = None,
    max_parallel: int | None = None,
    key: jax.Array | None = None,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
) -> EoSHistory:
    r"""Full-batch gradient descent :math:`\theta_{n+1} = \theta_n - h\nabla E(\theta_n)` with the sharpness tracked.

    Runs one or several learning rates from the same start, recording what the module docstring
    lists. A run stops when its train accuracy reaches ``accuracy_goal`` (the parameters are those
    at the step where it did), after ``steps`` steps, or when it diverges: the loss is not finite,
    or exceeds ``divergence_factor`` times the initial loss.

    Args:
        apply: ``apply(params, x) -> outputs`` (e.g. :func:`pfcourse.models.mlp_apply`).
        params0: the start, any pytree (e.g. from :func:`pfcourse.models.init_mlp`).
        x, y: inputs ``(n, d)`` and targets (one-hot for the square loss), all used every step.
        h: a learning rate or a sequence of them.
        labels: integer labels for the accuracy (default: ``argmax`` of one-hot ``y``).
        loss: ``"square"`` or ``"cross_entropy"``.
        steps: the most GD steps per run.
        eig_every: steps between eigen-solves (each runs as one compiled scan).
        k: number of top eigenpairs (``k >= 1``).
        num_iter: Lanczos iterations per solve (the Krylov dimension).
        accuracy_goal: stop a run once its train accuracy is at least this (e.g. ``0.99``).
        divergence_factor: a loss above this multiple of the initial loss counts as divergence.
        on_divergence: ``"raise"`` a :class:`~pfcourse.flows.DivergenceError` (after all runs
            finish), or ``"stop"`` the run and record why in ``status``.
        chunk_size: examples per chunk in the loss (bounds memory; see :func:`~pfcourse.models.full_batch_loss`).
        max_parallel: most learning rates run together under ``vmap`` (default: as many as a
            quarter of the device memory allows; ``1`` runs them one after the other).
        key: PRNG key of the first Lanczos start vectors.
        progress: show a ``tqdm`` bar.
        callback: called after every chunk with a dict ``step, loss, accuracy, sharpness, h`` (NumPy).

    Returns:
        an :class:`EoSHistory`.

    Raises:
        ValueError: bad settings (non-positive ``h``, ``k > num_iter``, mismatched data ...).
        DivergenceError: with ``on_divergence="raise"``, naming the run, the step and the reason.

    References:
        Cohen et al., ICLR 2021 [cohen2021gradient]; Rosca et al., TMLR 2023 [rosca2023continuous].

    Book: chapter 6, §The experiment.
    """
    hs = np.atleast_1d(np.asarray(h, dtype=np.float64))
    if hs.ndim != 1 or hs.size == 0 or not np.all(np.isfinite(hs)) or np.any(hs <= 0):
        raise ValueError(f"h must be a positive learning rate or a non-empty sequence of them, got {h!r}.")
    for name, val, lo in (("steps", steps, 0), ("eig_every", eig_every, 1), ("k", k, 1), ("num_iter", num_iter, 1)):
        check_int(val, name, minimum=lo)
    if k > num_iter:
        raise ValueError(f"k = {k} eigenpairs need num_iter >= k Lanczos iterations, got num_iter = {num_iter}.")
    if on_divergence not in ("raise", "stop"):
        raise ValueError(f"on_divergence must be 'raise' or 'stop', got {on_divergence!r}.")
    if accuracy_goal is not None and not 0 < accuracy_goal <= 1:
        raise ValueError(f"accuracy_goal must be in (0, 1], got {accuracy_goal!r}.")
    if not divergence_factor > 1:
        raise ValueError(f"divergence_factor must be > 1, got {divergence_factor!r}.")
    check_finite(params0, "params0")
    x, y = jnp.asarray(x), jnp.asarray(y)
    if labels is None:
        if y.ndim != 2:
            raise ValueError("pass labels= (integer classes) when y is not one-hot.")
        labels = jnp.argmax(y, axis=1)
    labels = jnp.asarray(labels)
    if not (x.shape[0] == y.shape[0] == labels.shape[0]):
        raise ValueError(f"x, y and labels must have the same number of examples, got {x.shape[0]}, {y.shape[0]}, {labels.shape[0]}.")

    flat0, unravel = ravel_pytree(params0)
    D = flat0.shape[0]
    if k > D:
        raise ValueError(f"k = {k} eigenpairs but the model has only {D} parameters.")
    num_iter = min(int(num_iter), D)
    steps, eig_every = int(steps), int(eig_every)
    dtype = flat0.dtype
    out_dim = jax.eval_shape(apply, params0, x[:1]).shape[-1]
    models.loss_and_accuracy(apply, x[:1], y[:1], labels[:1], loss, chunk_size)  # checks the settings
    leaves, treedef = jax.tree_util.tree_flatten(params0)
    structure = (treedef, tuple((jnp.shape(v), jnp.result_type(v)) for v in leaves))
    gd_chunk_v, eig_solve_v, loss_and_acc_j = _compiled(apply, loss, chunk_size, eig_every, k, num_iter, structure)
    batch = (x, y, labels)
    gd_chunk_v = functools.partial(gd_chunk_v, batch)
    eig_solve_v = functools.partial(eig_solve_v, batch)
    loss_and_acc = functools.partial(loss_and_acc_j, batch)

    # ---- batches of runs that fit in memory
    widths = [int(leaf.shape[-1]) for leaf in jax.tree_util.tree_leaves(params0) if np.ndim(leaf) == 2] or [out_dim]
    per_run = _bytes_per_run(x.shape[0], [x.shape[1]] + widths, D, k, num_iter, np.dtype(dtype).itemsize, chunk_size)
    if max_parallel is None:
        max_parallel = max(1, int(_memory_limit() // max(per_run, 1)))
    else:
        check_int(max_parallel, "max_parallel", hint="It is the most learning rates run side by side (vmap).")
    groups = [hs[i : i + max_parallel] for i in range(0, hs.size, int(max_parallel))]

    key = jax.random.key(0) if key is None else key
    results = []
    total = hs.size * (steps + 1)
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="GD (edge of stability)", disable=not progress, leave=False) as bar:
        for gi, group in enumerate(groups):
            results.append(_run_group(
                group, flat0, dtype, D, steps, eig_every, k, gd_chunk_v, eig_solve_v, loss_and_acc,
                divergence_factor, accuracy_goal, jax.random.fold_in(key, gi), bar, callback))

    hist = _assemble(hs, results, unravel, dict(
        h=[float(v) for v in hs], loss=loss, steps=steps, eig_every=eig_every, k=k, num_iter=num_iter,
        accuracy_goal=accuracy_goal, divergence_factor=divergence_factor, num_params=D,
        num_examples=int(x.shape[0]), dtype=str(np.dtype(dtype)), backend=jax.default_backend(),
        matmul_precision=str(jax.config.jax_default_matmul_precision),
        time_gd_s=sum(r[6]["gd"] for r in results), time_eig_s=sum(r[6]["eig"] for r in results),
        eigen_solves=sum(r[6]["solves"] for r in results),
    ))
    if on_divergence == "raise":
        failed = [(hh, s) for hh, s in zip(hist.h, hist.status) if s.startswith("diverged")]
        if failed:
            raise DivergenceError("; ".join(f"GD with h = {hh:.4g} {s}" for hh, s in failed)
                                  + ". Lower h, or pass on_divergence='stop' to keep the records.")
    return hist


@functools.lru_cache(maxsize=32)
def _compiled(apply, loss, chunk_size, eig_every, k, num_iter, structure):
    """The jit-compiled pieces for one model and setting, cached so that repeated runs (several
    calls, several learning rates) compile once. Data travel as arguments, not constants."""
    treedef, specs = structure
    template = jax.tree_util.tree_unflatten(treedef, [jnp.zeros(shape, dtype) for shape, dtype in specs])
    flat_template, unravel = ravel_pytree(template)
    dtype = flat_template.dtype

    def functions(batch):
        x, y, labels = batch
        f = models.loss_and_accuracy(apply, x, y, labels, loss, chunk_size)
        E = models.full_batch_loss(apply, x, y, loss, chunk_size)
        return (lambda flat: f(unravel(flat))), (lambda flat: E(unravel(flat)))

    def gd_chunk(batch, flat, u0, hh, done, n0, steps, loss_limit, goal):
        loss_and_acc, _ = functions(batch)

        def step(carry, i):
            flat, done = carry
            n = n0 + i
            (l, acc), g = jax.value_and_grad(loss_and_acc, has_aux=True)(flat)
            gnorm = jnp.linalg.norm(g)
            bad = ~jnp.isfinite(l) | ~jnp.isfinite(gnorm) | (l > loss_limit)
            stop = done | bad | (acc >= goal) | (n >= steps)
            rec = (jnp.where(done, jnp.nan, l), jnp.where(done, jnp.nan, acc),
                   jnp.where(done, jnp.nan, gnorm), jnp.where(done, jnp.nan, u0 @ g),
                   ~done & bad)
            flat = jnp.where(stop, flat, flat - hh.astype(dtype) * g)
            return (flat, stop), rec

        (flat, done), recs = jax.lax.scan(step, (flat, done), jnp.arange(eig_every))
        return flat, done, recs

    def eig_solve(batch, flat, v0):
        _, E_flat = functions(batch)
        lam, U = spectral.top_hessian_eigenpairs(E_flat, flat, k=k, num_iter=num_iter, v0=v0)
        return lam, U, U.T @ jax.grad(E_flat)(flat)

    gd_chunk_v = jax.jit(jax.vmap(gd_chunk, in_axes=(None, 0, 0, 0, 0, None, None, 0, None)))
    eig_solve_v = jax.jit(jax.vmap(eig_solve, in_axes=(None, 0, 0)))
    eig_solve_1 = jax.jit(eig_solve)

    def eig_solve_runs(batch, flat, v0):
        """Eigen-solves for all runs: vmapped on accelerators; one after the other on CPU, where
        the batched matrix products of the vmapped Lanczos loop measured about 2x slower than
        unbatched ones (the GD steps, on the contrary, ran faster vmapped, even for one run)."""
        vmap_solves = jax.default_backend() != "cpu" if VMAP_SOLVES is None else VMAP_SOLVES
        if vmap_solves and flat.shape[0] > 1:
            return eig_solve_v(batch, flat, v0)
        outs = [eig_solve_1(batch, flat[r], v0[r]) for r in range(flat.shape[0])]
        return tuple(jnp.stack(parts) for parts in zip(*outs))

    loss_and_acc = jax.jit(lambda batch, flat: functions(batch)[0](flat))
    return gd_chunk_v, eig_solve_runs, loss_and_acc


def _run_group(hs, flat0, dtype, D, steps, eig_every, k, gd_chunk_v, eig_solve_v, loss_and_acc,
               divergence_factor, accuracy_goal, key, bar, callback):
    """Run the learning rates ``hs`` side by side; return their raw records."""
    R = hs.size
    flat = jnp.broadcast_to(flat0, (R, D))
    hh = jnp.asarray(hs)
    l0 = float(loss_and_acc(flat0)[0])
    if not math.isfinite(l0):
        raise DivergenceError("the initial loss is not finite: check the data and the initial parameters.")
    loss_limit = jnp.full(R, divergence_factor * max(l0, np.finfo(np.float32).tiny), dtype)
    goal = jnp.asarray(np.inf if accuracy_goal is None else accuracy_goal, dtype)
    v0 = jax.random.normal(key, (R, D), dtype)
    done = jnp.zeros(R, bool)
    prev_u = None
    per_step = {name: [] for name in ("loss", "accuracy", "grad_norm", "projection", "bad")}
    eig = {name: [] for name in ("step", "lam", "proj")}
    timing = {"gd": 0.0, "eig": 0.0, "solves": 0}
    stopped_at = np.full(R, -1)   # last step of a run, once it stopped
    final_done = np.zeros(R, bool)  # its eigenpairs at the final parameters are recorded
    n0 = 0
    while True:
        active = ~np.asarray(done)
        # a run that stopped inside the last chunk gets one solve at its final parameters
        record = active | ~final_done
        if not record.any():
            break
        t0 = time.perf_counter()
        lam, U, proj = jax.block_until_ready(eig_solve_v(flat, v0))
        timing["eig"] += time.perf_counter() - t0
        timing["solves"] += 1
        if prev_u is not None:  # keep each eigenvector's sign continuous between solves
            sign = jnp.where(jnp.einsum("rdk,rdk->rk", U, prev_u) < 0, -1.0, 1.0).astype(dtype)
            U, proj = U * sign[:, None, :], proj * sign
        prev_u = U
        # warm start: the span of the previous top-k directions; a run whose solve was NaN (on
        # diverged parameters) keeps its finite start, as Lanczos refuses a NaN start vector
        warm = jnp.sum(U, axis=2)
        v0 = jnp.where(jnp.all(jnp.isfinite(warm), axis=1, keepdims=True), warm, v0)
        eig["step"].append(np.where(record, np.where(active, n0, stopped_at), -1))
        eig["lam"].append(np.where(record[:, None], np.asarray(lam), np.nan))
        eig["proj"].append(np.where(record[:, None], np.asarray(proj), np.nan))
        final_done |= ~active
        if not active.any() or n0 > steps:
            break
        t0 = time.perf_counter()
        flat, done, recs = gd_chunk_v(flat, U[:, :, 0], hh, done, n0, steps, loss_limit, goal)
        recs = [np.asarray(r) for r in recs]
        timing["gd"] += time.perf_counter() - t0
        for name, r in zip(per_step, recs):
            per_step[name].append(r)
        newly = active & np.asarray(done)
        for r in np.flatnonzero(newly):  # the last step it recorded
            stopped_at[r] = n0 + np.flatnonzero(np.isfinite(recs[0][r]) | recs[4][r])[-1]
            # no second solve at the same point, and none on diverged parameters
            final_done[r] = stopped_at[r] == n0 or bool(recs[4][r].any())
        bar.update(int(min(eig_every, steps + 1 - n0) * active.sum()))
        if callback is not None:
            callback(dict(step=min(n0 + eig_every, steps), h=np.asarray(hs), loss=recs[0][:, -1],
                          accuracy=recs[1][:, -1], sharpness=np.asarray(lam)[:, 0]))
        n0 += eig_every
    stopped_at = np.where(stopped_at < 0, steps, stopped_at)
    return hs, per_step, eig, stopped_at, flat, prev_u, timing


def _assemble(hs, results, unravel, config) -> EoSHistory:
    def pad_cat(parts, axis_len, fill=np.nan):
        return [np.concatenate(p, axis=1) if p else np.full((0, axis_len), fill) for p in parts]

    T = config["steps"] + 1
    M_max = max(len(r[2]["step"]) for r in results)
    rows = {name: [] for name in ("loss", "accuracy", "grad_norm", "projection", "bad")}
    eig_step, lam, proj, stop, status, flats, vecs = [], [], [], [], [], [], []
    for group_hs, per_step, eig, stopped_at, flat, U, _ in results:
        R = group_hs.size
        for name in rows:
            a = np.concatenate(per_step[name], axis=1)[:, :T]
            if name == "bad":
                rows[name].append(a)
                continue
            full = np.full((R, T), np.nan)
            full[:, : a.shape[1]] = a
            rows[name].append(full)
        es = np.stack(eig["step"], axis=1)
        ls = np.stack(eig["lam"], axis=1)
        ps = np.stack(eig["proj"], axis=1)
        M = es.shape[1]
        eig_step.append(np.pad(es, ((0, 0), (0, M_max - M)), constant_values=-1))
        lam.append(np.pad(ls, ((0, 0), (0, M_max - M), (0, 0)), constant_values=np.nan))
        proj.append(np.pad(ps, ((0, 0), (0, M_max - M), (0, 0)), constant_values=np.nan))
        bad = np.concatenate(per_step["bad"], axis=1)
        for r in range(R):
            stop.append(int(stopped_at[r]))
            status.append(_status(group_hs[r], bad[r], stopped_at[r], es[r], ls[r], rows["loss"][-1][r], config))
        flats.append(np.asarray(flat))
        vecs.append(np.asarray(U))
    loss = np.concatenate(rows["loss"])
    projection = np.concatenate(rows["projection"])
    eig_step, lam, proj = np.concatenate(eig_step), np.concatenate(lam), np.concatenate(proj)
    stop = np.asarray(stop)
    # compact each run's solves to the front (a stopped run leaves -1 gaps)
    for r in range(eig_step.shape[0]):
        order = np.argsort(eig_step[r] < 0, kind="stable")
        eig_step[r], lam[r], proj[r] = eig_step[r][order], lam[r][order], proj[r][order]
    hcol = hs[:, None]
    with np.errstate(invalid="ignore"):
        x = hcol * lam[..., 0]
        alpha = np.where(np.isfinite(x), np.asarray(pf_coefficient(jnp.asarray(np.nan_to_num(x)))), np.nan)
        factor = np.where(np.isfinite(x), pf_step_factor(hcol, np.nan_to_num(lam[..., 0])), np.nan)
    gd_factor = np.full(eig_step.shape, np.nan)
    for r in range(eig_step.shape[0]):
        for m, s in enumerate(eig_step[r]):
            if 0 <= s < stop[r]:
                with np.errstate(divide="ignore", invalid="ignore"):
                    gd_factor[r, m] = projection[r, s + 1] / projection[r, s]
    flats = np.concatenate(flats)
    params = jax.vmap(unravel)(jnp.asarray(flats))
    return EoSHistory(
        h=hs, loss=loss, accuracy=np.concatenate(rows["accuracy"]), grad_norm=np.concatenate(rows["grad_norm"]),
        projection=projection, eig_step=eig_step, eigenvalues=lam, eig_projections=proj,
        pf_coefficient=alpha, pf_factor=factor, gd_factor=gd_factor, stop_step=stop, status=tuple(status),
        params=params, eigenvectors=np.concatenate(vecs), config=config,
    )


def _status(h, bad, stop, eig_step, lam, loss, config) -> str:
    if bad.any():
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
