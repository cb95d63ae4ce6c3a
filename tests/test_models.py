"""Tests for pfcourse.models: MLPs, PyTorch-style init, losses and the full-batch loss closure."""
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pfcourse import flows, models, spectral  # noqa: E402


def small_problem(seed=0, n=30, sizes=(5, 7, 6, 3), activation="tanh"):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, sizes[0])))
    labels = jnp.asarray(rng.integers(0, sizes[-1], n))
    y = jax.nn.one_hot(labels, sizes[-1], dtype=jnp.float64)
    params = models.init_mlp(jax.random.key(seed), sizes, activation)
    return params, x, y, labels


def test_init_shapes_and_pytorch_bounds():
    """Weights and biases of layer l lie in U(-1/sqrt(fan_in), 1/sqrt(fan_in)) and fill it."""
    sizes = [300, 200, 10]
    params = models.init_mlp(jax.random.key(0), sizes)
    assert [p["w"].shape for p in params] == [(300, 200), (200, 10)]
    assert [p["b"].shape for p in params] == [(200,), (10,)]
    for p, fan_in in zip(params, sizes[:-1]):
        bound = 1 / np.sqrt(fan_in)
        for leaf in (p["w"], p["b"]):
            leaf = np.asarray(leaf)
            assert np.all(np.abs(leaf) <= bound)
            if leaf.size >= 200:  # uniform on the whole interval, not narrower
                assert np.abs(leaf).max() > 0.95 * bound
    w = np.asarray(params[0]["w"]).ravel()
    # the variance of U(-b, b) is b^2 / 3
    assert abs(w.var() - (1 / 300) / 3) < 0.05 * (1 / 300) / 3
    assert models.num_params(params) == 300 * 200 + 200 + 200 * 10 + 10
    nob = models.init_mlp(jax.random.key(0), sizes, bias=False)
    assert all("b" not in p for p in nob) and models.num_params(nob) == 300 * 200 + 200 * 10


def test_fc_tanh_size():
    """fc-tanh of Cohen et al.: 3072-200-200-10 with biases."""
    params = models.init_mlp(jax.random.key(1), [3072, 200, 200, 10], dtype=jnp.float32)
    assert models.num_params(params) == 3072 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10
    assert params[0]["w"].dtype == jnp.float32


def test_mlp_matches_manual_forward():
    params, x, _, _ = small_problem()
    z = x
    for i, p in enumerate(params):
        z = z @ p["w"] + p["b"]
        if i < len(params) - 1:
            z = np.tanh(z)
    np.testing.assert_allclose(models.mlp(params, x), z, atol=1e-14)
    np.testing.assert_allclose(models.mlp(params, x[0]), z[0], atol=1e-14)
    relu = models.mlp(params, x, "relu")
    assert relu.shape == (30, 3)
    np.testing.assert_allclose(models.mlp_apply("relu")(params, x), relu)


def test_mlp_bad_input():
    params, x, _, _ = small_problem()
    with pytest.raises(ValueError, match="expects 5"):
        models.mlp(params, x[:, :4])
    with pytest.raises(ValueError, match="unknown activation"):
        models.mlp(params, x, "swishy")
    with pytest.raises(ValueError, match="two positive widths"):
        models.init_mlp(jax.random.key(0), [5])


def test_square_loss_formula():
    """eq-eos-square-loss: E = mean_i 1/2 ||f(x_i) - e_{y_i}||^2; integer labels are one-hot encoded."""
    rng = np.random.default_rng(0)
    out = rng.normal(size=(8, 4))
    labels = rng.integers(0, 4, 8)
    y = np.eye(4)[labels]
    expected = sum(0.5 * np.sum((out[i] - y[i]) ** 2) for i in range(8)) / 8
    np.testing.assert_allclose(models.square_loss(out, y), expected, rtol=1e-14)
    np.testing.assert_allclose(models.square_loss(out, jnp.asarray(labels)), expected, rtol=1e-14)
    with pytest.raises(ValueError, match="do not match"):
        models.square_loss(out, y[:, :3])


def test_cross_entropy_and_accuracy():
    rng = np.random.default_rng(1)
    out = rng.normal(size=(10, 3))
    labels = rng.integers(0, 3, 10)
    p = np.exp(out) / np.exp(out).sum(1, keepdims=True)
    expected = -np.mean(np.log(p[np.arange(10), labels]))
    np.testing.assert_allclose(models.cross_entropy_loss(out, jnp.asarray(labels)), expected, rtol=1e-13)
    np.testing.assert_allclose(models.cross_entropy_loss(out, np.eye(3)[labels]), expected, rtol=1e-13)
    acc = np.mean(out.argmax(1) == labels)
    np.testing.assert_allclose(models.accuracy(out, jnp.asarray(labels)), acc)
    np.testing.assert_allclose(models.accuracy(out, np.eye(3)[labels]), acc)
    with pytest.raises(ValueError, match="unknown loss"):
        models.loss_function("hinge")


@pytest.mark.parametrize("kind", ["square", "cross_entropy"])
def test_full_batch_loss_and_chunks(kind):
    """The chunked closure gives the same value, gradient and HVP as the plain one (n not a multiple)."""
    params, x, y, labels = small_problem(n=23)
    targets = y if kind == "square" else labels
    apply = models.mlp_apply("tanh")
    E = models.full_batch_loss(apply, x, targets, kind)
    Ec = models.full_batch_loss(apply, x, targets, kind, chunk_size=5)
    direct = models.loss_function(kind)(models.mlp(params, x), targets)
    np.testing.assert_allclose(E(params), direct, rtol=1e-14)
    np.testing.assert_allclose(Ec(params), direct, rtol=1e-12)
    g, gc = jax.grad(E)(params), jax.grad(Ec)(params)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(gc)):
        np.testing.assert_allclose(a, b, atol=1e-12)
    hv, hvc = spectral.hvp(E, params, g), spectral.hvp(Ec, params, g)
    for a, b in zip(jax.tree_util.tree_leaves(hv), jax.tree_util.tree_leaves(hvc)):
        np.testing.assert_allclose(a, b, atol=1e-11)


def test_full_batch_loss_works_with_flows_and_spectral():
    """E(params) plugs into flows.gradient_descent and spectral.sharpness over the list pytree."""
    params, x, y, _ = small_problem(n=12, sizes=(3, 4, 2))
    E = models.full_batch_loss(models.mlp_apply(), x, y)
    its = flows.gradient_descent(E, params, 0.1, 3)
    assert its[0]["w"].shape == (4, 3, 4)
    lam_dense = spectral.sharpness(E, params, "dense")
    lam_lanczos = spectral.sharpness(E, params, "lanczos", num_iter=40)
    np.testing.assert_allclose(lam_lanczos, lam_dense, rtol=1e-10)


def test_full_batch_loss_bad_input():
    params, x, y, _ = small_problem()
    with pytest.raises(ValueError, match="30 inputs but 29"):
        models.full_batch_loss(models.mlp_apply(), x, y[:29])
    with pytest.raises(ValueError, match="chunk_size"):
        models.full_batch_loss(models.mlp_apply(), x, y, chunk_size=0)
