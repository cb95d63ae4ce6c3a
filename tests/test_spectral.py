"""Tests for pfcourse.spectral: HVPs, dense Hessians, Lanczos, power iteration, sharpness."""
import functools

import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from pfcourse import spectral  # noqa: E402
from pfcourse.spectral import (  # noqa: E402
    eigh_descending,
    hessian,
    hessian_eigh,
    hvp,
    lanczos,
    power_iteration,
    sharpness,
    top_hessian_eigenpairs,
)


# --------------------------------------------------------------------------- fixtures


def pytree_loss(p):
    """A non-quadratic loss over a dict of two arrays."""
    a, b = p["a"], p["b"]
    return jnp.sum(jnp.sin(a) ** 2) * jnp.sum(b**3) + jnp.sum(jnp.tanh(a @ b)) + jnp.sum(a**4) / 4


def random_pytree(seed):
    rng = np.random.default_rng(seed)
    return {"a": jnp.asarray(rng.normal(size=(3, 2))), "b": jnp.asarray(rng.normal(size=(2,)))}


def random_symmetric(rng, n, spectrum=None):
    """Q diag(spectrum) Q^T with Q Haar-random; spectrum defaults to standard normal (mixed signs)."""
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = rng.normal(size=n) if spectrum is None else np.asarray(spectrum, float)
    A = (Q * lam) @ Q.T
    return 0.5 * (A + A.T)


