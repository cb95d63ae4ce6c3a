"""Chapter 4 (ch-stability): regimes, fixed points, saddles and the valley floor, in float64.

Every equation the chapter displays is checked here; each test's docstring names its label.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import sympy as sp

from pfcourse import flows, landscapes, stability


def jacobian_fd(field, point, eps=1e-6):
    """Central differences of a field, column by column (the chapter's check)."""
    cols = [(np.asarray(field(jnp.asarray(point + eps * e))) - np.asarray(field(jnp.asarray(point - eps * e))))
            / (2 * eps) for e in np.eye(point.size)]
    return np.stack(cols, axis=1)


# ---------------------------------------------------------------- regimes (eq-stab-mode, eq-stab-rate)

def test_regimes_derived_with_sympy_from_alpha():
    """eq-stab-rate: h r = Re log(1 - x) and h omega = Im log(1 - x), omega = pi/h exactly for x > 1;
    the PF grows iff x < 0 or x > 2. eq-stab-rates-ngf-igr: NGF grows iff x < 0, IGR iff -2 < x < 0."""
    x = sp.symbols("x", real=True)
    s = sp.symbols("s", positive=True)

    def log_w(value):
        return sp.expand_log(sp.log(1 - x).subs(x, value), force=True)

    assert sp.im(log_w(-s)) == 0 and sp.simplify(sp.re(log_w(-s)) - sp.log(1 + s)) == 0   # x < 0
    assert sp.im(log_w(1 - s)) == 0                                                        # x < 1
    assert sp.im(log_w(1 + s)) == sp.pi and sp.simplify(sp.re(log_w(1 + s)) - sp.log(s)) == 0  # x > 1
    solve = lambda cond: sp.solve_univariate_inequality(cond, x, relational=False)
    assert solve(sp.log(sp.Abs(1 - x)) > 0) == sp.Union(sp.Interval.open(-sp.oo, 0), sp.Interval.open(2, sp.oo))
    assert solve(-x > 0) == sp.Interval.open(-sp.oo, 0)
    assert solve(-x * (1 + x / 2) > 0) == sp.Interval.open(-2, 0)
    h = sp.symbols("h", positive=True)
    n = sp.symbols("n", integer=True, nonnegative=True)
    assert sp.simplify(sp.exp(sp.I * (sp.pi / h) * h) ** n - (-1) ** n) == 0   # period 2


@pytest.mark.parametrize("hl", [-0.6, 0.4, 1.5, 2.0, 2.5])
def test_integrated_pf_mode_has_the_predicted_rate_and_frequency(hl):
    """eq-stab-mode and eq-stab-rate: integrating the PF field along one direction gives
    z(t) = exp((t/h) log(1 - h lambda)) z0, modulus e^{rt}, phase omega t; at t = nh it is GD."""
    h = 0.5
    lam = hl / h
    E = landscapes.quadratic([lam]).loss   # data: the cases share each compilation
    ts = np.linspace(0, 4 * h, 17)
    z = np.asarray(flows.integrate(flows.principal_flow(E, h), jnp.ones(1), ts, method="rk4", substeps=50))[:, 0]
    log_w = np.log(complex(1 - hl))
    np.testing.assert_allclose(z, np.exp(ts / h * log_w), atol=1e-9)
    r = stability.growth_rates(h, lam)["PF"]
    np.testing.assert_allclose(np.abs(z), np.exp(r * ts), rtol=1e-8)
    gd = np.asarray(flows.gradient_descent(E, jnp.ones(1), h, 4))[:, 0]
    np.testing.assert_allclose(z[::4].real, gd, atol=1e-9)


def test_growth_rates_match_rates_measured_on_the_models():
    """eq-stab-rate, eq-stab-rates-ngf-igr: stability.growth_rates against rates *measured* on each model,
    all regimes at once. E = (1/2) sum_i lam_i theta_i^2 decouples, so coordinate i is the 1-D
    quadratic of curvature lam_i: GD's rate is log|theta_n / theta_0| / (n h) over actual iterates;
    the PF's is log|z(t)| / t on the exact PF solution at times between the iterates (and the PF
    meets every iterate); NGF's and IGR's come from integrating their fields numerically (RK4)."""
    h = 0.4
    lam = np.array([-3.0, -0.5, 0.5, 2.0, 4.0, 5.0, 7.5])   # h lam from -1.2 to 3: every regime
    r = stability.growth_rates(h, lam)
    E = lambda t: 0.5 * jnp.sum(jnp.asarray(lam) * t**2)
    theta0 = jnp.ones(lam.size)

    n = 12
    gd = np.asarray(flows.gradient_descent(E, theta0, h, n))
    np.testing.assert_allclose(np.log(np.abs(gd[n])) / (n * h), r["GD"], rtol=1e-12, atol=1e-12)

    ts = np.array([0.3, 1.7, 3.1])                           # not multiples of h
    pf = np.asarray(flows.quadratic_pf_solution(np.diag(lam), theta0, h, ts))
    np.testing.assert_allclose(np.log(np.abs(pf)) / ts[:, None], np.broadcast_to(r["PF"], pf.shape),
                               rtol=1e-10, atol=1e-12)
    at_steps = np.asarray(flows.quadratic_pf_solution(np.diag(lam), theta0, h, h * np.arange(n + 1)))
    np.testing.assert_allclose(at_steps.real, gd, rtol=1e-10, atol=1e-12)

    T = 1.0
    for name, field in (("NGF", flows.gradient_flow(E)), ("IGR", flows.igr_flow(E, h))):
        end = np.asarray(flows.integrate(field, theta0, [0.0, T], method="rk4", substeps=2000))[-1]
        np.testing.assert_allclose(np.log(np.abs(end)) / T, r[name], rtol=1e-8, atol=1e-10, err_msg=name)

    # h lambda = 1: one GD step lands on the minimum, so the rate is -inf
    assert np.asarray(flows.gradient_descent(lambda t: jnp.sum(t**2), jnp.ones(1), 0.5, 1))[1, 0] == 0.0
    assert np.isneginf(stability.growth_rates(0.5, 2.0)["GD"])
    with pytest.raises(ValueError, match="learning rate"):
        stability.growth_rates(-1.0, 1.0)


@pytest.mark.parametrize("hl", [1.2, 1.5, 1.9, 2.0, 2.4])
def test_period_two_sign_flips(hl):
    """Chapter 4 table: for 1 < h lambda the real part of the PF (integrated field) and GD flip sign
    at every step; the modulus shrinks below 2, is constant at 2 and grows above. NGF and IGR never flip."""
    h = 1.0
    E = landscapes.quadratic([hl]).loss   # data: the cases share each compilation
    steps = 6
    ts = h * np.arange(steps + 1)
    gd = np.asarray(flows.gradient_descent(E, jnp.ones(1), h, steps))[:, 0]
    pf = np.asarray(flows.integrate(flows.principal_flow(E, h), jnp.ones(1), ts, method="rk4", substeps=200))[:, 0].real
    signs = (-1.0) ** np.arange(steps + 1)
    assert np.all(np.sign(gd) == signs) and np.all(np.sign(pf) == signs)
    ratio = np.abs(pf[1:] / pf[:-1])
    np.testing.assert_allclose(ratio, abs(1 - hl), rtol=1e-7)
    if hl != 2:  # at h lambda = 2 the modulus is constant (checked to 1e-7 just above)
        assert (ratio[0] < 1) == (hl < 2)
    for field in (flows.gradient_flow(E), flows.igr_flow(E, h)):
        z = np.asarray(flows.integrate(field, jnp.ones(1), ts, method="rk4", substeps=50))[:, 0]
        assert np.all(z > 0) and np.all(np.diff(z) < 0)


def test_stability_regime_names():
    """Chapter 4 table: the regime of each h lambda, boundaries included; bad input is refused."""
    xs = [-0.3, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0]
    assert stability.stability_regime(xs) == list(stability.REGIMES)
    assert stability.stability_regime(1.0 + 1e-14) == "one-step convergence"
    assert stability.stability_regime(1.0 + 1e-6) == "oscillating convergence"
    with pytest.raises(ValueError, match="real"):
        stability.stability_regime(1.0 + 0.5j)
    with pytest.raises(ValueError, match="finite"):
        stability.stability_regime(np.nan)


# ---------------------------------------------------------------- fixed points (eq-stab-jacobian, eq-stab-criterion)

CRITICAL_POINTS = [
    (landscapes.rosenbrock, np.array([1.0, 1.0]), 1.5e-3),
    (lambda: landscapes.double_well(0.5), np.array([1.0, 0.0]), 0.8),
    (landscapes.local_minimum, np.array([1.0, 0.0]), 0.7),
    (landscapes.local_minimum, np.array([-1.0, 0.0]), 0.7),
    (lambda: landscapes.double_well(0.5), np.array([0.0, 0.0]), 0.8),
]


@pytest.mark.parametrize("make,point,h", CRITICAL_POINTS)
def test_pf_jacobian_at_critical_point_is_matrix_log(make, point, h):
    """eq-stab-jacobian: D f(theta*) = (1/h) log(I - hH), by central differences of the PF field
    against scipy.linalg.logm (relative 1e-8), and exp(h Df) = I - hH, GD's Jacobian."""
    L = make()
    H = np.asarray(jax.hessian(L.loss)(jnp.asarray(point)))
    J = jacobian_fd(flows.principal_flow(L.loss, h), point)
    predicted = scipy.linalg.logm(np.eye(2) - h * H) / h
    assert np.abs(J - predicted).max() < 1e-8 * np.abs(predicted).max()
    np.testing.assert_allclose(scipy.linalg.expm(h * J), np.eye(2) - h * H, atol=1e-8)


def test_pf_stability_criterion_is_gds():
    """eq-stab-criterion: at a minimum the PF is linearly stable iff 0 < h lambda_i < 2 for all i,
    iff GD converges there; on the double well (curvatures 2 and 0.5) the threshold is h = 1."""
    L = landscapes.double_well(0.5)
    point = np.array([1.0, 0.0])
    for h in (0.3, 0.7, 0.95, 0.99, 1.01, 1.05, 1.5):
        H = np.asarray(jax.hessian(L.loss)(jnp.asarray(point)))
        J = scipy.linalg.logm(np.eye(2) - h * H) / h
        pf_stable = bool(np.all(np.linalg.eigvals(J).real < 0))
        hl = h * np.linalg.eigvalsh(H)
        assert pf_stable == bool(np.all((hl > 0) & (hl < 2))) == (h < 1)
        try:
            last = np.asarray(flows.gradient_descent(L.loss, jnp.array([1.001, 0.001]), jnp.asarray(h), 3000))[-1]
            converged = np.linalg.norm(last - point) < 1e-6
        except flows.DivergenceError:
            converged = False
        assert converged == pf_stable


def test_pf_jacobian_by_jacfwd_at_exact_critical_point():
    """eq-stab-jacobian with jax.jacfwd at the exact minimum (forward mode through the PF field)."""
    L = landscapes.double_well(0.5)
    point = jnp.array([1.0, 0.0])
    J = np.asarray(jax.jacfwd(flows.principal_flow(L.loss, 0.8))(point))
    H = np.asarray(jax.hessian(L.loss)(point))
    np.testing.assert_allclose(J, scipy.linalg.logm(np.eye(2) - 0.8 * H) / 0.8, atol=1e-10)


@pytest.mark.parametrize("h", [0.5, 2.5])
def test_ngf_and_igr_jacobians_miss_the_threshold(h):
    """eq-stab-jacobians-ngf-igr: D f_NGF = -H and D f_IGR = -H - (h/2) H^2 at critical points (jacfwd);
    at the double-well saddle (lambda = -1 along x) IGR calls it stable once h > 2, NGF never."""
    L = landscapes.double_well(0.5)
    for point in (jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0])):
        H = np.asarray(jax.hessian(L.loss)(point))
        np.testing.assert_allclose(np.asarray(jax.jacfwd(flows.gradient_flow(L.loss))(point)), -H, atol=1e-12)
        J_igr = np.asarray(jax.jacfwd(flows.igr_flow(L.loss, h))(point))
        np.testing.assert_allclose(J_igr, -H - h / 2 * H @ H, atol=1e-12)
    saddle = jnp.array([0.0, 0.0])
    J_igr = np.asarray(jax.jacfwd(flows.igr_flow(L.loss, h))(saddle))
    assert bool(np.all(np.linalg.eigvals(J_igr).real < 0)) == (h > 2)
    J_ngf = np.asarray(jax.jacfwd(flows.gradient_flow(L.loss))(saddle))
    assert np.any(np.linalg.eigvals(J_ngf).real > 0)


