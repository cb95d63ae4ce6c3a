r"""DAL with minibatches: SGD whose rate is set by the minibatch's own drift ratio (chapter 7).

Rosca et al. (TMLR 2023) run DAL full-batch and with SGD. With minibatches the rule of
:mod:`pfcourse.dal` is applied to the minibatch loss :math:`E_B` of step :math:`t`:

.. math:: g_t = \nabla E_{B_t}(\theta_t), \qquad
          h_t = \min\!\Big(\frac{2}{(\|\nabla^2 E_{B_t}\, g_t\| / \|g_t\|)^p},\ h_{\max}\Big), \qquad
          \theta_{t+1} = \theta_t - h_t g_t ,

the batches :math:`B_t` drawn without replacement within an epoch (a fresh permutation per epoch,
the last partial batch dropped). :func:`minibatch_gradients` is that as an optax transformation: it
replaces the gradient it is given by the minibatch gradient and hands the minibatch loss on to the
transformation it wraps (DAL's HVP is then the minibatch's), so :func:`pfcourse.training.train`
runs SGD unchanged, still recording the *full-batch* loss at every step (the stability we measure).

=================================  ===========================================================  =========
function                           computes                                                     book
=================================  ===========================================================  =========
:class:`BatchLoss`                 :math:`E_B(\theta)` of an MLP on the examples ``B``          chapter 7
:func:`batch_indices`              the examples of step :math:`t` (epoch-wise permutations)     chapter 7
:func:`minibatch_gradients`        optax: :math:`\nabla E \mapsto \nabla E_{B_t}`, then ``inner``  chapter 7
:func:`dal_sgd_experiment`         DAL-p and fixed rates with SGD on a data set, seeds vmapped  chapter 7
:func:`loss_spikes`                the largest rise of the loss above its running minimum       chapter 7
=================================  ===========================================================  =========

Book: chapter 7, §DAL with minibatches.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pfcourse import dal, models, training

PyTree = Any

__all__ = ["BatchLoss", "DALSGDResult", "MinibatchState", "batch_indices", "dal_sgd_experiment",
           "loss_spikes", "minibatch_gradients"]


class BatchLoss(eqx.Module):
    r"""The square loss of ``apply`` on the examples ``idx``: :math:`E_B(\theta) = \frac1{|B|}\sum_{i\in B}
    \tfrac12\|f_\theta(x_i) - e_{y_i}\|^2`, called as ``loss(params, idx)``; data as arrays (one compilation)."""

    apply: Callable = eqx.field(static=True)
    x: jax.Array
    y: jax.Array

    def __call__(self, params: PyTree, idx: jax.Array) -> jax.Array:
        return models.square_loss(self.apply(params, self.x[idx]), self.y[idx])


def batch_indices(key: jax.Array, count, n: int, batch_size: int) -> jax.Array:
    r"""The ``batch_size`` example indices of step ``count``: batch ``count mod (n // batch_size)`` of
    epoch ``count // (n // batch_size)``'s permutation of ``0..n-1`` (drawn from ``fold_in(key, epoch)``)."""
    per_epoch = n // batch_size
    perm = jax.random.permutation(jax.random.fold_in(key, count // per_epoch), n)
    return jax.lax.dynamic_slice(perm, ((count % per_epoch) * batch_size,), (batch_size,))


class MinibatchState(NamedTuple):
    """State of :func:`minibatch_gradients`: the step count and the wrapped transformation's state."""

    count: jax.Array
    inner: PyTree


def minibatch_gradients(inner: optax.GradientTransformation, batch_loss: BatchLoss, n: int, batch_size: int,
                        key: jax.Array) -> optax.GradientTransformationExtraArgs:
    r"""An optax transformation that turns full-batch training into SGD: ``update(g, state, params)``
    ignores ``g``, takes :math:`g_t = \nabla E_{B_t}(\theta_t)` on the batch :func:`batch_indices` gives
    for step ``t``, and returns ``inner.update(g_t, ..., loss_fn=E_{B_t})`` (so :func:`pfcourse.dal.dal`
    computes its HVP on the same batch). ``key`` may be traced (one per run under ``vmap``).

    Raises:
        ValueError: ``batch_size`` not in ``1..n``.

    Book: chapter 7, §DAL with minibatches.
    """
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in 1..{n} (the number of examples), got {batch_size}.")
    extra = isinstance(inner, optax.GradientTransformationExtraArgs)

    def init_fn(params):
        return MinibatchState(jnp.zeros([], jnp.int32), inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del updates, extra_args
        idx = batch_indices(key, state.count, n, batch_size)
        loss_b = lambda p: batch_loss(p, idx)  # noqa: E731
        g = jax.grad(loss_b)(params)
        if extra:
            new, inner_state = inner.update(g, state.inner, params, loss_fn=loss_b)
        else:
            new, inner_state = inner.update(g, state.inner, params)
        return new, MinibatchState(optax.safe_increment(state.count), inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def loss_spikes(loss: np.ndarray) -> np.ndarray:
    r"""The largest rise of the loss above its running minimum, :math:`\max_n E_n / \min_{m\le n} E_m`
    (1 for a loss that never rises), over the last axis; ``NaN`` steps (after a run stopped) are skipped."""
    loss = np.where(np.isfinite(loss), loss, np.nan)
    running = np.fmin.accumulate(np.where(np.isnan(loss), np.inf, loss), axis=-1)
    return np.nanmax(loss / running, axis=-1)


class DALSGDResult(NamedTuple):
    r"""What :func:`dal_sgd_experiment` measures: ``S`` settings by ``R`` seeds.

    Attributes:
        names: the settings' names; ``p``, ``rate``: their power and fixed rate.
        test_accuracy, final_loss: at the last step (full batch), ``(S, R)``.
        diverged: the full-batch loss exceeded ``divergence_factor`` times its start or left the finite numbers.
        loss_up: the fraction of steps where the full-batch loss rose, ``(S, R)``.
        spike: :func:`loss_spikes` of the full-batch loss, ``(S, R)``.
        median_rate: the median of :math:`h_t` over the run, ``(S, R)``.
        final_sharpness: :math:`\lambda_0` of the full-batch Hessian at the end (Lanczos), ``(S, R)``.
        loss, rate: the full-batch loss and :math:`h_t` at every step, ``(S, R, steps + 1)`` / ``(S, R, steps)``.
    """

    names: list
    p: np.ndarray
    rate: np.ndarray
    test_accuracy: np.ndarray
    final_loss: np.ndarray
    diverged: np.ndarray
    loss_up: np.ndarray
    spike: np.ndarray
    median_rate: np.ndarray
    final_sharpness: np.ndarray
    loss: np.ndarray
    rates: np.ndarray


def dal_sgd_experiment(digits, settings: Sequence[tuple[str, float, float]], seeds: int, sizes: Sequence[int],
                       *, steps: int = 300, batch_size: int = 50, h_max: float = 5.0,
                       dtype=jnp.float32) -> DALSGDResult:
    r"""Train an MLP (tanh, square loss) with SGD for every setting ``(name, p, rate)`` and seed, all runs
    side by side under ``vmap`` in one :func:`pfcourse.training.train` call.

    Each run is :func:`pfcourse.dal.dal` (``p = 0``: a fixed ``rate``; ``p > 0``: DAL-p, ``rate`` before the
    first step, cap ``h_max``) wrapped in :func:`minibatch_gradients`. Seed ``s`` fixes both the
    initialisation and the order of the batches, so the settings share them. ``digits`` is a
    :class:`pfcourse.data.Dataset`; the test accuracy is on its test split.

    Book: chapter 7, §DAL with minibatches.
    """
    apply = models.mlp_apply("tanh")
    x, y = jnp.asarray(digits.x_train, dtype), jnp.asarray(digits.y_train, dtype)
    n, S = x.shape[0], len(settings)
    ps = jnp.repeat(jnp.asarray([s[1] for s in settings], dtype), seeds)
    rates = jnp.repeat(jnp.asarray([s[2] for s in settings], dtype), seeds)
    seed = jnp.tile(jnp.arange(seeds), S)
    starts = jax.vmap(lambda s: models.init_mlp(jax.random.key(s), sizes, dtype=dtype))(seed)
    batches = BatchLoss(apply, x, y)

    def optimizer(hp):
        p, rate, s = hp
        return minibatch_gradients(dal.dal(p, rate, h_max=h_max), batches, n, batch_size,
                                   jax.random.fold_in(jax.random.key(1), s))

    config = training.TrainConfig(steps=steps, eig_every=steps, k=1, num_iter=20, record_opt_state=True)
    rec = training.train(models.full_batch_loss(apply, x, y), starts, optimizer, config,
                         hyperparams=(ps, rates, seed), batched=True)
    test = jax.vmap(lambda p: models.accuracy(apply(p, jnp.asarray(digits.x_test, dtype)),
                                              jnp.asarray(digits.labels_test)))(rec.params)
    shape = lambda a: np.asarray(a).reshape((S, seeds) + np.shape(a)[1:])  # noqa: E731
    loss = shape(rec.loss)
    rate_t = shape(rec.step_opt_state.inner.rate[:, :steps])
    stop = shape(rec.stop_step)
    final = np.take_along_axis(loss, stop[..., None], -1)[..., 0]
    last_probe = np.sum(rec.probe_step >= 0, axis=1) - 1
    up, valid = np.diff(loss, axis=-1) > 0, np.isfinite(np.diff(loss, axis=-1))
    return DALSGDResult([s[0] for s in settings], np.asarray([s[1] for s in settings]),
                        np.asarray([s[2] for s in settings]), shape(test), final, shape(rec.diverged),
                        up.sum(-1) / np.maximum(valid.sum(-1), 1), loss_spikes(loss), np.nanmedian(rate_t, axis=-1),
                        shape(rec.sharpness[np.arange(len(last_probe)), last_probe]), loss, rate_t)
