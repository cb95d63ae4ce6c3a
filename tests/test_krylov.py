"""Tests for pfcourse.krylov (f(H)v by Lanczos, the PF field without an eigendecomposition,
eq-beyond-krylov-pf) and pfcourse.one_step (one GD step against the flows). Book: appendix B, §The PF
on a real network (sec-beyond-network)."""
import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.linalg  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from pfcourse import data, flows, krylov, models, one_step  # noqa: E402

SEEDS = range(5)
H = 0.6  # h * lambda_0 is 4.3 to 6.7 on these networks at initialisation: many h*lambda_i > 1


def dense_function_times(A, v, f):
    """f(A) v by a dense eigendecomposition: eigh for real symmetric A, eig for complex symmetric A."""
    if np.iscomplexobj(A) or np.iscomplexobj(v):
        lam, V = np.linalg.eig(A)
        return V @ (f(lam) * np.linalg.solve(V, v))
    lam, U = np.linalg.eigh(A)
    return U @ (f(lam) * (U.T @ v))


@pytest.fixture(scope="module")
def mlp_case():
    """Five small tanh MLPs (64-4-10, D = 310 parameters) on 32 digits, square loss, float64."""
    ds = data.load_digits(n_train=32, n_test=0, dtype=np.float64)
    E = models.full_batch_loss(models.mlp_apply("tanh"), ds.x_train, ds.y_train)
    params = [models.init_mlp(jax.random.key(s), [64, 4, 10], "tanh") for s in SEEDS]
    unravel = ravel_pytree(params[0])[1]
    flat = jnp.stack([ravel_pytree(p)[0] for p in params])
    return (lambda x: E(unravel(x))), flat


def _relative_errors(E_flat, states, num_iter, tol):
    krylov_field = krylov.principal_flow_krylov(E_flat, H, num_iter=num_iter, tol=tol, check_every=10)
    got = jax.jit(jax.vmap(krylov_field))(states)
    want = jnp.stack([flows.principal_flow(E_flat, H)(s) for s in states])
    return np.asarray(jnp.linalg.norm(got - want, axis=1) / jnp.linalg.norm(want, axis=1))


def test_krylov_pf_field_matches_dense_eigh_on_an_mlp(mlp_case):
    """eq-beyond-krylov-pf against flows.principal_flow's dense eigh (eq-pf), at real points."""
    E_flat, flat = mlp_case
    lam0 = [float(np.linalg.eigvalsh(np.asarray(jax.hessian(E_flat)(x)))[-1]) for x in flat]
    assert min(H * l for l in lam0) > 1.5, "the test needs complex fields: some h*lambda_i > 1"
    # tol 1e-9 on the a-posteriori estimate (the change over the last 10 Lanczos steps: it estimates the
    # error of the older iterate, so the returned one is better). Measured over the 5 seeds and two
    # backends (default, XLA_FLAGS=--xla_cpu_max_isa=SSE4_2): 90 steps, estimates <= 2.3e-12, true
    # errors <= 1.7e-14; the bound 1e-6 holds with a 1e7 margin.
    assert _relative_errors(E_flat, flat, 150, 1e-9).max() <= 1e-6


def test_krylov_pf_field_matches_dense_eig_at_complex_states(mlp_case):
    """The integrated PF's state is complex: holomorphic Hessian, complex symmetric Lanczos, the
    "side" branch per Ritz value, against flows.principal_flow's dense eig."""
    E_flat, flat = mlp_case
    noise = jax.random.normal(jax.random.key(7), flat.shape)
    states = flat + 0.01j * noise
    # same tolerance argument as the real case; measured over the 5 seeds and two backends: 90 steps,
    # estimates <= 9.5e-12, true errors <= 8.4e-13 (against eig, itself good to ~1e-13): a 1e6 margin
    assert _relative_errors(E_flat, states, 150, 1e-9).max() <= 1e-6


def test_tolerance_stops_early_and_its_estimate_bounds_the_error(mlp_case):
    E_flat, flat = mlp_case
    x = flat[0]
    g = jax.grad(E_flat)(x)
    f = lambda lam: flows.pf_coefficient(H * lam)  # noqa: E731
    out, info = krylov.hessian_function_times(E_flat, x, g, f, 150, tol=1e-4, return_info=True)
    want = flows.principal_flow(E_flat, H)(x)
    err = float(jnp.linalg.norm(out - want) / jnp.linalg.norm(want))
    assert int(info.iterations) < 150 and float(info.error_estimate) <= 1e-4
    # the estimate is the change over the last 5 steps, an upper estimate of the error when Lanczos
    # converges superlinearly; measured (both backends): 70 steps, estimate 2.3e-5, error 4.4e-8 (500x margin)
    assert err <= float(info.error_estimate)


