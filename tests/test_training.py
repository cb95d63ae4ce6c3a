"""Tests for pfcourse.training: one loop, any optax optimiser, the sharpness tracked on a schedule."""
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from pfcourse import dal, models, spectral, training  # noqa: E402


def tiny(seed=0, n=24, sizes=(4, 6, 3)):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, sizes[0])))
    labels = rng.integers(0, sizes[-1], n)
    y = jnp.asarray(np.eye(sizes[-1])[labels])
    params = models.init_mlp(jax.random.key(seed), sizes, "tanh")
    return models.loss_and_accuracy(models.mlp_apply("tanh"), x, y), params


def manual(objective, params, opt, steps):
    """The reference: a plain Python optax loop, returning the iterates and the losses."""
    E = lambda p: objective(p)[0]  # noqa: E731
    state, its, losses = opt.init(params), [params], []
    update = jax.jit(lambda g, s, p: opt.update(g, s, p, loss_fn=E))
    for _ in range(steps):
        losses.append(E(params))
        updates, state = update(jax.grad(E)(params), state, params)
        params = optax.apply_updates(params, updates)
        its.append(params)
    losses.append(E(params))
    return its, np.asarray(losses)


def flat_steps(tree):
    """``(R, T, ...)`` pytree -> ``(R, T, D)``."""
    return np.asarray(jax.vmap(jax.vmap(lambda t: ravel_pytree(t)[0]))(tree))


@pytest.fixture(scope="module")
def sgd_run():
    objective, params = tiny()
    config = training.TrainConfig(steps=11, eig_every=4, k=3, num_iter=30, record_params=True)
    rec = training.train(objective, params, optax.sgd, config, hyperparams=jnp.array([0.3, 0.6]))
    return objective, params, config, rec


def test_sgd_is_gradient_descent(sgd_run):
    """With optax.sgd(h) the loop is GD, theta_{n+1} = theta_n - h grad E(theta_n) (eq-gd): in float64 the
    iterates and losses equal a plain optax loop's to 1e-12 (the same operations; only XLA's fusion of the
    sums may differ, a few ulps per step over 11 steps of a map with Lipschitz constant below 2)."""
    objective, params, _, rec = sgd_run
    for r, h in enumerate([0.3, 0.6]):
        its, losses = manual(objective, params, optax.sgd(h), 11)
        np.testing.assert_allclose(rec.loss[r], losses, rtol=1e-12)
        ref = np.stack([ravel_pytree(p)[0] for p in its])
        np.testing.assert_allclose(flat_steps(rec.step_params)[r], ref, rtol=1e-12, atol=1e-14)
        # the update along u_0 is -h times the gradient's projection, where a step was taken
        np.testing.assert_allclose(rec.update_projection[r, :-1], -h * rec.projection[r, :-1], rtol=1e-12)
        assert np.isnan(rec.update_projection[r, -1])
    assert list(rec.stop_step) == [11, 11] and not rec.diverged.any() and not rec.goal_reached.any()


def test_record_shapes(sgd_run):
    """R runs, T = steps + 1 steps, probes at 0, 4, 8 and the last step, k eigenpairs, D parameters."""
    _, params, config, rec = sgd_run
    D = models.num_params(params)
    R, T = 2, config.steps + 1
    for a in (rec.loss, rec.accuracy, rec.grad_norm, rec.projection, rec.update_projection):
        assert a.shape == (R, T)
    np.testing.assert_array_equal(rec.probe_step, [[0, 4, 8, 11]] * 2)
    assert rec.eigenvalues.shape == rec.eig_projections.shape == (R, 4, 3)
    assert rec.bottom_eigenvalue.shape == (R, 4) and np.all(np.isnan(rec.bottom_eigenvalue))
    assert rec.eigenvectors.shape == (R, D, 3) and rec.sharpness.shape == (R, 4)
    assert flat_steps(rec.step_params).shape == (R, T, D) and rec.step_opt_state is None
    assert jax.tree_util.tree_leaves(rec.params)[0].shape[0] == R and rec.probes == 4


