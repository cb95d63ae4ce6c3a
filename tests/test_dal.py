"""Tests for pfcourse.dal: the DAL-p rule, the finite-difference HVP, and the optax transformation.

Float64 throughout (conftest enables x64). Equation labels refer to book/07_dal.md.
"""
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from pfcourse import dal, flows, spectral  # noqa: E402
from pfcourse.dal import (  # noqa: E402
    DALState,
    dal_learning_rate,
    dal_learning_rate_at,
    drift_ratio,
    finite_difference_hvp,
    scale_by_dal,
)


# --------------------------------------------------------------------------- fixtures


def random_symmetric(rng, n, lo=-3.0, hi=5.0):
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = rng.uniform(lo, hi, size=n)
    return Q @ np.diag(lam) @ Q.T, lam, Q


def quadratic(A):
    A = jnp.asarray(A)
    return lambda th: 0.5 * th @ A @ th


def pytree_loss(p):
    """A non-quadratic loss over a dict of arrays (tanh features, a quartic term)."""
    a, b = p["a"], p["b"]
    return jnp.sum(jnp.tanh(a @ b) ** 2) + 0.1 * jnp.sum(a**4) + 0.5 * jnp.sum((b - 0.3) ** 2)


def random_pytree(seed):
    rng = np.random.default_rng(seed)
    return {"a": jnp.asarray(rng.normal(size=(3, 2))), "b": jnp.asarray(rng.normal(size=(2,)))}


def tree_allclose(x, y, rtol=1e-12, atol=1e-12):
    fx, fy = ravel_pytree(x)[0], ravel_pytree(y)[0]
    return np.allclose(np.asarray(fx), np.asarray(fy), rtol=rtol, atol=atol)


def plain_dal_loop(E, theta, p, learning_rate, h_max, steps, window=None, hvp="exact"):
    """GD with DAL written out by hand with the plain function (the reference for the transform)."""
    thetas, rates = [theta], []
    for t in range(steps):
        g = jax.grad(E)(theta)
        Hg = spectral.hvp(E, theta, g) if hvp == "exact" else finite_difference_hvp(E, theta, g)
        h = dal_learning_rate(g, Hg, p, h_max, learning_rate=learning_rate, step=t, window=window)
        theta = jax.tree_util.tree_map(lambda a, b: a - h * b, theta, g)
        thetas.append(theta)
        rates.append(float(h))
    return thetas, np.array(rates)


def optax_loop(E, theta, opt, steps):
    state = opt.init(theta)
    thetas, rates, counts = [theta], [], []
    for _ in range(steps):
        updates, state = opt.update(jax.grad(E)(theta), state, theta, loss_fn=E)
        theta = optax.apply_updates(theta, updates)
        thetas.append(theta)
        rates.append(float(state.rate))
        counts.append(int(state.count))
    return thetas, np.array(rates), counts


# --------------------------------------------------------------------------- the rule on quadratics


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 8))
def test_dal1_rate_on_quadratic_is_2g_over_Hg(seed, n):
    """eq-dal-1: on E = θᵀAθ/2, DAL-1 picks h = 2‖g‖/‖Hg‖ with g = Aθ, Hg = A²θ, by hand in NumPy."""
    rng = np.random.default_rng(seed)
    A, _, _ = random_symmetric(rng, n, 0.1, 4.0)
    theta = rng.normal(size=n)
    g = A @ theta
    by_hand = 2 * np.linalg.norm(g) / np.linalg.norm(A @ g)
    got = dal_learning_rate_at(quadratic(A), jnp.asarray(theta), p=1.0, h_max=1e9)
    assert np.isclose(float(got), by_hand, rtol=1e-12)
    got_fd = dal_learning_rate_at(quadratic(A), jnp.asarray(theta), p=1.0, h_max=1e9, hvp="finite_difference")
    assert np.isclose(float(got_fd), by_hand, rtol=1e-9)  # FD is exact on a quadratic up to rounding


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.floats(0.1, 3.0), h_max=st.floats(0.05, 10.0))
def test_dal_p_rate_formula(seed, p, h_max):
    """eq-dal: h = min(2 / (‖Hg‖/‖g‖)^p, h_max), against NumPy."""
    rng = np.random.default_rng(seed)
    A, _, _ = random_symmetric(rng, 5)
    g = rng.normal(size=5)
    r = np.linalg.norm(A @ g) / np.linalg.norm(g)
    got = dal_learning_rate(jnp.asarray(g), jnp.asarray(A @ g), p, h_max)
    assert np.isclose(float(got), min(2 / r**p, h_max), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 9))
