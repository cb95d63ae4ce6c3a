r"""One training loop with the sharpness tracked: any optax optimiser, spectral probes on a schedule.

Every step applies an optax ``GradientTransformation`` (plain gradient descent is ``optax.sgd(h)``,
DAL is :func:`pfcourse.dal.dal`, Adam is ``optax.adam(h)``, SGD is any of them on a minibatch loss)

.. math:: (u_n, s_{n+1}) = \mathrm{update}(\nabla E(\theta_n), s_n, \theta_n), \qquad \theta_{n+1} = \theta_n + u_n,

and records

* every step: :math:`E(\theta_n)`, the accuracy (when the objective returns one),
  :math:`\lVert\nabla E(\theta_n)\rVert`, the projections :math:`u_0^\top\nabla E(\theta_n)` and
  :math:`u_0^\top u_n` on the most recent top eigenvector (and, if asked, :math:`\theta_n` and the
  optimiser's state);
* every ``eig_every`` steps, and at the step where a run stops: the top-k Hessian eigenpairs
  :math:`(\lambda_i, u_i)` by Lanczos warm-started from the previous ones
  (:func:`pfcourse.spectral.top_hessian_eigenpairs`), the projections :math:`u_i^\top\nabla E`, and
  if asked the smallest eigenvalue (:func:`pfcourse.spectral.hessian_spectrum_ends`).

In outline (pseudocode; one run)::

    state, u = optimizer.init(theta), random unit vectors (D, k)
    for n in range(steps + 1):
        if n % eig_every == 0 or the run stops at n:
            lam, u = lanczos(hvp at theta, start = u)           # top-k eigenpairs
            record n, lam, u.T @ grad E(theta)
        loss, acc, g = E(theta), accuracy(theta), grad E(theta)
        record loss, acc, |g|, u[:, 0] @ g
        if n == steps or acc >= goal or loss <= loss_goal or loss is not finite
                or loss > factor * loss_0: stop
        updates, state = optimizer.update(g, state, theta)
        theta = theta + updates

The steps between two probes run as one jit-compiled ``lax.scan``; several runs (learning rates,
optimiser settings, seeds) run side by side under ``vmap``, each stopping on its own. Steps past
``steps`` in the last chunk are skipped by a ``lax.cond`` on the (shared) step number: no gradient
is computed that was not asked for. Settings are a frozen :class:`TrainConfig`, results a
:class:`TrainRecord`; the objective is data (e.g. :class:`pfcourse.models.FullBatchLoss`), so
calls with the same structure share one compilation.

Book: chapter 6 (gradient descent), chapter 7 (DAL), chapter 8 (GD beside the central flow).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from . import spectral
from ._checks import check_finite, check_int
from .flows import DivergenceError

PyTree = Any

__all__ = ["ChunkReport", "TrainConfig", "TrainRecord", "train"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train` (hashable: jit-compiled code is keyed on them).

    Attributes:
        steps: the most optimiser steps per run (records ``steps + 1`` points, ``0..steps``).
        eig_every: steps between two spectral probes (each chunk is one compiled scan).
        k: top eigenpairs per probe, ``1 <= k <= num_iter``.
        num_iter: Lanczos iterations per probe (Hessian-vector products).
        bottom: also record the smallest Ritz value of each probe (same Lanczos run).
        accuracy_goal: stop a run once its accuracy reaches this (``None``: never).
        loss_goal: stop a run once its loss is at most this (``None``: never); runs stopped
            there compare settings at matched training loss (chapter 7).
        divergence_factor: stop a run (``diverged``) once its loss exceeds this multiple of the
            initial loss or is not finite.
        record_params: keep :math:`\\theta_n` of every step (memory: ``steps + 1`` copies per run).
        record_opt_state: keep the optimiser's state after every step (e.g. DAL's rate).
        vmap_solves: Lanczos for all runs under ``vmap`` (``True``) or one run after the other
            (``False``); ``None``: vmapped on accelerators, sequential on CPU, where batched
            matrix products of the Lanczos loop measured about 2x slower.
    """

    steps: int
    eig_every: int = 50
    k: int = 2
    num_iter: int = 20
    bottom: bool = False
    accuracy_goal: float | None = None
    loss_goal: float | None = None
    divergence_factor: float = 1e3
    record_params: bool = False
    record_opt_state: bool = False
    vmap_solves: bool | None = None

    def __post_init__(self):
        for name, lo in (("steps", 0), ("eig_every", 1), ("k", 1), ("num_iter", 1)):
            check_int(getattr(self, name), name, minimum=lo)
        if self.k > self.num_iter:
            raise ValueError(f"k = {self.k} eigenpairs need num_iter >= k Lanczos iterations, "
                             f"got num_iter = {self.num_iter}.")
        if self.accuracy_goal is not None and not 0 < self.accuracy_goal <= 1:
            raise ValueError(f"accuracy_goal must be in (0, 1], got {self.accuracy_goal!r}.")
        if self.loss_goal is not None and not (math.isfinite(self.loss_goal) and self.loss_goal > 0):
            raise ValueError(f"loss_goal must be a positive number, got {self.loss_goal!r}.")
        if not self.divergence_factor > 1:
            raise ValueError(f"divergence_factor must be > 1, got {self.divergence_factor!r}.")