# ---------------------------------------------------------------- saddles (eq-stab-escape)

def fitted_rate(t, y, cap=1e-3):
    y = np.abs(np.asarray(y).real)
    keep = y < cap
    return np.polyfit(np.asarray(t)[keep], np.log(y[keep]), 1)[0]


@pytest.mark.parametrize("h", [0.5, 2.5])
def test_escape_rates_along_negative_curvature(h):
    """eq-stab-escape: on the saddle (lambda = -1 along y) GD and the PF escape at log(1 + h)/h, slower
    than NGF's 1; IGR's rate is 1 - h/2, negative (it converges) for h > 2. Measured by fitting log|y|."""
    S = landscapes.saddle(0.5, 1.0)
    start = jnp.array([0.5, 1e-8])
    steps = 8
    fine = np.linspace(0, steps * h, 8 * steps + 1)
    measured = {
        "GD": fitted_rate(h * np.arange(steps + 1), flows.gradient_descent(S.loss, start, h, steps)[:, 1]),
        "PF": fitted_rate(fine, flows.integrate(flows.principal_flow(S.loss, h), start, fine, method="rk4", substeps=25)[:, 1]),
        "NGF": fitted_rate(fine, flows.integrate(flows.gradient_flow(S.loss), start, fine, method="rk4", substeps=25)[:, 1]),
        "IGR": fitted_rate(fine, flows.integrate(flows.igr_flow(S.loss, h), start, fine, method="rk4", substeps=25)[:, 1]),
    }
    formula = stability.growth_rates(h, -1.0)
    np.testing.assert_allclose(float(formula["GD"]), np.log(1 + h) / h, rtol=1e-14)
    np.testing.assert_allclose(float(formula["IGR"]), 1 - h / 2, rtol=1e-14)
    for m, r in measured.items():
        assert abs(r - float(formula[m])) < 1e-4, (m, r, formula[m])
    assert abs(measured["GD"] - measured["PF"]) < 1e-4
    assert measured["GD"] < measured["NGF"]
    assert (measured["IGR"] < 0) == (h > 2)


