r"""DAL's settings compared at matched training loss, with confidence intervals.

At a fixed number of steps a setting that trains slowly is also less trained, so its test
accuracy mixes two things: how far it fitted, and how what it fitted generalises. Here every run
stops at the first step :math:`n` where its full-batch training loss :math:`E(\theta_n) \le`
``goal`` (:class:`pfcourse.training.TrainConfig`'s ``loss_goal``), and the test accuracy is read
there: the settings are compared at the same training loss. Seed ``s`` fixes the initialisation,
shared by all settings, so differences between two settings can be taken seed by seed (paired).

Book: chapter 7, §At matched training loss.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from pfcourse import dal, models, training
from pfcourse._checks import check_int


class MatchedLoss(NamedTuple):
    """What :func:`matched_loss_runs` returns; arrays are ``(settings, seeds)``.

    Attributes:
        names: the settings' names.
        goal: the training loss each run was run to.
        reached: whether the run reached ``goal`` within the step budget.
        stop_step: the step it stopped at (the first with loss ``<= goal``, else the budget).
        loss: its full-batch training loss there.
        test_acc: its test accuracy there.
    """

    names: list
    goal: float
    reached: np.ndarray
    stop_step: np.ndarray
    loss: np.ndarray
    test_acc: np.ndarray


def matched_loss_runs(digits, settings: Sequence[tuple[str, float, float]], seeds: int,
                      sizes: Sequence[int], *, goal: float, steps: int = 300, h_max: float = 5.0,
                      dtype=jnp.float32) -> MatchedLoss:
    r"""Full-batch runs of an MLP (tanh, square loss), each stopped once :math:`E(\theta_n) \le` ``goal``.

    ``settings`` are ``(name, p, rate)`` as in chapter 7 (``p = 0``: GD at ``rate``; ``p > 0``:
    DAL-p, :func:`pfcourse.dal.dal`, cap ``h_max``); seeds ``0 .. seeds - 1`` fix the starts. All
    runs go side by side under ``vmap`` in one :func:`pfcourse.training.train` call, at most
    ``steps`` steps each. ``digits`` is a :class:`pfcourse.data.Dataset`.

    Book: chapter 7, §At matched training loss.
    """
    check_int(seeds, "seeds", minimum=2, hint="A confidence interval needs at least two seeds.")
    if not settings:
        raise ValueError("settings is empty: pass at least one (name, p, rate).")
    config = training.TrainConfig(steps=steps, eig_every=50, k=1, num_iter=2, loss_goal=goal)
    apply = models.mlp_apply("tanh")
    x, y = jnp.asarray(digits.x_train, dtype), jnp.asarray(digits.y_train, dtype)
    S = len(settings)
    ps = jnp.repeat(jnp.asarray([s[1] for s in settings], dtype), seeds)
    rates = jnp.repeat(jnp.asarray([s[2] for s in settings], dtype), seeds)
    seed = jnp.tile(jnp.arange(seeds), S)
    starts = jax.vmap(lambda s: models.init_mlp(jax.random.key(s), sizes, dtype=dtype))(seed)
    rec = training.train(models.full_batch_loss(apply, x, y), starts,
                         lambda hp: dal.dal(hp[0], hp[1], h_max=h_max), config,
                         hyperparams=(ps, rates), batched=True)
    test = jax.vmap(lambda p: models.accuracy(apply(p, jnp.asarray(digits.x_test, dtype)),
                                              jnp.asarray(digits.labels_test)))(rec.params)
    shape = lambda a: np.asarray(a).reshape(S, seeds)  # noqa: E731
    at_stop = rec.loss[np.arange(rec.loss.shape[0]), rec.stop_step]
    return MatchedLoss([s[0] for s in settings], float(goal), shape(rec.goal_reached),
                       shape(rec.stop_step), shape(at_stop), shape(test))


def mean_interval(samples, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    r"""Mean over the last axis and the half-width of its Student-*t* confidence interval.

    .. math:: \bar x \pm t_{n-1,\,(1+\text{level})/2}\; s/\sqrt n,

    with :math:`s` the sample standard deviation of the :math:`n` samples. Applied to paired
    differences (one per seed) it gives the interval of a difference between two settings.

    >>> mean, half = mean_interval([1.0, 2.0, 3.0])
    >>> float(mean), round(float(half), 3)
    (2.0, 2.484)
    """
    a = np.asarray(samples, dtype=float)
    if a.shape[-1] < 2 or not np.all(np.isfinite(a)):
        raise ValueError(f"mean_interval needs at least two finite samples on the last axis, got shape {a.shape}.")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}.")
    n = a.shape[-1]
    half = scipy.stats.t.ppf((1 + level) / 2, n - 1) * a.std(axis=-1, ddof=1) / np.sqrt(n)
    return a.mean(axis=-1), half