class TrainRecord(NamedTuple):
    r"""What :func:`train` records: ``R`` runs, ``T = steps + 1`` steps, ``M`` probes.

    Per-step arrays are ``NaN`` after a run stopped; per-probe ones too, with ``probe_step = -1``.

    Attributes:
        loss, accuracy, grad_norm: per step at :math:`\theta_n` (before the step), ``(R, T)``;
            ``accuracy`` is ``NaN`` when the objective returns a loss only.
        projection: :math:`u_0^\top\nabla E(\theta_n)` with the latest probe's :math:`u_0`, ``(R, T)``.
        update_projection: :math:`u_0^\top u_n`, the update of step ``n`` along it (``NaN`` where
            no step was taken), ``(R, T)``.
        probe_step: the step of each probe, ``(R, M)``, ``-1`` where none.
        eigenvalues: :math:`\lambda_0 \ge \dots \ge \lambda_{k-1}` at each probe, ``(R, M, k)``.
        eig_projections: :math:`u_i^\top\nabla E` at each probe, ``(R, M, k)``.
        bottom_eigenvalue: the smallest Ritz value (``NaN`` unless ``config.bottom``), ``(R, M)``.
        stop_step: the last step of each run, ``(R,)``.
        diverged: whether a run stopped for divergence (its loss at ``stop_step`` is bad), ``(R,)``.
        goal_reached: whether a run stopped on ``accuracy_goal`` or ``loss_goal``, ``(R,)``.
        params: final parameters, stacked on a leading axis of length ``R``.
        opt_state: final optimiser states, stacked likewise.
        eigenvectors: the last probe's top-k eigenvectors, flat, ``(R, D, k)``.
        step_params: :math:`\theta_n` with axes ``(R, T, ...)`` if ``config.record_params``, else ``None``.
        step_opt_state: the state after step ``n``, ``(R, T, ...)``, if ``config.record_opt_state``.
        time_steps_s, time_probes_s: wall-clock seconds in the compiled steps and in the probes.
        probes: number of probe rounds.
    """

    loss: np.ndarray
    accuracy: np.ndarray
    grad_norm: np.ndarray
    projection: np.ndarray
    update_projection: np.ndarray
    probe_step: np.ndarray
    eigenvalues: np.ndarray
    eig_projections: np.ndarray
    bottom_eigenvalue: np.ndarray
    stop_step: np.ndarray
    diverged: np.ndarray
    goal_reached: np.ndarray
    params: PyTree
    opt_state: PyTree
    eigenvectors: np.ndarray
    step_params: PyTree | None
    step_opt_state: PyTree | None
    time_steps_s: float
    time_probes_s: float
    probes: int

    @property
    def sharpness(self) -> np.ndarray:
        r""":math:`\lambda_0` at each probe, ``(R, M)``."""
        return self.eigenvalues[..., 0]


class ChunkReport(NamedTuple):
    """What :func:`train` passes to ``callback`` after every chunk (NumPy, one entry per run)."""

    step: int
    loss: np.ndarray
    accuracy: np.ndarray
    sharpness: np.ndarray


