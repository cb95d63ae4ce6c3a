"""Tests for pfcourse.dal_matched: settings compared at matched training loss (chapter 7)."""
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from pfcourse import data, dal_matched

SETTINGS = [("GD h=0.4", 0.0, 0.4), ("DAL-1", 1.0, 0.1)]


@pytest.fixture(scope="module")
def runs():
    digits = data.load_digits(n_train=100, n_test=50, seed=0)
    return dal_matched.matched_loss_runs(digits, SETTINGS, 3, [64, 8, 10], goal=0.6, steps=200)


def test_every_run_stops_at_the_goal_and_reads_its_accuracy_there(runs):
    assert runs.names == ["GD h=0.4", "DAL-1"] and runs.goal == 0.6
    for a in (runs.reached, runs.stop_step, runs.loss, runs.test_acc):
        assert np.shape(a) == (2, 3)
    assert runs.reached.all() and np.all(runs.loss <= 0.6) and np.all(runs.stop_step > 0)
    assert np.all((runs.test_acc >= 0) & (runs.test_acc <= 1))


def test_mean_interval_is_students_t():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 7))
    mean, half = dal_matched.mean_interval(a, level=0.9)
    lo, hi = scipy.stats.t.interval(0.9, 6, loc=a.mean(axis=1), scale=scipy.stats.sem(a, axis=1))
    np.testing.assert_allclose(mean - half, lo, rtol=1e-12)
    np.testing.assert_allclose(mean + half, hi, rtol=1e-12)


@pytest.mark.parametrize("samples, match", [([1.0], "at least two"), ([1.0, np.nan], "finite")])
def test_mean_interval_refuses_what_it_cannot_bound(samples, match):
    with pytest.raises(ValueError, match=match):
        dal_matched.mean_interval(samples)


def test_one_seed_is_refused_before_any_training():
    digits = data.load_digits(n_train=20, n_test=10, seed=0)
    with pytest.raises(ValueError, match="two seeds"):
        dal_matched.matched_loss_runs(digits, SETTINGS, 1, [64, 8, 10], goal=0.5)
    with pytest.raises(ValueError, match="loss_goal"):
        dal_matched.matched_loss_runs(digits, SETTINGS, 2, [64, 8, 10], goal=jnp.nan)