def test_gd_slower_than_ngf_for_every_step_size_symbolically():
    """eq-stab-escape: u - log(1 + u) vanishes at 0 and increases (derivative u/(1 + u) > 0); IGR's
    u(1 - u/2) < 0 exactly for u > 2; its error against GD is u^3/3 + O(u^4)."""
    u = sp.symbols("u", positive=True)
    gap = u - sp.log(1 + u)
    assert gap.subs(u, 0) == 0 and sp.simplify(sp.diff(gap, u) - u / (1 + u)) == 0
    assert (u / (1 + u)).is_positive
    assert sp.solve_univariate_inequality(u * (1 - u / 2) < 0, u, relational=False) == \
        sp.Union(sp.Interval.open(-sp.oo, 0), sp.Interval.open(2, sp.oo))
    assert sp.series(sp.log(1 + u) - u * (1 - u / 2), u, 0, 4).removeO() == u**3 / 3


# ---------------------------------------------------------------- the valley floor (eq-stab-floor)

def test_valley_floor_start_stays_until_a_perturbation_grows():
    """eq-stab-floor: u0 . theta_n = (1 - h lambda_0)^n u0 . theta_0. Exactly on the floor it stays 0
    at h lambda_0 = 2.5; a perturbation delta grows by 1.5 per step and exceeds 1e-2 after
    log(1e-2/delta)/log(1.5) steps (rounded up); the PF's closed form agrees."""
    h, steps = 2.5, 60
    floor = landscapes.quadratic([1.0, 0.01])
    on = np.asarray(flows.gradient_descent(floor.loss, jnp.array([0.0, 2.0]), h, steps))
    assert np.all(on[:, 0] == 0.0)
    np.testing.assert_allclose(on[:, 1], 2.0 * 0.975 ** np.arange(steps + 1), rtol=1e-12)
    for delta in (1e-10, 1e-6):
        z = np.asarray(flows.gradient_descent(floor.loss, jnp.array([delta, 2.0]), h, steps))[:, 0]
        np.testing.assert_allclose(z, delta * (-1.5) ** np.arange(steps + 1), rtol=1e-12)
        n_leave = np.log(1e-2 / delta) / np.log(1.5)
        assert np.argmax(np.abs(z) > 1e-2) == int(np.ceil(n_leave))
    pf = flows.quadratic_pf_solution(floor.params["A"], np.array([0.0, 2.0]), h, np.linspace(0, steps * h, 50))
    assert np.all(np.asarray(pf)[:, 0] == 0)