def mlp_problem(seed=0, sizes=(4, 8, 3), n=20):
    """Tiny tanh MLP with square loss on random data; params as a dict pytree."""
    rng = np.random.default_rng(seed)
    d_in, d_h, d_out = sizes
    params = {
        "W1": jnp.asarray(rng.normal(size=(d_in, d_h)) / np.sqrt(d_in)),
        "b1": jnp.asarray(0.1 * rng.normal(size=d_h)),
        "W2": jnp.asarray(rng.normal(size=(d_h, d_out)) / np.sqrt(d_h)),
        "b2": jnp.asarray(0.1 * rng.normal(size=d_out)),
    }
    X = jnp.asarray(rng.normal(size=(n, d_in)))
    Y = jnp.asarray(rng.normal(size=(n, d_out)))

    def E(p):
        out = jnp.tanh(X @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        return 0.5 * jnp.mean(jnp.sum((out - Y) ** 2, axis=1))

    return E, params


# Dense references, jitted (one compile each) to keep the file fast; E is a static argument.
hessian_jit = jax.jit(hessian, static_argnums=0)
hessian_eigh_jit = jax.jit(hessian_eigh, static_argnums=0)


# --------------------------------------------------------------------------- hvp and hessian


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hvp_matches_dense_hessian_on_pytree(seed):
    params = random_pytree(seed)
    v = random_pytree(seed + 100)
    Hv = hvp(pytree_loss, params, v)
    assert jax.tree_util.tree_structure(Hv) == jax.tree_util.tree_structure(params)
    flat_v, _ = ravel_pytree(v)
    expected = hessian_jit(pytree_loss, params) @ flat_v
    np.testing.assert_allclose(ravel_pytree(Hv)[0], expected, rtol=0, atol=1e-10 * np.max(np.abs(expected)))


def test_hvp_on_raw_array_and_linearity():
    def E(x):
        return jnp.sum(jnp.cos(x) * x**2)

    x = jnp.linspace(-1.0, 2.0, 5)
    u, w = jnp.arange(5.0), jnp.ones(5)
    lhs = hvp(E, x, 2.0 * u - 3.0 * w)
    rhs = 2.0 * hvp(E, x, u) - 3.0 * hvp(E, x, w)
    np.testing.assert_allclose(lhs, rhs, atol=1e-12)
    # This loss is separable: H is diagonal with E_i'' = (2 - x^2) cos x - 4 x sin x.
    np.testing.assert_allclose(hvp(E, x, w), (2 - x**2) * jnp.cos(x) - 4 * x * jnp.sin(x), atol=1e-12)


def test_hessian_symmetric_and_equals_jax_hessian_on_flat_input():
    params = random_pytree(3)
    H = hessian(pytree_loss, params)
    D = ravel_pytree(params)[0].size
    assert H.shape == (D, D) == (8, 8)
    np.testing.assert_array_equal(H, H.T)
    flat, unravel = ravel_pytree(params)
    H_ref = jax.jit(jax.hessian(lambda x: pytree_loss(unravel(x))))(flat)
    np.testing.assert_allclose(H, H_ref, rtol=0, atol=1e-12 * np.max(np.abs(H_ref)))


@pytest.mark.parametrize("n", [1, 6])
def test_hessian_of_quadratic_is_A(n):
    A = random_symmetric(np.random.default_rng(n), n)
    theta = jnp.asarray(np.random.default_rng(10 + n).normal(size=n))
    H = hessian_jit(lambda t: 0.5 * t @ A @ t, theta)
    np.testing.assert_allclose(H, A, rtol=0, atol=1e-12)


def test_hessian_eigh_descending_and_reconstructs():
    params = random_pytree(4)
    lam, U = hessian_eigh_jit(pytree_loss, params)
    H = hessian_jit(pytree_loss, params)
    assert np.all(np.diff(np.asarray(lam)) <= 0)
    np.testing.assert_allclose(U @ jnp.diag(lam) @ U.T, H, atol=1e-10 * np.max(np.abs(H)))
    np.testing.assert_allclose(U.T @ U, np.eye(len(lam)), atol=1e-12)
    np.testing.assert_allclose(lam[0], np.linalg.eigvalsh(np.asarray(H))[-1], rtol=1e-12)


def test_eigh_descending_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        eigh_descending(jnp.ones((2, 3)))


# --------------------------------------------------------------------------- lanczos on matrices
# One jitted wrapper per start type: each (n, k, num_iter) compiles once, which keeps the file fast.


@functools.partial(jax.jit, static_argnums=(2, 3))
def lanczos_dense(A, key, k, num_iter):
    return lanczos(lambda x: A @ x, A.shape[0], k, num_iter, key=key)


@functools.partial(jax.jit, static_argnums=(2, 3))
def lanczos_dense_v0(A, v0, k, num_iter):
    return lanczos(lambda x: A @ x, v0, k, num_iter)


def check_against_eigh(A, k, num_iter, seed=0, tol=1e-8, vec_gap=1e-3):
    """Top-k Lanczos vs numpy eigh: values to ``tol`` relative, vectors up to sign where separated."""
    A = np.asarray(A)
    n = A.shape[0]
    w, V = np.linalg.eigh(A)
    w, V = w[::-1], V[:, ::-1]
    lam, U = lanczos_dense(jnp.asarray(A), jax.random.key(seed), k, num_iter)
    assert lam.shape == (k,) and U.shape == (n, k)
    assert np.all(np.isfinite(lam)) and np.all(np.isfinite(U))
    scale = max(np.max(np.abs(w)), 1e-300)
    np.testing.assert_allclose(lam, w[:k], rtol=0, atol=tol * scale)
    np.testing.assert_allclose(np.linalg.norm(U, axis=0), 1.0, atol=1e-10)
    gaps = np.abs(np.diff(w))
    for i in range(k):
        left = gaps[i - 1] if i > 0 else np.inf
        right = gaps[i] if i < n - 1 else np.inf
        if min(left, right) > vec_gap * scale:
            assert abs(np.dot(U[:, i], V[:, i])) == pytest.approx(1.0, abs=1e-8)
    return lam, U


def test_lanczos_full_krylov_is_exact_eigendecomposition():
    n = 30
    A = random_symmetric(np.random.default_rng(2), n)  # normal spectrum: negative eigenvalues too
    lam, U = check_against_eigh(A, k=n, num_iter=n, seed=2)
    np.testing.assert_allclose(U.T @ U, np.eye(n), atol=1e-10)  # basis stayed orthonormal
    np.testing.assert_allclose(A @ U, U * lam, atol=1e-10)  # Ritz pairs are eigenpairs


@settings(max_examples=10, deadline=None)
@given(n=st.sampled_from([1, 4, 13]), seed=st.integers(0, 2**31 - 1))
def test_lanczos_property_full_spectrum(n, seed):
    A = random_symmetric(np.random.default_rng(seed), n)
    check_against_eigh(A, k=n, num_iter=n, seed=seed % 997)


@pytest.mark.parametrize(
    "spectrum",
    [
        [5.0, 5.0, 5.0, 1.0, 0.5, -2.0, -3.0, 0.1],  # repeated top eigenvalue (multiplicity 3)
        [4.0, 4.0 + 1e-9, 4.0 - 1e-9, 1.0, -1.0, 0.0, 2.0, 3.0],  # clustered top eigenvalues
        [2.0, 2.0, -2.0, -2.0, 1.0, 1.0, 0.0, 0.0],  # only four distinct values
        -np.arange(1.0, 9.0),  # negative definite
        [1e-3, -7.0, 6.9, 0.0, 0.0, 0.0, 2.0, 2.0],  # dominant eigenvalue negative
    ],
)
def test_lanczos_repeated_clustered_negative(spectrum):
    A = random_symmetric(np.random.default_rng(11), len(spectrum), spectrum=spectrum)
    lam, _ = check_against_eigh(A, k=4, num_iter=len(spectrum))
    np.testing.assert_allclose(lam, np.sort(spectrum)[::-1][:4], atol=1e-10 * np.max(np.abs(spectrum)))


def test_lanczos_partial_krylov_top_eigenvalue_with_gap():
    n = 200
    rng = np.random.default_rng(5)
    spectrum = np.concatenate([[10.0, 6.0], rng.uniform(-1.0, 1.0, n - 2)])
    A = random_symmetric(rng, n, spectrum=spectrum)
    lam, U = lanczos_dense(jnp.asarray(A), jax.random.key(0), 2, 30)
    np.testing.assert_allclose(lam, [10.0, 6.0], rtol=1e-8)
    w, V = np.linalg.eigh(A)
    assert abs(np.dot(U[:, 0], V[:, -1])) == pytest.approx(1.0, abs=1e-8)


# --------------------------------------------------------------------------- breakdown


def rank_two(n, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    return 3.0 * np.outer(a, a) / (a @ a) - 2.0 * np.outer(b, b) / (b @ b)  # eigenvalues 3-ish, -2-ish, 0...


def test_lanczos_breakdown_rank_two_partial():
    # The Krylov space span{v0, A v0, A^2 v0, ...} has dimension 3: breakdown at step 3 of 5.
    A = rank_two(13, 0)
    w = np.sort(np.linalg.eigvalsh(A))[::-1]
    lam, U = lanczos_dense(jnp.asarray(A), jax.random.key(0), 5, 5)
    assert np.all(np.isfinite(lam)) and np.all(np.isfinite(U))
    # Every Ritz value is an eigenvalue (span(Q) is a union of invariant subspaces) ...
    assert np.all(np.min(np.abs(np.asarray(lam)[:, None] - w[None, :]), axis=1) < 1e-10)
    # ... the extreme ones are found, and the Ritz vectors are eigenvectors.
    np.testing.assert_allclose([lam[0], lam[-1]], [w[0], w[-1]], atol=1e-10)
    np.testing.assert_allclose(A @ U, U * lam, atol=1e-10)


def test_lanczos_breakdown_rank_two_full():
    A = rank_two(13, 1)
    check_against_eigh(A, k=13, num_iter=13)  # zeros with multiplicity 11 in the middle


def test_lanczos_exact_breakdown_from_an_eigenvector():
    # A e_0 = 4 e_0 exactly: the first residual is exactly zero, a fresh direction must take over.
    spectrum = jnp.array([4.0, 1.0, 3.0, -5.0, 2.0, 0.0, 0.5, 1.5])
    A = jnp.diag(spectrum)
    v0 = jnp.zeros(8).at[0].set(1.0)
    lam, U = lanczos_dense_v0(A, v0, 4, 8)
    assert np.all(np.isfinite(lam)) and np.all(np.isfinite(U))
    np.testing.assert_allclose(lam, [4.0, 3.0, 2.0, 1.5], atol=1e-12)
    lam1, U1 = lanczos(lambda x: A @ x, v0, k=1, num_iter=2)  # eager path
    np.testing.assert_allclose(lam1, [4.0], atol=1e-12)
    np.testing.assert_allclose(jnp.abs(U1[:, 0]), v0, atol=1e-12)


def test_lanczos_zero_matrix():
    lam, U = lanczos_dense(jnp.zeros((8, 8)), jax.random.key(0), 4, 8)
    np.testing.assert_array_equal(lam, np.zeros(4))
    assert np.all(np.isfinite(U))


# --------------------------------------------------------------------------- residual stop


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def lanczos_dense_info(A, key, k, num_iter, tol):
    return lanczos(lambda x: A @ x, A.shape[0], k, num_iter, key=key, tol=tol, return_info=True)


def gapped(n=200, seed=5):
    rng = np.random.default_rng(seed)
    spectrum = np.concatenate([[10.0, 6.0], rng.uniform(-1.0, 1.0, n - 2)])
    return random_symmetric(rng, n, spectrum=spectrum)


def test_lanczos_residual_stop_and_reported_error():
    A = gapped()
    w = np.sort(np.linalg.eigvalsh(A))[::-1]
    lam, U, info = lanczos_dense_info(jnp.asarray(A), jax.random.key(0), 2, 60, 1e-9)
    J = int(info.iterations)
    # It stopped early (the gap 6 -> 1 gives convergence like (1/6)^j: ~20 steps), below num_iter.
    assert 2 <= J < 60
    r = np.asarray(info.residuals)
    assert np.all(r <= 1e-9 * 10.0)  # the stopping rule: tol times the largest Ritz value
    # The reported residual is the true one, ||A y - theta y||, to rounding (the basis is kept
    # orthonormal to ~1e-15, so the recurrence's |beta s| and the direct norm agree to ~1e-13).
    np.testing.assert_allclose(np.linalg.norm(A @ U - U * lam, axis=0), r, rtol=0, atol=1e-12)
    # Each Ritz value is within its residual of an eigenvalue (Golub & Van Loan, Thm. 8.1.15);
    # 1e-13 allows for rounding in theta itself.
    assert np.all(np.abs(np.asarray(lam) - w[:2]) <= r + 1e-13)
    # Without tol: exactly num_iter steps, the same answer as the plain call, residuals reported.
    lam30, U30, info30 = lanczos_dense_info(jnp.asarray(A), jax.random.key(0), 2, 30, None)
    assert int(info30.iterations) == 30
    lam_plain, U_plain = lanczos_dense(jnp.asarray(A), jax.random.key(0), 2, 30)
    np.testing.assert_array_equal(lam30, lam_plain)
    np.testing.assert_array_equal(U30, U_plain)


def test_lanczos_loose_tol_stops_sooner_with_a_larger_reported_error():
    A = gapped()
    w = np.sort(np.linalg.eigvalsh(A))[::-1]
    _, _, tight = lanczos_dense_info(jnp.asarray(A), jax.random.key(0), 2, 60, 1e-9)
    lam, _, loose = lanczos_dense_info(jnp.asarray(A), jax.random.key(0), 2, 60, 1e-3)
    assert int(loose.iterations) < int(tight.iterations)
    r = np.asarray(loose.residuals)
    assert np.all(r <= 1e-3 * 10.0) and np.max(r) > np.max(np.asarray(tight.residuals))
    assert np.all(np.abs(np.asarray(lam) - w[:2]) <= r + 1e-13)  # the bound still holds


def test_lanczos_tol_needs_k_steps_and_handles_breakdown():
    # Breakdown at step 3 (rank two): residual 0 after 3 steps, but k = 5 needs 5 Ritz values.
    A = rank_two(13, 0)
    lam, U, info = lanczos_dense_info(jnp.asarray(A), jax.random.key(0), 5, 8, 1e-6)
    assert int(info.iterations) >= 5 and np.all(np.isfinite(lam)) and np.all(np.isfinite(U))
    np.testing.assert_allclose(lam[0], np.max(np.linalg.eigvalsh(A)), atol=1e-10)


def test_lanczos_rejects_bad_tol():
    for tol in (0.0, 1.0, -1e-3, "1e-3", True):
        with pytest.raises(ValueError, match="tol must be None"):
            lanczos(lambda x: x, 4, k=1, num_iter=2, tol=tol)


# --------------------------------------------------------------------------- lanczos on a network


@pytest.fixture(scope="module")
def mlp():
    """The 4-8-3 tanh MLP, its flat size D and its dense eigendecomposition (computed once)."""
    E, params = mlp_problem()
    lam, U = hessian_eigh_jit(E, params)
    return E, params, ravel_pytree(params)[0].size, lam, U


def test_top_hessian_eigenpairs_small_mlp(mlp):
    E, params, D, lam_dense, U_dense = mlp
    assert D == 4 * 8 + 8 + 8 * 3 + 3
    assert lam_dense[-1] < 0 < lam_dense[0]  # an indefinite Hessian away from a minimum
    lam, U = top_hessian_eigenpairs(E, params, k=3, num_iter=D)
    assert lam.shape == (3,) and U.shape == (D, 3)
    np.testing.assert_allclose(lam, lam_dense[:3], rtol=1e-8)
    for i in range(3):
        assert abs(np.dot(U[:, i], U_dense[:, i])) == pytest.approx(1.0, abs=1e-8)
    # Eigenvectors unravel into pytrees like params, and satisfy H u = lambda u.
    _, unravel = ravel_pytree(params)
    Hu0 = hvp(E, params, unravel(U[:, 0]))
    np.testing.assert_allclose(ravel_pytree(Hu0)[0], lam[0] * U[:, 0], atol=1e-9 * abs(lam[0]))


def test_top_hessian_eigenpairs_fewer_iterations_and_warm_start(mlp):
    E, params, D, lam_dense, _ = mlp
    # num_iter = 20 < D = 67 still gives the sharpness to high accuracy on this network ...
    lam, U = top_hessian_eigenpairs(E, params, k=1, num_iter=20)
    np.testing.assert_allclose(lam, lam_dense[:1], rtol=1e-8)
    # ... and a warm start from that Ritz vector needs only a few iterations.
    lam_warm, _ = top_hessian_eigenpairs(E, params, k=1, num_iter=3, v0=U[:, 0])
    np.testing.assert_allclose(lam_warm, lam_dense[:1], rtol=1e-10)


def test_top_hessian_eigenpairs_with_tol_reports_steps_and_error(mlp):
    E, params, D, lam_dense, _ = mlp
    lam, U, info = jax.jit(lambda p: top_hessian_eigenpairs(E, p, k=1, num_iter=40, tol=1e-10,
                                                            return_info=True))(params)
    assert int(info.iterations) < 40  # stopped on the residual (20 fixed steps gave 1e-8 above)
    # |theta - lambda| <= residual (Golub & Van Loan, Thm. 8.1.15), plus rounding of ~1e-13.
    assert abs(float(lam[0]) - float(lam_dense[0])) <= float(info.residuals[0]) + 1e-13
    assert float(info.residuals[0]) <= 1e-10 * abs(float(lam_dense[0])) * 1.0001


def test_sharpness_under_jit(mlp):
    E, params, _, lam_dense, _ = mlp
    s = jax.jit(lambda p: sharpness(E, p))(params)
    np.testing.assert_allclose(s, lam_dense[0], rtol=1e-8)
    s_pow = jax.jit(lambda p: sharpness(E, p, method="power", num_iter=1000))(params)
    np.testing.assert_allclose(s_pow, lam_dense[0], rtol=1e-6)


# --------------------------------------------------------------------------- power iteration, sharpness


def test_power_iteration_dominant_eigenpair():
    A = jnp.asarray(random_symmetric(np.random.default_rng(1), 10, spectrum=[-9.0, 5, 4, 3, 2, 1, 0, -1, -2, -3]))
    lam, v = power_iteration(lambda x: A @ x, jnp.ones(10), num_iter=300)
    np.testing.assert_allclose(lam, -9.0, rtol=1e-10)  # largest modulus, signed
    np.testing.assert_allclose(A @ v, lam * v, atol=1e-8)


def quartic_psd(t):
    """Convex loss over a dict pytree; its Hessian is diag(c_i + 3 x_i^2, 2, 2), c = (1, 2, 3, 4)."""
    return 0.5 * jnp.sum(jnp.arange(1.0, 5.0) * t["x"] ** 2) + 0.25 * jnp.sum(t["x"] ** 4) + jnp.sum(t["y"] ** 2)


PSD_PARAMS = {"x": jnp.array([0.3, -0.2, 0.5, 1.0]), "y": jnp.array([0.7, 0.1])}
PSD_SHARPNESS = 4.0 + 3.0 * 1.0**2  # the largest of 1.27, 2.12, 3.75, 7, 2, 2


def test_sharpness_three_methods_agree_psd():
    H = hessian(quartic_psd, PSD_PARAMS)
    np.testing.assert_allclose(H, np.diag([1.27, 2.12, 3.75, 7.0, 2.0, 2.0]), atol=1e-12)
    np.testing.assert_allclose(sharpness(quartic_psd, PSD_PARAMS, method="dense"), PSD_SHARPNESS, rtol=1e-12)
    np.testing.assert_allclose(sharpness(quartic_psd, PSD_PARAMS), PSD_SHARPNESS, rtol=1e-10)
    np.testing.assert_allclose(sharpness(quartic_psd, PSD_PARAMS, method="power"), PSD_SHARPNESS, rtol=1e-10)


def test_sharpness_is_largest_algebraic_at_a_saddle():
    # H = diag(1, -10): lambda_0 = 1 although the dominant eigenvalue by modulus is -10.
    # (D = 2 < the default num_iter = 20: Lanczos caps num_iter at D, where it is exact.)
    E = lambda t: 0.5 * t[0] ** 2 - 5.0 * t[1] ** 2
    theta = jnp.array([0.1, 0.2])
    for method in spectral.SHARPNESS_METHODS:
        np.testing.assert_allclose(sharpness(E, theta, method=method), 1.0, rtol=1e-10, err_msg=method)


def test_float32_params_give_float32_results():
    params32 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), PSD_PARAMS)
    for method in spectral.SHARPNESS_METHODS:
        s = sharpness(quartic_psd, params32, method=method)
        assert s.dtype == jnp.float32, method
        np.testing.assert_allclose(s, PSD_SHARPNESS, rtol=1e-5, err_msg=method)
    assert ravel_pytree(hvp(quartic_psd, params32, PSD_PARAMS))[0].dtype == jnp.float32  # v cast to f32