def test_drift_ratio_is_weighted_rms_of_eigenvalues_and_below_max_abs(seed, n):
    """eq-drift-ratio-bound: r² = Σλ_i²c_i²/Σc_i² ≤ max λ_i², so DAL-1's h ≥ 2/max|λ_i|."""
    rng = np.random.default_rng(seed)
    A, lam, Q = random_symmetric(rng, n)
    g = rng.normal(size=n)
    c = Q.T @ g
    r = float(drift_ratio(jnp.asarray(g), jnp.asarray(A @ g)))
    assert np.isclose(r**2, np.sum(lam**2 * c**2) / np.sum(c**2), rtol=1e-10)
    assert r <= np.max(np.abs(lam)) * (1 + 1e-12)
    h = float(dal_learning_rate(jnp.asarray(g), jnp.asarray(A @ g), 1.0, 1e12))
    assert h >= 2 / np.max(np.abs(lam)) * (1 - 1e-12)


def test_dal1_along_an_eigenvector_sits_exactly_at_the_threshold():
    """eq-dal-eigenvector: g ∥ u_i gives r = |λ_i| and DAL-1 gives hλ_i = 2 exactly; off the top
    eigenvector h λ_0 > 2 (DAL-1 does not bound the sharpness)."""
    rng = np.random.default_rng(3)
    A, lam, Q = random_symmetric(rng, 6, 0.5, 6.0)
    order = np.argsort(lam)[::-1]
    for i in order:
        g = 2.5 * Q[:, i]
        h = float(dal_learning_rate(jnp.asarray(g), jnp.asarray(A @ g), 1.0, 1e12))
        assert np.isclose(h * lam[i], 2.0, rtol=1e-12)
    g = Q @ np.ones(6)                      # a gradient spread over all directions
    h = float(dal_learning_rate(jnp.asarray(g), jnp.asarray(A @ g), 1.0, 1e12))
    assert h * lam[order[0]] > 2.0 + 1e-3


def test_gd_drift_from_gradient_flow_is_half_h_squared_Hg():
    """eq-gd-drift: one GD step minus the gradient flow over time h is −(h²/2)H∇E + O(h³)."""
    E = pytree_loss
    theta = random_pytree(4)
    g = jax.grad(E)(theta)
    Hg = ravel_pytree(spectral.hvp(E, theta, g))[0]
    errs = []
    for h in [0.004, 0.002, 0.001]:
        gd = ravel_pytree(jax.tree_util.tree_map(lambda a, b: a - h * b, theta, g))[0]
        flow = flows.integrate(flows.gradient_flow(E), theta, jnp.array([0.0, h]), rtol=1e-13, atol=1e-15)
        ngf = ravel_pytree(jax.tree_util.tree_map(lambda a: a[-1], flow))[0]
        drift = gd - ngf
        errs.append(float(jnp.linalg.norm(drift + 0.5 * h**2 * Hg) / jnp.linalg.norm(0.5 * h**2 * Hg)))
    # relative error O(h): halves with h
    assert errs[0] < 0.1
    assert 1.7 < errs[0] / errs[1] < 2.3 and 1.7 < errs[1] / errs[2] < 2.3