def test_rounding_seeds_the_instability_in_a_rotated_valley():
    """Chapter 4, valley floor: in a rotated valley a start on the floor has a rounding-level component
    along u0 (< 1e-15) that grows by 1.5 per step and throws GD off the floor within ~100 steps."""
    h = 2.5
    tilted = landscapes.quadratic([1.0, 0.01], angle=np.pi / 6)
    U = tilted.params["eigenvectors"]
    z = np.asarray(flows.gradient_descent(tilted.loss, jnp.asarray(2.0 * U[:, 1]), h, 100)) @ U[:, 0]
    assert abs(z[0]) < 1e-15
    left = int(np.argmax(np.abs(z) > 1e-2))
    assert 60 < left < 100
    late = np.abs(z[left - 20:left])
    np.testing.assert_allclose(late[1:] / late[:-1], 1.5, rtol=1e-3)


def test_double_well_pf_flips_sign_with_gd_near_the_threshold():
    """Chapter 4, double-well figure: at h lambda_0 = 1.9 and 2.1 the real part of the PF flips sign with
    GD at every one of 12 steps; NGF and IGR never do; at 2.1 the PF overestimates the amplitude late."""
    L = landscapes.double_well(0.5)
    start, steps = jnp.array([1.04, 0.3]), 12
    for h in (0.95, 1.05):
        ts = h * np.arange(steps + 1)
        gd = np.asarray(flows.gradient_descent(L.loss, start, h, steps))[:, 0] - 1
        pf = np.asarray(flows.integrate(flows.principal_flow(L.loss, h), start.astype(complex), ts,
                                        method="rk4", substeps=100))[:, 0].real - 1
        assert np.all(np.sign(gd) == np.sign(pf)) and np.all(np.sign(gd) == (-1.0) ** np.arange(steps + 1))
        if h > 1:
            assert 1.0 < pf[12] / gd[12] < 2.0
        ngf = np.asarray(flows.integrate(flows.gradient_flow(L.loss), start, ts, method="rk4", substeps=50))[:, 0] - 1
        assert np.all(ngf >= 0)