# --------------------------------------------------------------------------- bad input


def test_lanczos_rejects_k_greater_than_num_iter():
    with pytest.raises(ValueError, match="k <= num_iter"):
        lanczos(lambda x: x, 10, k=5, num_iter=3)
    with pytest.raises(ValueError, match="num_iter <= dim"):
        lanczos(lambda x: x, 4, k=1, num_iter=5)
    with pytest.raises(ValueError, match="k <= num_iter"):
        top_hessian_eigenpairs(quartic_psd, {"x": jnp.ones(4), "y": jnp.ones(2)}, k=4, num_iter=3)
    with pytest.raises(ValueError, match="k=3 eigenpairs asked for, but the Hessian is 2x2"):
        top_hessian_eigenpairs(lambda t: jnp.sum(t**2), jnp.ones(2), k=3)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        top_hessian_eigenpairs(lambda t: jnp.sum(t**2), jnp.ones(2), v0=jnp.ones(3))
    with pytest.raises(ValueError, match="Python int"):
        lanczos(lambda x: x, 4, k=1.5, num_iter=3)


def test_lanczos_rejects_bad_v0_and_matvec():
    with pytest.raises(ValueError, match="shape"):
        lanczos(lambda x: x, jnp.ones((2, 2)), k=1, num_iter=2)
    with pytest.raises(ValueError, match="zero"):
        lanczos(lambda x: x, jnp.zeros(3), k=1, num_iter=2)
    with pytest.raises(ValueError, match="matvec"):
        lanczos(lambda x: x[:2], 3, k=1, num_iter=2)
    with pytest.raises(ValueError, match="zero"):
        power_iteration(lambda x: x, jnp.zeros(3), num_iter=2)