def quadratic(eigenvalues, multiplicity, seed=0):
    rng = np.random.default_rng(seed)
    lam = np.repeat(eigenvalues, multiplicity)
    U, _ = np.linalg.qr(rng.normal(size=(lam.size, lam.size)))
    return (U * lam) @ U.T


def test_exact_on_a_quadratic_once_num_iter_reaches_the_distinct_eigenvalues():
    A = quadratic([-0.5, 0.3, 1.4, 2.6], 3)  # D = 12, four distinct eigenvalues; h*lambda up to 1.56 > 1
    E = lambda x: 0.5 * x @ (jnp.asarray(A) @ x)  # noqa: E731
    x = jnp.asarray(np.random.default_rng(1).normal(size=12))
    f = lambda lam: flows.pf_coefficient(H * lam)  # noqa: E731
    want = dense_function_times(A, A @ np.asarray(x), lambda lam: np.asarray(f(lam)))
    out, info = krylov.hessian_function_times(E, x, jax.grad(E)(x), f, 12, return_info=True)
    assert bool(info.invariant) and int(info.iterations) == 4
    # exact arithmetic gives equality after 4 steps; float64 rounding of 4 Lanczos steps and two
    # 12x12 eigendecompositions is ~1e-15 relative (measured 2.4e-15 on both backends): a 400x margin
    assert np.linalg.norm(np.asarray(out) - want) <= 1e-12 * np.linalg.norm(want)
    short = krylov.hessian_function_times(E, x, jax.grad(E)(x), f, 3)
    assert np.linalg.norm(np.asarray(short) - want) > 1e-3 * np.linalg.norm(want)  # 3 < 4 is not enough


def test_complex_symmetric_lanczos_matches_dense_results():
    rng = np.random.default_rng(2)
    B, C = rng.normal(size=(2, 20, 20))
    A = (B + B.T) / 4 + 0.1j * (C + C.T) / 2  # complex symmetric, A.T == A, not Hermitian
    v = rng.normal(size=20) + 0.3j * rng.normal(size=20)
    for f in (jnp.exp, lambda lam: flows.pf_coefficient(0.4 * lam)):
        out, info = krylov.symmetric_lanczos_function(lambda x: jnp.asarray(A) @ x, jnp.asarray(v), f, 20,
                                                      return_info=True)
        want = dense_function_times(A, v, lambda lam: np.asarray(f(jnp.asarray(lam))))
        # a full Krylov space (m = D = 20) is exact; what is left is the rounding of the non-unitary
        # basis and of two non-normal eigensolves, measured <= 1.1e-14 on both backends: a 1e4 margin
        assert np.linalg.norm(np.asarray(out) - want) <= 1e-10 * np.linalg.norm(want)
        assert not bool(info.breakdown)


def test_holomorphic_hessian_vector_products_at_a_complex_point(mlp_case):
    """f(lambda) = lambda gives H v itself: the holomorphic Hessian (jax.hessian(holomorphic=True))."""
    E_flat, flat = mlp_case
    x = flat[1] + 0.05j * jax.random.normal(jax.random.key(3), flat[1].shape)
    v = jax.random.normal(jax.random.key(4), x.shape).astype(complex)
    out = krylov.hessian_function_times(E_flat, x, v, lambda lam: lam, 20, tol=1e-10)
    want = jax.hessian(E_flat, holomorphic=True)(x) @ v
    # f is a polynomial of degree 1, so the result is exact up to rounding (measured <= 1.1e-14 over 5
    # seeds of x and both backends): 1e-10 leaves a 1e4 margin
    assert float(jnp.linalg.norm(out - want) / jnp.linalg.norm(want)) <= 1e-10


def test_a_serious_breakdown_is_an_error_not_a_nan():
    # v = e_1: w = A e_1 - a e_1 = (0, 1, i) has w^T w = 1 + i^2 = 0 but w != 0
    A = jnp.array([[0.5, 1.0, 1j], [1.0, 2.0, 0.3], [1j, 0.3, -1.0]])
    with pytest.raises(eqx.EquinoxRuntimeError, match="broke down"):
        krylov.symmetric_lanczos_function(lambda x: A @ x, jnp.array([1.0, 0, 0], complex), jnp.exp, 3)