def test_drift_over_step_is_half_h_ratio():
    """eq-drift-ratio, measured: the drift of an actual GD step from the gradient flow (integrated
    accurately over time h), divided by the step's length, is (h/2)‖Hg‖/‖g‖ + O(h²); DAL-1's rate
    is the h that makes this first-order ratio 1."""
    E = pytree_loss
    theta = random_pytree(5)
    g = jax.grad(E)(theta)
    r = float(drift_ratio(g, spectral.hvp(E, theta, g)))
    gn = float(jnp.linalg.norm(ravel_pytree(g)[0]))
    hs = np.array([0.004, 0.002, 0.001])
    flow = flows.integrate(flows.gradient_flow(E), theta, np.concatenate([[0.0], hs[::-1]]), rtol=1e-13, atol=1e-15)
    slopes = []  # (drift / step) / h, which tends to r / 2
    for i, h in enumerate(hs):
        gd = ravel_pytree(jax.tree_util.tree_map(lambda a, b: a - h * b, theta, g))[0]
        ngf = ravel_pytree(jax.tree_util.tree_map(lambda a: a[len(hs) - i], flow))[0]
        slopes.append(float(jnp.linalg.norm(gd - ngf)) / (h * gn) / h)
    errs = np.abs(np.array(slopes) / (r / 2) - 1)
    assert errs[-1] < 0.02
    assert 1.7 < errs[0] / errs[1] < 2.3 and 1.7 < errs[1] / errs[2] < 2.3   # the O(h) remainder halves
    h1 = float(dal_learning_rate(g, spectral.hvp(E, theta, g), 1.0, 1e9))
    # extrapolate the measured slope to h = 0 (Richardson, the remainder is O(h)): DAL-1 puts it at 1/h
    slope0 = 2 * slopes[2] - slopes[1]
    assert abs(h1 * slope0 - 1) < 1e-3, (h1, slope0)


def test_loss_scaling_dal1_steps_invariant_dal_p_not():
    """eq-dal-scaling: for E → cE, DAL-p's step h g scales by c^(1−p): DAL-1's steps do not change."""
    theta = random_pytree(6)
    c = 4.0
    Ec = lambda p: c * pytree_loss(p)  # noqa: E731
    for p in [0.5, 1.0, 2.0]:
        steps = []
        for E in (pytree_loss, Ec):
            g = jax.grad(E)(theta)
            h = dal_learning_rate(g, spectral.hvp(E, theta, g), p, 1e9)
            steps.append(ravel_pytree(g)[0] * h)
        assert np.allclose(np.asarray(steps[1]), c ** (1 - p) * np.asarray(steps[0]), rtol=1e-10)


# --------------------------------------------------------------------------- special values


def test_h_max_caps_and_zero_curvature_gives_h_max():
    """eq-dal: the clip; Hg = 0 with g ≠ 0 (a linear loss) gives exactly h_max, not inf."""
    g = jnp.array([1.0, -2.0])
    assert float(dal_learning_rate(g, 1e-6 * g, 1.0, 3.0)) == 3.0
    assert float(dal_learning_rate(g, jnp.zeros(2), 1.0, 3.0)) == 3.0
    E = lambda th: jnp.sum(jnp.array([1.0, 2.0]) * th)  # noqa: E731
    for hvp in dal.HVP_METHODS:
        assert float(dal_learning_rate_at(E, jnp.ones(2), 2.0, 0.7, hvp=hvp)) == 0.7


def test_p_zero_is_the_fixed_rate():
    g, Hg = jnp.array([1.0, 2.0]), jnp.array([30.0, 1.0])
    assert float(dal_learning_rate(g, Hg, 0.0, 5.0, learning_rate=0.123)) == 0.123
    with pytest.raises(ValueError, match="p = 0 is gradient descent"):
        dal_learning_rate(g, Hg, 0.0, 5.0)


def test_window_start_inclusive_stop_exclusive():
    g, Hg = jnp.array([1.0, 0.0]), jnp.array([4.0, 0.0])   # adaptive rate 0.5
    rates = [float(dal_learning_rate(g, Hg, 1.0, 5.0, learning_rate=0.1, step=t, window=(2, 4))) for t in range(6)]
    assert rates == [0.1, 0.1, 0.5, 0.5, 0.1, 0.1]
    rates = [float(dal_learning_rate(g, Hg, 1.0, 5.0, learning_rate=0.1, step=t, window=(3, None))) for t in range(5)]
    assert rates == [0.1, 0.1, 0.1, 0.5, 0.5]
    with pytest.raises(ValueError, match="pass step"):
        dal_learning_rate(g, Hg, 1.0, 5.0, learning_rate=0.1, window=(0, 3))