def test_probes_match_the_dense_hessian(sgd_run):
    """At each probe the top-k eigenvalues equal hessian_eigh's at that step's iterate (num_iter >= D:
    Lanczos is exact up to rounding, 1e-9 relative in float64)."""
    objective, _, _, rec = sgd_run
    E = lambda p: objective(p)[0]  # noqa: E731
    eigh = jax.jit(lambda p: spectral.hessian_eigh(E, p))
    for m, s in enumerate(rec.probe_step[1]):
        p = jax.tree_util.tree_map(lambda a: a[1, s], rec.step_params)
        lam, U = eigh(p)
        np.testing.assert_allclose(rec.eigenvalues[1, m], lam[:3], rtol=1e-9, atol=1e-11)
        g = ravel_pytree(jax.grad(E)(p))[0]
        np.testing.assert_allclose(np.abs(rec.eig_projections[1, m]), np.abs(U[:, :3].T @ g), atol=1e-9)


def test_adam_and_dal_through_the_loop():
    """Any optax optimiser: Adam, and DAL (an extra-args transform that gets loss_fn), give the iterates of a
    plain optax loop to 1e-12 in float64; the recorded optimiser state holds DAL's rate h_t at every step."""
    objective, params = tiny(1)
    config = training.TrainConfig(steps=6, eig_every=3, k=1, num_iter=10, record_params=True, record_opt_state=True)
    for opt in (optax.adam(0.05), dal.dal(1.0, 0.1, h_max=5.0)):
        rec = training.train(objective, params, opt, config)
        its, losses = manual(objective, params, opt, 6)
        np.testing.assert_allclose(rec.loss[0], losses, rtol=1e-12)
        np.testing.assert_allclose(flat_steps(rec.step_params)[0], np.stack([ravel_pytree(p)[0] for p in its]),
                                   rtol=1e-12, atol=1e-14)
    rates = np.asarray(rec.step_opt_state.rate[0])
    assert rates.shape == (7,) and np.all(rates[:6] > 0) and len(set(np.round(rates[:6], 12))) > 1


class CountingUpdates:
    """optax.sgd(h) that counts, on the host, how many updates (steps) the compiled code computes."""

    def __init__(self, h):
        self.calls = 0
        inner = optax.sgd(h)

        def update(g, state, params=None):
            jax.debug.callback(self.count)
            return inner.update(g, state, params)

        self.opt = optax.GradientTransformation(inner.init, update)

    def count(self):
        self.calls += 1


@pytest.mark.parametrize("steps, eig_every", [(100, 50), (10, 4), (8, 4)])
def test_last_chunk_computes_only_the_steps_asked_for(steps, eig_every):
    """Issue 17: steps = 100 with eig_every = 50 used to compute 150 gradient steps. Now the compiled code
    computes exactly `steps` updates, and steps + 1 losses are recorded, whatever the remainder."""
    objective, params = tiny(n=8, sizes=(2, 3, 2))
    counter = CountingUpdates(0.1)
    rec = training.train(objective, params, counter.opt, training.TrainConfig(steps, eig_every, k=1, num_iter=5))
    assert counter.calls == steps
    assert np.isfinite(rec.loss).sum() == steps + 1
    expected = list(range(0, steps + 1, eig_every)) + ([steps] if steps % eig_every else [])
    np.testing.assert_array_equal(rec.probe_step[0], expected)


def test_one_compilation_serves_calls_of_the_same_structure():
    """The objective and the network are data: a second call with other data of the same shapes, other
    learning rates, another start and another number of steps traces nothing again (a Python side effect
    counts the traces)."""
    traces = []

    def gd(h):
        traces.append(1)  # runs only while JAX traces
        return optax.sgd(h)

    config = training.TrainConfig(steps=5, eig_every=3, k=1, num_iter=4)
    objective, params = tiny(2, n=10, sizes=(3, 4, 2))
    training.train(objective, params, gd, config, hyperparams=jnp.array([0.1, 0.2]))
    first = len(traces)
    assert first > 0
    other, params2 = tiny(3, n=10, sizes=(3, 4, 2))
    longer = training.TrainConfig(steps=8, eig_every=3, k=1, num_iter=4)
    rec = training.train(other, params2, gd, longer, hyperparams=jnp.array([0.3, 0.05]))
    assert len(traces) == first and rec.loss.shape == (2, 9)
    assert models.mlp_apply("tanh") == models.mlp_apply("tanh")