def test_pf_rate_and_step_factor_match_gradient_descent():
    """eq-eos-growth, eq-eos-factor against gradient descent itself: on E = (1/2) sum_i lam_i theta_i^2
    each coordinate is a 1-D quadratic, and the rate measured over actual GD iterates,
    log|theta_n / theta_0| / (n h), is growth_rates()['PF']; the factor of one step, theta_1 / theta_0
    (signed), is pf_step_factor. The rate is negative for 0 < h lam < 2, zero at 2, positive beyond."""
    h = 0.25
    lam = np.array([-3.0, 0.5, 2.0, 5.0, 7.9, 8.0, 8.1, 12.0])
    n = 10
    gd = np.asarray(flows.gradient_descent(lambda t: 0.5 * jnp.sum(jnp.asarray(lam) * t**2),
                                           jnp.ones(lam.size), h, n))
    r = stability.growth_rates(h, lam)["PF"]
    # float64: each GD step multiplies by 1 - h lam exactly up to one rounding (~1e-16), so 10 steps
    # and a log stay within ~1e-14, 100x inside the tolerances.
    np.testing.assert_allclose(r, np.log(np.abs(gd[n])) / (n * h), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stability.pf_step_factor(h, lam), gd[1] / gd[0], rtol=1e-12, atol=1e-15)
    assert np.all(r[1:5] < 0) and abs(r[5]) < 1e-12 and r[6] > 0 and r[7] > 0 and r[0] > 0