def test_zero_gradient_gives_h_max_and_a_zero_step_without_nan():
    """Documented behaviour: g = 0 sees no curvature, the rate is h_max, the step is 0."""
    A = jnp.diag(jnp.array([3.0, 1.0]))
    E = quadratic(A)
    zero = jnp.zeros(2)
    assert float(drift_ratio(zero, zero)) == 0.0
    for hvp in dal.HVP_METHODS:
        assert np.array_equal(np.asarray(finite_difference_hvp(E, zero, zero)), np.zeros(2))
        assert float(dal_learning_rate_at(E, zero, 1.0, 2.5, hvp=hvp)) == 2.5
        opt = dal.dal(1.0, 0.1, 2.5, hvp=hvp)
        state = opt.init(zero)
        updates, state = opt.update(jax.grad(E)(zero), state, zero, loss_fn=E)
        assert np.array_equal(np.asarray(updates), np.zeros(2))
        assert float(state.rate) == 2.5 and float(state.ratio) == 0.0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, match", [
    (dict(p=-0.5, learning_rate=0.1), "p must be finite and >= 0"),
    (dict(p=float("nan"), learning_rate=0.1), "p must be finite and >= 0"),
    (dict(p=1.0, learning_rate=0.1, h_max=0.0), "h_max must be positive"),
    (dict(p=1.0, learning_rate=0.1, h_max=-2.0), "h_max must be positive"),
    (dict(p=1.0, learning_rate=0.1, h_max=float("inf")), "h_max must be positive"),
    (dict(p=1.0, learning_rate=0.0), "learning_rate must be positive"),
    (dict(p=1.0, learning_rate=-0.1), "learning_rate must be positive"),
    (dict(p=1.0, learning_rate=0.1, window=(5, 2)), "window must be"),
    (dict(p=1.0, learning_rate=0.1, window=(-1, 2)), "window must be"),
    (dict(p=1.0, learning_rate=0.1, window=3), "window must be a pair"),
    (dict(p=1.0, learning_rate=0.1, hvp="dense"), "hvp must be one of"),
    (dict(p=1.0, learning_rate=0.1, fd_step=0.0), "fd_step must be positive"),
])
def test_bad_settings_raise_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dal.dal(**kwargs)
    with pytest.raises(ValueError, match=match):
        scale_by_dal(**kwargs)


def test_missing_learning_rate_fails_when_the_transform_is_built():
    """dal(p, None) used to build, then fail at init; the fixed rate is needed before the first update."""
    for make in (dal.dal, scale_by_dal):
        with pytest.raises(ValueError, match="learning_rate is required"):
            make(1.0, None)


def test_bad_settings_in_the_plain_function():
    g, Hg = jnp.ones(2), jnp.ones(2)
    with pytest.raises(ValueError, match="p must be"):
        dal_learning_rate(g, Hg, -1.0)
    with pytest.raises(ValueError, match="h_max must be"):
        dal_learning_rate(g, Hg, 1.0, 0.0)
    with pytest.raises(ValueError, match="hvp must be"):
        dal_learning_rate_at(quadratic(jnp.eye(2)), jnp.ones(2), 1.0, hvp="exakt")
    with pytest.raises(ValueError, match="step must be positive"):
        finite_difference_hvp(quadratic(jnp.eye(2)), jnp.ones(2), jnp.ones(2), step=-1.0)


def test_traced_bad_p_raises_at_run_time_under_jit_and_vmap():
    E = quadratic(jnp.diag(jnp.array([2.0, 1.0])))
    theta = jnp.array([1.0, 1.0])

    def first_rate(p, h_max):
        opt = dal.dal(p, 0.1, h_max)
        _, state = opt.update(jax.grad(E)(theta), opt.init(theta), theta, loss_fn=E)
        return state.rate

    ok = jax.jit(jax.vmap(first_rate))(jnp.array([1.0, 2.0]), jnp.array([5.0, 5.0]))
    assert np.all(np.isfinite(np.asarray(ok)))
    with pytest.raises(Exception, match="DAL: need p >= 0"):
        jax.block_until_ready(jax.jit(jax.vmap(first_rate))(jnp.array([1.0, -2.0]), jnp.array([5.0, 5.0])))
    with pytest.raises(Exception, match="DAL: need p >= 0"):
        jax.block_until_ready(jax.jit(first_rate)(1.0, -1.0))