# --------------------------------------------------------------------------- compiled pieces


def _loss_and_accuracy(objective, params):
    """``(E, accuracy)`` from an objective that returns ``E`` or ``(E, accuracy)``."""
    out = objective(params)
    if isinstance(out, tuple):
        return out[0], jnp.asarray(out[1], jnp.result_type(out[0]))
    return out, jnp.full((), jnp.nan, jnp.result_type(out))


def _optimizer(optimizer, hyper):
    return optimizer if hyper is None else optimizer(hyper)


def _blank(x):
    """``NaN`` for floats, ``-1`` for integers, ``False`` for booleans, in ``x``'s shape."""
    x = x if isinstance(x, jax.ShapeDtypeStruct) else jnp.asarray(x)
    fill = jnp.nan if jnp.issubdtype(x.dtype, jnp.inexact) else (False if x.dtype == bool else -1)
    return jnp.full(x.shape, fill, x.dtype)


def _where(cond, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(cond, x, y), a, b)


class _Step(NamedTuple):
    loss: jax.Array
    accuracy: jax.Array
    grad_norm: jax.Array
    projection: jax.Array
    update_projection: jax.Array
    bad: jax.Array
    params: PyTree
    opt_state: PyTree


def _step_fn(objective, opt, config: TrainConfig, steps, limit, u0):
    """One optimiser step of one run with its records: ``(carry, n) -> (carry, _Step)``.

    ``steps`` is traced (one compilation serves every run length); so is ``n``, shared by all runs
    under ``vmap``, which keeps the ``lax.cond`` on it a real branch: skipped steps cost nothing."""
    goal = jnp.inf if config.accuracy_goal is None else config.accuracy_goal
    loss_goal = -jnp.inf if config.loss_goal is None else config.loss_goal
    E = lambda p: _loss_and_accuracy(objective, p)[0]  # noqa: E731
    extra = isinstance(opt, optax.GradientTransformationExtraArgs)

    def live(carry, n):
        params, state, done = carry
        (l, acc), g = jax.value_and_grad(lambda p: _loss_and_accuracy(objective, p), has_aux=True)(params)
        gflat = ravel_pytree(g)[0]
        gnorm = jnp.linalg.norm(gflat)
        bad = ~jnp.isfinite(l) | ~jnp.isfinite(gnorm) | (l > limit)
        stop = done | bad | (acc >= goal) | (l <= loss_goal) | (n >= steps)
        g = jax.tree_util.tree_map(lambda a: jnp.where(stop, jnp.zeros_like(a), a), g)

        def move(_):
            upd, new = opt.update(g, state, params, loss_fn=E) if extra else opt.update(g, state, params)
            return optax.apply_updates(params, upd), new, u0 @ ravel_pytree(upd)[0].astype(u0.dtype)

        new_params, new_state, up = jax.lax.cond(
            n < steps, move, lambda _: (params, state, jnp.full((), jnp.nan, u0.dtype)), None)
        hide = lambda x: jnp.where(done, _blank(x), x)  # noqa: E731
        rec = _Step(hide(l), hide(acc), hide(gnorm), hide(u0 @ gflat), jnp.where(stop, jnp.nan, up), ~done & bad,
                    jax.tree_util.tree_map(hide, params) if config.record_params else None,
                    jax.tree_util.tree_map(hide, new_state) if config.record_opt_state else None)
        return (_where(stop, params, new_params), _where(stop, state, new_state), stop), rec

    def step(carry, n):
        shapes = jax.eval_shape(live, carry, n)[1]
        idle = lambda c, n: (c, jax.tree_util.tree_map(_blank, shapes))  # noqa: E731
        return jax.lax.cond(n <= steps, live, idle, carry, n)

    return step


@eqx.filter_jit
def _init(objective, optimizer, hyper, params):
    """Optimiser states and initial losses of all runs."""
    def one(p, hp):
        return _optimizer(optimizer, hp).init(p), _loss_and_accuracy(objective, p)[0]
    return jax.vmap(one)(params, hyper)