def test_batched_starts_and_the_bottom_of_the_spectrum():
    """Several seeds (batched params) side by side; with bottom=True each probe also records the smallest
    Ritz value, which equals the smallest Hessian eigenvalue when num_iter >= D (exact Krylov space)."""
    objective, p0 = tiny(4, n=12, sizes=(3, 4, 2))
    _, p1 = tiny(5, n=12, sizes=(3, 4, 2))
    params = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), p0, p1)
    D = models.num_params(p0)
    config = training.TrainConfig(steps=4, eig_every=2, k=2, num_iter=D, bottom=True, record_params=True)
    rec = training.train(objective, params, optax.sgd(0.2), config, batched=True)
    E = lambda p: objective(p)[0]  # noqa: E731
    eigh = jax.jit(lambda p: spectral.hessian_eigh(E, p)[0])
    for r in range(2):
        for m, s in enumerate(rec.probe_step[r]):
            lam = eigh(jax.tree_util.tree_map(lambda a: a[r, s], rec.step_params))
            np.testing.assert_allclose(rec.bottom_eigenvalue[r, m], lam[-1], rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(rec.eigenvalues[r, m], lam[:2], rtol=1e-9, atol=1e-11)


def test_hessian_spectrum_ends_against_the_dense_spectrum():
    """spectral.hessian_spectrum_ends on a quadratic with eigenvalues -3..6: both ends exact for num_iter = D
    (Lanczos is then exact up to rounding, 1e-10), eigenvectors satisfy A u = lambda u; and with fewer
    iterations the Ritz values lie inside [lambda_min, lambda_max] (Cauchy interlacing)."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    lam = np.arange(-3.0, 7.0)
    A = jnp.asarray(Q @ np.diag(lam) @ Q.T)
    E = lambda t: 0.5 * t @ A @ t  # noqa: E731
    ends = spectral.hessian_spectrum_ends(E, jnp.ones(10), k=2, num_iter=10)
    np.testing.assert_allclose(ends.top, [6, 5], atol=1e-10)
    np.testing.assert_allclose(ends.bottom, [-3, -2], atol=1e-10)
    np.testing.assert_allclose(A @ ends.bottom_vectors, ends.bottom_vectors * ends.bottom, atol=1e-9)
    np.testing.assert_allclose(A @ ends.top_vectors, ends.top_vectors * ends.top, atol=1e-9)
    few = spectral.hessian_spectrum_ends(E, jnp.ones(10), k=1, num_iter=4)
    assert -3 - 1e-12 <= float(few.bottom[0]) and float(few.top[0]) <= 6 + 1e-12


def test_bad_settings():
    objective, params = tiny()
    with pytest.raises(ValueError, match="num_iter >= k"):
        training.TrainConfig(steps=5, k=5, num_iter=3)
    with pytest.raises(ValueError, match="eig_every"):
        training.TrainConfig(steps=5, eig_every=0)
    with pytest.raises(ValueError, match="must agree"):
        training.train(objective, jax.tree_util.tree_map(lambda a: jnp.stack([a, a, a]), params), optax.sgd,
                       training.TrainConfig(steps=2), hyperparams=jnp.array([0.1, 0.2]), batched=True)
    with pytest.raises(TypeError, match="TrainConfig"):
        training.train(objective, params, optax.sgd(0.1), dict(steps=2))


def test_loss_goal_stops_each_run_at_the_first_step_below_it():
    """Each run stops at the first n with E(theta_n) <= loss_goal (its own n), and only there;
    a run that never gets there runs the whole budget and is not marked as having reached it."""
    objective, params = tiny()
    E = lambda p: objective(p)[0]  # noqa: E731
    _, free = manual(objective, params, optax.sgd(0.3), 30)
    goal = float(free[12])                       # the slow run reaches it at step 12, the fast earlier
    config = training.TrainConfig(steps=30, eig_every=8, k=1, num_iter=2, loss_goal=goal)
    rec = training.train(objective, params, optax.sgd, config, hyperparams=jnp.array([0.3, 0.6, 1e-4]))
    for r in range(2):
        first = int(np.argmax(rec.loss[r] <= goal))
        assert rec.stop_step[r] == first and rec.goal_reached[r] and not rec.diverged[r]
        assert np.all(rec.loss[r, :first] > goal) and np.all(np.isnan(rec.loss[r, first + 1:]))
        np.testing.assert_allclose(E(jax.tree_util.tree_map(lambda a: a[r], rec.params)), rec.loss[r, first],
                                   rtol=1e-12)   # the parameters returned are those of the stop step
    assert rec.stop_step[0] == 12 and rec.stop_step[1] < 12
    assert rec.stop_step[2] == 30 and not rec.goal_reached[2]   # h = 1e-4 never gets there


@pytest.mark.parametrize("goal", [0.0, -1.0, float("nan"), float("inf")])
def test_a_loss_goal_must_be_a_positive_number(goal):
    with pytest.raises(ValueError, match="loss_goal must be a positive number"):
        training.TrainConfig(steps=5, loss_goal=goal)