def test_non_finite_hvp_or_gradient_raises_never_nan():
    E = quadratic(jnp.eye(2))
    theta = jnp.array([1.0, 2.0])
    opt = dal.dal(1.0, 0.1)
    state = opt.init(theta)
    bad_hvp = lambda params, v: v * jnp.nan  # noqa: E731
    with pytest.raises(Exception, match="not finite"):
        jax.block_until_ready(opt.update(jax.grad(E)(theta), state, theta, hvp_fn=bad_hvp))
    jitted = jax.jit(lambda th, s: opt.update(jax.grad(E)(th), s, th, hvp_fn=bad_hvp))
    with pytest.raises(Exception, match="not finite"):
        jax.block_until_ready(jitted(theta, state))
    with pytest.raises(Exception, match="not finite"):
        jax.block_until_ready(dal_learning_rate(jnp.array([jnp.inf, 1.0]), jnp.ones(2), 1.0))
    # an overflowing loss: its gradient is inf, the FD HVP NaN
    E_inf = lambda th: jnp.exp(1e3 * th[0])  # noqa: E731
    with pytest.raises(Exception, match="not finite"):
        jax.block_until_ready(dal_learning_rate_at(E_inf, jnp.array([1.0, 0.0]), 1.0, hvp="finite_difference"))


def test_update_needs_params_and_a_loss_or_hvp():
    opt = dal.dal(1.0, 0.1)
    theta = jnp.ones(2)
    state = opt.init(theta)
    with pytest.raises(ValueError, match="needs params"):
        opt.update(theta, state)
    with pytest.raises(ValueError, match="loss_fn"):
        opt.update(theta, state, theta)


# --------------------------------------------------------------------------- the finite difference


def test_fd_hvp_exact_on_a_quadratic():
    """eq-fd-hvp: on a quadratic the forward difference has no truncation error (float64: < 1e-10)."""
    rng = np.random.default_rng(0)
    A, _, _ = random_symmetric(rng, 7)
    E = quadratic(A)
    theta, v = jnp.asarray(rng.normal(size=7)), jnp.asarray(rng.normal(size=7))
    exact = A @ np.asarray(v)
    fd = np.asarray(finite_difference_hvp(E, theta, v))
    assert np.linalg.norm(fd - exact) / np.linalg.norm(exact) < 1e-10


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fd_hvp_error_is_half_eps_third_derivative(seed):
    """eq-fd-hvp: FD − Hv = (ε/2)∇³E[v, v] + O(ε²), ε = step/‖v‖; on our toy loss the relative
    error at the default step 0.01 is below 2%, and it is first order in the step."""
    E = pytree_loss
    theta, v = random_pytree(seed), random_pytree(seed + 100)
    exact = ravel_pytree(spectral.hvp(E, theta, v))[0]
    third = ravel_pytree(jax.jvp(lambda t: spectral.hvp(E, t, v), (theta,), (v,))[1])[0]
    vn = float(jnp.linalg.norm(ravel_pytree(v)[0]))
    rel = []
    for step in [0.01, 0.005, 0.0025]:
        fd = ravel_pytree(finite_difference_hvp(E, theta, v, step=step))[0]
        eps = step / vn
        resid = fd - exact - 0.5 * eps * third
        assert float(jnp.linalg.norm(resid)) < 10 * eps**2 * float(jnp.linalg.norm(third)) + 1e-9
        rel.append(float(jnp.linalg.norm(fd - exact) / jnp.linalg.norm(exact)))
    assert rel[0] < 0.02
    assert 1.8 < rel[0] / rel[1] < 2.2 and 1.8 < rel[1] / rel[2] < 2.2


def test_fd_hvp_passes_the_gradient_it_is_given():
    E = pytree_loss
    theta = random_pytree(7)
    g = jax.grad(E)(theta)
    assert tree_allclose(finite_difference_hvp(E, theta, g), finite_difference_hvp(E, theta, g, grad=g), 0, 0)


# --------------------------------------------------------------------------- the optax transformation


@pytest.mark.parametrize("hvp", dal.HVP_METHODS)
@pytest.mark.parametrize("p, window", [(1.0, None), (2.0, None), (0.5, (3, 9)), (0.0, None)])
def test_optax_matches_the_plain_function_step_for_step(hvp, p, window):
    """The transform's iterates, rates and counts equal the hand-written loop's, step for step."""
    E, theta0 = pytree_loss, random_pytree(8)
    ref_thetas, ref_rates = plain_dal_loop(E, theta0, p, 0.05, 1.5, 12, window, hvp)
    thetas, rates, counts = optax_loop(E, theta0, dal.dal(p, 0.05, 1.5, window=window, hvp=hvp), 12)
    assert counts == list(range(1, 13))
    assert np.allclose(rates, ref_rates, rtol=1e-12, atol=0)
    for a, b in zip(thetas, ref_thetas):
        assert tree_allclose(a, b)
    if p != 0.0:                   # the rule really adapts: not all rates equal
        assert np.ptp(rates) > 1e-3