@eqx.filter_jit
def _chunk(objective, optimizer, config, hyper, params, state, done, limit, u0, n0, steps):
    """``eig_every`` steps of every run (steps ``n0, n0 + 1, ...``), under ``vmap``; ``config`` holds only
    what shapes the steps (see ``_Loop``), ``steps`` is traced."""
    def one(p, s, d, lim, hp, u):
        step = _step_fn(objective, _optimizer(optimizer, hp), config, steps, lim, u)
        ns = n0 + jnp.arange(config.eig_every)
        (p, s, d), recs = jax.lax.scan(lambda c, n: step(c, n), (p, s, d), ns)
        return p, s, d, recs
    return jax.vmap(one)(params, state, done, limit, hyper, u0)


def _probe_one(objective, settings, params, v0):
    """Top-k eigenpairs (and the bottom Ritz value) at ``params``; ``settings = (k, num_iter, bottom)``."""
    k, num_iter, bottom = settings
    flat, unravel = ravel_pytree(params)
    E_flat = lambda f: _loss_and_accuracy(objective, unravel(f))[0]  # noqa: E731
    if bottom:
        ends = spectral.hessian_spectrum_ends(E_flat, flat, k, num_iter, v0=v0)
        lam, U, low = ends.top, ends.top_vectors, ends.bottom[0]
    else:
        lam, U = spectral.top_hessian_eigenpairs(E_flat, flat, k, num_iter, v0=v0)
        low = jnp.full((), jnp.nan, lam.dtype)
    return lam, U, U.T @ jax.grad(E_flat)(flat), low


_probe = eqx.filter_jit(_probe_one)
_probe_vmapped = eqx.filter_jit(lambda objective, settings, params, v0: jax.vmap(
    lambda p, v: _probe_one(objective, settings, p, v))(params, v0))


# --------------------------------------------------------------------------- the loop