def test_hvp_rejects_mismatched_v():
    params = random_pytree(0)
    with pytest.raises(ValueError, match=r"Expected .*\(3, 2\)"):
        hvp(pytree_loss, params, {"a": jnp.ones((2, 3)), "b": jnp.ones(2)})
    with pytest.raises(ValueError, match="structure"):
        hvp(pytree_loss, params, {"a": jnp.ones((3, 2))})
    with pytest.raises(ValueError, match="structure"):
        hvp(pytree_loss, params, ravel_pytree(params)[0])


def test_sharpness_rejects_unknown_method_and_nonfinite_params():
    with pytest.raises(ValueError, match="lanczos.*dense.*power"):
        sharpness(quartic_psd, PSD_PARAMS, method="arnoldi")
    bad = {"x": jnp.array([1.0, jnp.nan, 0.0, 0.0]), "y": jnp.ones(2)}
    for method in spectral.SHARPNESS_METHODS:
        with pytest.raises(ValueError, match="non-finite"):
            sharpness(quartic_psd, bad, method=method)
    with pytest.raises(ValueError, match="non-finite"):
        sharpness(quartic_psd, {"x": jnp.full(4, jnp.inf), "y": jnp.ones(2)})


# --------------------------------------------------------------------------- probes that used to go silently wrong