def test_state_starts_at_the_fixed_rate_and_logs_the_ratio():
    E, theta = pytree_loss, random_pytree(9)
    opt = dal.dal(1.0, 0.07)
    state = opt.init(theta)
    assert isinstance(state, DALState)
    assert int(state.count) == 0 and float(state.rate) == 0.07 and float(state.ratio) == 0.0
    g = jax.grad(E)(theta)
    _, state = opt.update(g, state, theta, loss_fn=E)
    assert np.isclose(float(state.ratio), float(drift_ratio(g, spectral.hvp(E, theta, g))), rtol=1e-12)


def test_scale_by_dal_chains_like_dal_and_hvp_fn_matches_loss_fn():
    E, theta = pytree_loss, random_pytree(10)
    g = jax.grad(E)(theta)
    u_dal, s_dal = dal.dal(1.0, 0.1).update(g, dal.dal(1.0, 0.1).init(theta), theta, loss_fn=E)
    chain = optax.chain(scale_by_dal(1.0, 0.1), optax.scale(-1.0))
    u_chain, s_chain = chain.update(g, chain.init(theta), theta, loss_fn=E)
    assert tree_allclose(u_dal, u_chain, 0, 0)
    assert float(optax.tree_utils.tree_get(s_chain, "rate")) == float(s_dal.rate)
    opt = scale_by_dal(1.0, 0.1)
    u_fn, _ = opt.update(g, opt.init(theta), theta, hvp_fn=lambda prm, v: spectral.hvp(E, prm, v))
    assert tree_allclose(u_fn, jax.tree_util.tree_map(jnp.negative, u_dal), 0, 0)
    # with momentum after it: first update is h_0 g (trace starts at zero)
    mom = optax.chain(scale_by_dal(1.0, 0.1), optax.trace(0.9), optax.scale(-1.0))
    u_mom, _ = mom.update(g, mom.init(theta), theta, loss_fn=E)
    assert tree_allclose(u_mom, u_dal)


def test_jit_matches_eager():
    E, theta = pytree_loss, random_pytree(11)
    opt = dal.dal(1.5, 0.1, 2.0, window=(1, None))
    state = opt.init(theta)

    def step(th, s):
        u, s = opt.update(jax.grad(E)(th), s, th, loss_fn=E)
        return optax.apply_updates(th, u), s

    jstep = jax.jit(step)
    a, sa = theta, state
    b, sb = theta, state
    for _ in range(5):
        a, sa = step(a, sa)
        b, sb = jstep(b, sb)
    assert tree_allclose(a, b, 1e-12, 1e-12)
    assert np.isclose(float(sa.rate), float(sb.rate), rtol=1e-12) and int(sb.count) == 5


def test_vmap_over_p_matches_separate_runs():
    """Build the transform inside vmap: one compiled scan trains every p at once."""
    E, theta0 = pytree_loss, random_pytree(12)

    def run(p):
        opt = dal.dal(p, 0.05, 1.5)

        def step(carry, _):
            th, s = carry
            u, s = opt.update(jax.grad(E)(th), s, th, loss_fn=E)
            return (optax.apply_updates(th, u), s), s.rate

        (th, _), rates = jax.lax.scan(step, (theta0, opt.init(theta0)), None, length=8)
        return th, rates

    ps = jnp.array([0.0, 0.5, 1.0, 2.0])
    th_v, rates_v = jax.jit(jax.vmap(run))(ps)
    for i, p in enumerate([0.0, 0.5, 1.0, 2.0]):
        _, ref_rates = plain_dal_loop(E, theta0, p, 0.05, 1.5, 8)
        assert np.allclose(np.asarray(rates_v[i]), ref_rates, rtol=1e-10)
        th_i, _ = run(p)
        assert tree_allclose(jax.tree_util.tree_map(lambda a: a[i], th_v), th_i, 1e-10, 1e-12)


def test_float32_parameters_keep_float32():
    theta = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), random_pytree(13))
    E = pytree_loss
    opt = dal.dal(1.0, 0.1)
    state = opt.init(theta)
    assert state.rate.dtype == jnp.float32
    updates, state = opt.update(jax.grad(E)(theta), state, theta, loss_fn=E)
    assert all(u.dtype == jnp.float32 for u in jax.tree_util.tree_leaves(updates))
    assert state.rate.dtype == jnp.float32