def train(
    objective: Callable[[PyTree], Any], params: PyTree,
    optimizer: optax.GradientTransformation | Callable[[Any], optax.GradientTransformation], config: TrainConfig,
    *, hyperparams: PyTree | None = None, batched: bool = False, key: jax.Array | None = None,
    progress: bool | str = False, callback: Callable[[ChunkReport], None] | None = None,
) -> TrainRecord:
    r"""Train with any optax optimiser and track the top of the Hessian's spectrum (the module docstring's loop).

    Args:
        objective: ``E(params) -> scalar`` or ``-> (scalar, accuracy)``; preferably data (an
            equinox Module such as :func:`pfcourse.models.loss_and_accuracy`'s), so that calls
            with the same structure share one compilation (a closure compiles per object).
        params: the start, any pytree of float arrays; with ``batched=True``, one start per run
            stacked on a leading axis.
        optimizer: an optax ``GradientTransformation`` (``optax.sgd(h)`` is gradient descent), or,
            with ``hyperparams``, a function ``hyper -> GradientTransformation`` called with each
            run's slice of ``hyperparams`` (traced, so ``optax.sgd`` with an array of learning
            rates trains them side by side). Extra-args transforms get ``loss_fn=E``.
        config: a :class:`TrainConfig`.
        hyperparams: a pytree of arrays with a leading axis of runs, or ``None``.
        batched: whether ``params`` carries a leading axis of runs.
        key: PRNG key of the first Lanczos start vectors (default ``jax.random.key(0)``).
        progress: show a ``tqdm`` bar (a string is its label).
        callback: called after every chunk with a :class:`ChunkReport`.

    Returns:
        a :class:`TrainRecord`.

    Raises:
        ValueError: mismatched numbers of runs, ``k`` above the number of parameters, non-finite ``params``.
        DivergenceError: the initial loss of a run is not finite.

    References:
        Cohen et al., ICLR 2021 [cohen2021gradient] (the sharpness tracked by Lanczos during training).

    Book: chapter 6, §Tracking the sharpness; chapter 7, §The experiment.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}.")
    check_finite(params, "params")
    if hyperparams is not None:
        hyperparams = jax.tree_util.tree_map(jnp.asarray, hyperparams)
    R = _number_of_runs(params, hyperparams, batched)
    if not batched:
        params = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (R,) + jnp.shape(a)), params)
    D = ravel_pytree(jax.tree_util.tree_map(lambda a: a[0], params))[0].shape[0]
    if config.k > D:
        raise ValueError(f"k = {config.k} eigenpairs but the model has only {D} parameters.")
    loop = _Loop(objective, optimizer, config, hyperparams, params, R, D, key)
    from tqdm.auto import tqdm

    label = progress if isinstance(progress, str) else "training"
    with tqdm(total=R * (config.steps + 1), desc=label, disable=not progress, leave=False) as bar:
        loop.run(bar, callback)
    return loop.record()


def _number_of_runs(params, hyperparams, batched) -> int:
    sizes = {}
    if hyperparams is not None:
        sizes["hyperparams"] = {int(np.shape(a)[0]) if np.ndim(a) else -1 for a in jax.tree_util.tree_leaves(hyperparams)}
    if batched:
        sizes["params"] = {int(np.shape(a)[0]) if np.ndim(a) else -1 for a in jax.tree_util.tree_leaves(params)}
    found = set().union(*sizes.values()) if sizes else {1}
    if len(found) != 1 or -1 in found or 0 in found:
        raise ValueError(f"the leading axes (runs) of {' and '.join(sizes)} must agree and be non-empty, "
                         f"got {sizes}.")
    return found.pop()


class _Loop:
    """The host side of :func:`train`: probes and chunks in turn, and the records they return."""

    def __init__(self, objective, optimizer, config, hyper, params, R, D, key):
        self.objective, self.optimizer, self.config, self.hyper = objective, optimizer, config, hyper
        self.params, self.R, self.D = params, R, D
        # the settings the compiled steps depend on; the rest are normalised so that one compilation
        # serves every run length, probe size and divergence limit
        self.chunk_config = dataclasses.replace(config, steps=0, k=1, num_iter=1, bottom=False,
                                                divergence_factor=1e3, vmap_solves=None)
        self.state, loss0 = _init(objective, optimizer, hyper, params)
        loss0 = np.asarray(loss0, dtype=np.float64)
        if not np.all(np.isfinite(loss0)):
            raise DivergenceError("the initial loss is not finite: check the data and the initial parameters.")
        self.dtype = ravel_pytree(jax.tree_util.tree_map(lambda a: a[0], params))[0].dtype
        self.limit = jnp.asarray(config.divergence_factor * np.maximum(loss0, np.finfo(np.float32).tiny), self.dtype)
        key = jax.random.key(0) if key is None else key
        self.v0 = jax.random.normal(key, (R, D), self.dtype)
        self.U = None
        self.done = jnp.zeros(R, bool)
        self.steps, self.probes = [], []
        self.stopped_at = np.full(R, -1)     # last step of a run, once it stopped
        self.final_done = np.zeros(R, bool)  # its probe at the final parameters is recorded
        self.timing = [0.0, 0.0, 0]

    def solve(self, record):
        """Probe the runs in ``record`` (all of them when vmapped); keep signs continuous, warm-start."""
        t0 = time.perf_counter()
        cfg = self.config
        settings = (cfg.k, cfg.num_iter, cfg.bottom)  # all a probe depends on: one compilation for them
        vmapped = jax.default_backend() != "cpu" if cfg.vmap_solves is None else cfg.vmap_solves
        if vmapped and self.R > 1:
            lam, U, proj, low = _probe_vmapped(self.objective, settings, self.params, self.v0)
        else:
            outs = [_probe(self.objective, settings, jax.tree_util.tree_map(lambda a: a[r], self.params),
                           self.v0[r]) if record[r] else None for r in range(self.R)]
            blank = next(o for o in outs if o is not None)
            lam, U, proj, low = (jnp.stack(p) for p in zip(*(o or blank for o in outs)))
        lam, U, proj, low = jax.block_until_ready((lam, U, proj, low))
        self.timing[1] += time.perf_counter() - t0
        self.timing[2] += 1
        if self.U is not None:
            sign = jnp.where(jnp.einsum("rdk,rdk->rk", U, self.U) < 0, -1.0, 1.0).astype(U.dtype)
            U, proj = U * sign[:, None, :], proj * sign
            U = jnp.where(jnp.asarray(record)[:, None, None], U, self.U)
        self.U = U
        # warm start: the span of the previous top-k directions; a run whose probe was NaN (on
        # diverged parameters) keeps its finite start, as Lanczos refuses a NaN start vector
        warm = jnp.sum(U, axis=2)
        self.v0 = jnp.where(jnp.all(jnp.isfinite(warm), axis=1, keepdims=True), warm, self.v0)
        return lam, proj, low

    def run(self, bar, callback):
        n0, cfg = 0, self.config
        while True:
            active = ~np.asarray(self.done)
            record = active | ~self.final_done  # a run that stopped inside the last chunk: one probe more
            if not record.any():
                break
            lam, proj, low = self.solve(record)
            step = np.where(record, np.where(active, n0, self.stopped_at), -1)
            self.probes.append((step, np.where(record[:, None], np.asarray(lam), np.nan),
                                np.where(record[:, None], np.asarray(proj), np.nan), np.where(record, np.asarray(low), np.nan)))
            self.final_done |= ~active
            if not active.any() or n0 > cfg.steps:
                break
            self.advance(n0, active)
            bar.update(int(min(cfg.eig_every, cfg.steps + 1 - n0) * active.sum()))
            if callback is not None:
                recs = self.steps[-1]
                callback(ChunkReport(min(n0 + cfg.eig_every, cfg.steps), recs.loss[:, -1], recs.accuracy[:, -1],
                                     np.asarray(lam)[:, 0]))
            n0 += cfg.eig_every

    def advance(self, n0, active):
        """One compiled chunk from step ``n0``; note where runs stopped."""
        t0 = time.perf_counter()
        self.params, self.state, self.done, recs = _chunk(
            self.objective, self.optimizer, self.chunk_config, self.hyper, self.params, self.state, self.done,
            self.limit, self.U[:, :, 0], jnp.asarray(n0), jnp.asarray(self.config.steps))
        recs = jax.tree_util.tree_map(np.asarray, recs)
        self.timing[0] += time.perf_counter() - t0
        self.steps.append(recs)
        for r in np.flatnonzero(active & np.asarray(self.done)):  # the last step it recorded
            self.stopped_at[r] = n0 + np.flatnonzero(np.isfinite(recs.loss[r]) | recs.bad[r])[-1]
            # no second probe at the same point, and none on diverged parameters
            self.final_done[r] = self.stopped_at[r] == n0 or bool(recs.bad[r].any())

    def record(self) -> TrainRecord:
        T = self.config.steps + 1
        steps = jax.tree_util.tree_map(lambda *a: _pad(np.concatenate(a, axis=1), T), *self.steps)
        step, lam, proj, low = (np.stack(p, axis=1) for p in zip(*self.probes))
        order = np.argsort(step < 0, axis=1, kind="stable")  # each run's probes to the front
        step, low = np.take_along_axis(step, order, 1), np.take_along_axis(low, order, 1)
        lam, proj = (np.take_along_axis(a, order[:, :, None], 1) for a in (lam, proj))
        keep = (step >= 0).any(axis=0)
        stop = np.where(self.stopped_at < 0, self.config.steps, self.stopped_at)
        diverged = steps.bad.any(axis=1)
        goal, low_goal, at = self.config.accuracy_goal, self.config.loss_goal, np.arange(self.R)
        reached = ~diverged & ((steps.accuracy[at, stop] >= (goal or math.inf))
                               | (steps.loss[at, stop] <= (-math.inf if low_goal is None else low_goal)))
        return TrainRecord(
            steps.loss, steps.accuracy, steps.grad_norm, steps.projection, steps.update_projection,
            step[:, keep], lam[:, keep], proj[:, keep], low[:, keep], stop, diverged, reached,
            self.params, self.state, np.asarray(self.U), steps.params, steps.opt_state,
            self.timing[0], self.timing[1], self.timing[2])


def _pad(a: np.ndarray, T: int) -> np.ndarray:
    """``a`` with axis 1 cut or padded (``NaN``, ``-1`` or ``False``) to length ``T``."""
    if a.shape[1] >= T:
        return a[:, :T]
    fill = np.nan if np.issubdtype(a.dtype, np.inexact) else (False if a.dtype == bool else -1)
    return np.concatenate([a, np.full((a.shape[0], T - a.shape[1]) + a.shape[2:], fill, a.dtype)], axis=1)