def test_bad_input_gives_clear_errors():
    A = jnp.eye(3)
    mv = lambda x: A @ x  # noqa: E731
    with pytest.raises(ValueError, match="flat vector"):
        krylov.symmetric_lanczos_function(mv, jnp.ones((3, 1)), jnp.exp)
    with pytest.raises(ValueError, match="num_iter"):
        krylov.symmetric_lanczos_function(mv, jnp.ones(3), jnp.exp, 0)
    with pytest.raises(ValueError, match="tol"):
        krylov.symmetric_lanczos_function(mv, jnp.ones(3), jnp.exp, 3, tol=2.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        krylov.symmetric_lanczos_function(mv, jnp.array([1.0, jnp.nan, 0.0]), jnp.exp)
    with pytest.raises(ValueError, match="isotropic"):
        krylov.symmetric_lanczos_function(mv, jnp.array([1.0, 1j, 0.0]), jnp.exp)
    with pytest.raises(ValueError, match="shape"):
        krylov.symmetric_lanczos_function(lambda x: jnp.ones(4), jnp.ones(3), jnp.exp)
    with pytest.raises(ValueError, match="branch"):
        krylov.principal_flow_krylov(lambda x: jnp.sum(x**2), 0.1, branch="nearest")
    with pytest.raises(ValueError, match="learning rate"):
        krylov.principal_flow_krylov(lambda x: jnp.sum(x**2), -0.1)
    with pytest.raises(ValueError, match="structure"):
        krylov.hessian_function_times(lambda p: jnp.sum(p["a"] ** 2), {"a": jnp.ones(2)}, jnp.ones(2), jnp.exp)


def test_zero_vector_gives_zero():
    out = krylov.symmetric_lanczos_function(lambda x: 2 * x, jnp.zeros(4), lambda lam: 1 / lam, 4)
    assert np.all(np.asarray(out) == 0)


def test_krylov_field_in_flows_integrate_passes_through_gd_on_a_quadratic():
    A = quadratic([0.4, 1.5, 3.0], 1, seed=3)  # h = 0.6: h*lambda = 0.24, 0.9, 1.8 (oscillating direction)
    E = lambda x: 0.5 * x @ (jnp.asarray(A) @ x)  # noqa: E731
    x0 = jnp.array([1.0, -0.5, 0.25])
    field = krylov.principal_flow_krylov(E, H, num_iter=3, tol=None)
    pf = flows.integrate(field, x0, H * np.arange(3), method="rk4", substeps=100)
    gd = flows.gradient_descent(E, x0, H, 2)
    # RK4 with 100 steps per GD step; the fastest component turns by arg(1 - 1.8) = pi per step, RK4's
    # error on such a rotation is ~ pi^5 / (120 * 100^4) = 3e-8 per step (measured 2.1e-8 on both
    # backends): 1e-6 leaves a 48x margin
    assert np.abs(np.asarray(pf) - np.asarray(gd)).max() <= 1e-6


def test_one_step_errors_on_a_quadratic_pf_is_exact_and_ngf_igr_are_their_exponentials():
    A = quadratic([0.5, 2.0, 3.2], 1, seed=4)  # h = 0.6: h*lambda_0 = 1.92, near the edge
    E = lambda x: 0.5 * x @ (jnp.asarray(A) @ x)  # noqa: E731
    x0 = np.array([1.0, 0.3, -0.7])
    table = one_step.one_step_errors(E, [jnp.asarray(x0)], H, substeps=32, num_iter=3)
    step = -H * A @ x0
    ngf = scipy.linalg.expm(-H * A) @ x0                       # gradient flow of a quadratic, exactly
    igr = scipy.linalg.expm(-H * (A + H / 2 * A @ A)) @ x0     # IGR: the gradient flow of E + h/4 |grad E|^2
    # on a quadratic the PF's time-h flow is GD's step exactly; what is left is RK4's error on a
    # rotation by about pi (2.55 / 32^4 = 4e-6 of that component; measured 1.9e-7, imaginary part
    # 1.1e-6, on both backends): 1e-4 has a 25x margin on the bound
    assert table["PF"][0] <= 1e-4 and table["PF_imag"][0] <= 1e-4 and table["PF_rk4_error"][0] <= 1e-4
    # NGF and IGR decay at rates h*lambda <= 1.92 and h*lambda (1 + h*lambda/2) <= 3.76 per unit of t/h;
    # RK4 with 32 steps: (3.76 / 32)^5 / 120 * 32 = 6e-6 of the step at most (measured 1.6e-8 and
    # 7.6e-8 on both backends), so 1e-4 has a 15x margin on the bound
    for name, exact in (("NGF", ngf), ("IGR", igr)):
        want = np.linalg.norm(exact - (x0 + step)) / np.linalg.norm(step)
        assert abs(table[name][0] - want) <= 1e-4
    assert abs(table["h_sharpness"][0] - 1.92) <= 1e-8  # Lanczos with num_iter = D = 3 is exact