def test_dal1_on_a_quadratic_settles_at_two_over_lambda_max():
    """On a quadratic GD with DAL-1 turns the gradient towards u_0 (the component it over-steps
    oscillates and the others shrink), so the rate tends to 2/λ_0: the edge of stability."""
    lam = np.array([4.0, 1.0, 0.1])
    E = quadratic(np.diag(lam))
    _, rates = plain_dal_loop(E, jnp.array([1.0, -2.0, 3.0]), 1.0, 0.1, 5.0, 40)
    assert rates[0] > 2 / lam[0] + 0.01
    assert abs(rates[-1] - 2 / lam[0]) < 1e-3
    assert np.all(rates >= 2 / lam[0] - 1e-12)        # eq-drift-ratio-bound: never below 2/λ_max


def test_dal2_on_a_quadratic_jumps_to_the_cap_and_converges_without_settling():
    """Chapter 7, 'DAL on a quadratic': on A = diag(4, 1, 0.1) from (1, -2, 3), DAL-2 (h_max = 5) does not
    settle below 2/λ_0: within 60 steps h_t jumps between ≈ 0.13 and ≈ the cap 5 (h λ_0 up to 20). It
    converges because at every step with h λ_0 > 2 the direction u_0 carries only a few per cent of the
    loss. The run depends on the last digits of the start, so the bounds are those that held for 300
    starts perturbed by 1e-14 ... 1e-6 (min h ≤ 0.131, max h ≥ 4.8, share ≤ 0.041, final loss ≤ 6e-6)."""
    lam = np.array([4.0, 1.0, 0.1])
    E = quadratic(np.diag(lam))
    for start in ([1.0, -2.0, 3.0], [1.0 + 1e-9, -2.0, 3.0], [1.0, -2.0, 3.0 - 1e-7]):
        thetas, rates = plain_dal_loop(E, jnp.array(start), 2.0, 0.1, 5.0, 60)
        thetas = np.asarray(thetas)
        assert rates.min() < 0.14 and rates.max() > 4.5 and rates.max() <= 5.0
        share = lam[0] * thetas[:-1, 0] ** 2 / np.einsum("ni,i,ni->n", thetas[:-1], lam, thetas[:-1])
        over = rates * lam[0] > 2
        assert over.sum() >= 10 and share[over].max() < 0.06
        assert float(E(jnp.asarray(thetas[-1]))) < 1e-4 * float(E(jnp.asarray(start)))


def test_dal_half_settles_at_one_over_sqrt_lambda_and_diverges_on_a_quadratic():
    """Chapter 7: DAL-0.5 on the same quadratic tends to h = 2/sqrt(λ_0) = 1 (h λ_0 = 4) and diverges;
    eq-dal-ratio-p: below the cap the drift-to-step ratio (h/2) r is r^(1-p)."""
    lam = np.array([4.0, 1.0, 0.1])
    E = quadratic(np.diag(lam))
    thetas, rates = plain_dal_loop(E, jnp.array([1.0, -2.0, 3.0]), 0.5, 0.1, 5.0, 60)
    assert abs(rates[-1] - 1.0) < 1e-3 and np.all(rates >= 1.0 - 1e-12)
    assert float(E(thetas[-1])) > 1e20
    for p in (0.5, 1.0, 2.0):
        for r in (0.3, 1.0, 7.0):
            g = jnp.array([1.0, 0.0])
            h = dal_learning_rate(g, r * g, p, 1e6, learning_rate=0.1, step=0)
            np.testing.assert_allclose(float(h) / 2 * r, r ** (1 - p), rtol=1e-12)


def test_seed_band_draws_median_and_range_and_rejects_bad_shapes():
    """plots.seed_band (chapter 7's curves over seeds): median line, min-max band, shape check."""
    import matplotlib.pyplot as plt

    from pfcourse import plots

    runs = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [2.0, 5.0, 2.0]])
    fig, ax = plt.subplots()
    plots.seed_band(ax, np.arange(3), runs, color="tab:red", label="x")
    assert np.allclose(ax.lines[0].get_ydata(), [2.0, 2.0, 2.0])
    assert len(ax.collections) == 1
    with pytest.raises(ValueError, match="runs must have shape"):
        plots.seed_band(ax, np.arange(4), runs)
    plt.close(fig)