def test_non_symmetric_dense_input_is_refused():
    """eigh and Lanczos assume A = A^T: on A = [[1, 10], [0, 2]] (eigenvalues 1, 2) Lanczos gave
    11.06 and -8.06. Dense input is checked, to a tolerance relative to the dtype."""
    A = jnp.array([[1.0, 10.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="not symmetric.*A.T\\) / 2"):
        eigh_descending(A)
    with pytest.raises(ValueError, match="not symmetric"):
        lanczos(A, 2, k=2, num_iter=2)
    with pytest.raises(Exception, match="not symmetric") as caught:  # traced: at run time
        eqx.filter_jit(eigh_descending)(A)
    assert "INTERNAL" not in str(caught.value)
    # a symmetric matrix passed to lanczos directly works; rounding-level asymmetry is accepted
    S = jnp.asarray(random_symmetric(np.random.default_rng(0), 6))
    np.testing.assert_allclose(lanczos(S, 6, k=6, num_iter=6)[0], eigh_descending(S)[0], atol=1e-12)
    S32 = S.astype(jnp.float32)
    noisy = S32.at[0, 1].add(1e-6 * float(jnp.max(jnp.abs(S32))))   # ~10 float32 ulps
    assert eigh_descending(noisy)[0].dtype == jnp.float32
    with pytest.raises(ValueError, match="shape \\(6, 6\\)"):
        lanczos(jnp.ones((5, 5)), 6, k=1, num_iter=2)


def test_vector_valued_loss_is_refused():
    """The Hessian of a loss that returns a vector used to come back as a 3-D array."""
    E = lambda t: t**2  # noqa: E731
    for call in (lambda: hessian(E, jnp.ones(3)), lambda: hessian_eigh(E, jnp.ones(3)),
                 lambda: hvp(E, jnp.ones(3), jnp.ones(3)), lambda: top_hessian_eigenpairs(E, jnp.ones(3)),
                 lambda: sharpness(E, jnp.ones(3), "dense"), lambda: sharpness(E, jnp.ones(3), "power")):
        with pytest.raises(ValueError, match="must return a scalar.*shape \\(3,\\).*jnp.sum"):
            call()


def test_nan_start_vector_is_refused_eagerly_and_under_jit():
    v0 = jnp.array([1.0, jnp.nan, 0.0])
    with pytest.raises(ValueError, match="start vector v0 has NaN"):
        lanczos(lambda x: x, v0, k=1, num_iter=2)
    with pytest.raises(ValueError, match="start vector v0 has NaN"):
        power_iteration(lambda x: x, v0)
    with pytest.raises(ValueError, match="start vector v0 has NaN"):
        top_hessian_eigenpairs(lambda t: jnp.sum(t**2), jnp.ones(3), v0=v0)
    with pytest.raises(eqx.EquinoxRuntimeError, match="start vector v0 has NaN") as caught:
        eqx.filter_jit(lambda v: lanczos(lambda x: x, v, k=1, num_iter=2))(v0)
    assert "INTERNAL: CpuCallback error" not in str(caught.value)
    # under plain jax.jit the message is still there, at the end of JAX's longer error
    with pytest.raises(Exception, match="start vector v0 has NaN"):
        jax.jit(lambda v: lanczos(lambda x: x, v, k=1, num_iter=2))(v0)
    # a finite traced start vector passes
    lam, _ = jax.jit(lambda v: lanczos(lambda x: 2.0 * x, v, k=1, num_iter=2))(jnp.ones(3))
    np.testing.assert_allclose(lam, [2.0], rtol=1e-12)


def test_lanczos_hint_says_which_way_to_change_num_iter():
    with pytest.raises(ValueError, match="num_iter <= dim.*lower num_iter to at most 4"):
        lanczos(lambda x: x, 4, k=1, num_iter=5)
    with pytest.raises(ValueError, match="k <= num_iter.*raise num_iter to at least k = 3"):
        lanczos(lambda x: x, 10, k=3, num_iter=2)


def test_top_hessian_eigenpairs_traced_bad_warm_start_falls_back_to_random(mlp):
    """Under jit a NaN or zero warm start is replaced by the random start (no host callback, so the
    compiled solve can be kept in JAX's persistent compilation cache); eagerly it is refused."""
    E, params, D, lam_dense, _ = mlp
    solve = jax.jit(lambda p, v: top_hessian_eigenpairs(E, p, k=1, num_iter=20, v0=v))
    for bad in (jnp.full(D, jnp.nan), jnp.zeros(D)):
        np.testing.assert_allclose(solve(params, bad)[0], lam_dense[:1], rtol=1e-8)  # as the random start
    with pytest.raises(ValueError, match="start vector v0 is zero"):
        top_hessian_eigenpairs(E, params, k=1, v0=jnp.zeros(D))
    lowered = jax.jit(lambda p, v: top_hessian_eigenpairs(E, p, k=1, num_iter=4, v0=v)).lower(params, jnp.ones(D))
    assert "callback" not in lowered.as_text()