# --------------------------------------------------------------------------- DAL with minibatches (pfcourse.dal_sgd)

from pfcourse import dal_sgd, data, models  # noqa: E402


def test_batch_indices_cover_each_example_once_per_epoch():
    key = jax.random.key(3)
    epoch0 = np.concatenate([np.asarray(dal_sgd.batch_indices(key, t, 10, 3)) for t in range(3)])
    epoch1 = np.concatenate([np.asarray(dal_sgd.batch_indices(key, t, 10, 3)) for t in range(3, 6)])
    assert len(set(epoch0.tolist())) == 9 and len(set(epoch1.tolist())) == 9      # 10 // 3 batches of 3, no repeat
    assert not np.array_equal(epoch0, epoch1)                                     # a fresh permutation per epoch


def _tiny_batches(n=12):
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(n, 4)), rng.integers(0, 3, n)
    apply = models.mlp_apply("tanh")
    params = models.init_mlp(jax.random.key(0), [4, 5, 3])
    return apply, jnp.asarray(x), jax.nn.one_hot(labels, 3), params


def test_minibatch_of_all_examples_is_gradient_descent_and_dal_uses_the_batch():
    apply, x, y, params = _tiny_batches()
    batches, E = dal_sgd.BatchLoss(apply, x, y), models.full_batch_loss(apply, x, y)
    opt = dal_sgd.minibatch_gradients(optax.sgd(0.3), batches, 12, 12, jax.random.key(1))
    upd, state = opt.update(None, opt.init(params), params)
    ref = jax.tree_util.tree_map(lambda g: -0.3 * g, jax.grad(E)(params))
    # a batch of all 12 examples is a permutation of the full batch: the same mean, to rounding (float64)
    assert np.allclose(ravel_pytree(upd)[0], ravel_pytree(ref)[0], rtol=1e-12, atol=1e-14)
    assert int(state.count) == 1
    # with DAL inside, the rate is DAL's on the batch loss of that step (its own HVP), not the full batch's
    key = jax.random.key(2)
    opt = dal_sgd.minibatch_gradients(dal.dal(1.0, 0.1), batches, 12, 4, key)
    _, state = opt.update(None, opt.init(params), params)
    idx = dal_sgd.batch_indices(key, 0, 12, 4)
    want = dal_learning_rate_at(lambda p: batches(p, idx), params, 1.0, 5.0)
    assert np.isclose(float(state.inner.rate), float(want), rtol=1e-12)
    with pytest.raises(ValueError, match="batch_size"):
        dal_sgd.minibatch_gradients(optax.sgd(0.1), batches, 12, 13, key)


def test_loss_spikes_is_the_largest_rise_above_the_running_minimum():
    loss = np.array([[4.0, 2.0, 3.0, 1.0, 1.5, np.nan], [3.0, 2.0, 1.0, 0.5, 0.4, 0.3]])
    assert np.allclose(dal_sgd.loss_spikes(loss), [1.5, 1.0])


def test_dal_sgd_experiment_shapes_seeds_and_rates():
    digits = data.load_digits(n_train=60, n_test=40, seed=0)
    settings = [("a", 0.0, 0.2), ("b", 0.0, 0.2), ("DAL-1", 1.0, 0.1)]
    res = dal_sgd.dal_sgd_experiment(digits, settings, 2, [64, 8, 10], steps=6, batch_size=20, dtype=jnp.float64)
    assert res.loss.shape == (3, 2, 7) and res.rates.shape == (3, 2, 6) and res.test_accuracy.shape == (3, 2)
    # a seed fixes the initialisation and the batches: two identical settings give identical runs
    assert np.array_equal(res.loss[0], res.loss[1])
    assert not np.array_equal(res.loss[0, 0], res.loss[0, 1])
    assert np.all(res.rates[0] == 0.2) and np.all((res.rates[2] > 0) & (res.rates[2] <= 5.0))
    assert not res.diverged.any() and np.all(res.spike >= 1.0) and np.all((res.loss_up >= 0) & (res.loss_up <= 1))
    assert np.all(np.isfinite(res.final_sharpness)) and np.all(res.final_sharpness > 0)
