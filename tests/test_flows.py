"""The flows of chapters 1–3 against gradient descent, in float64."""
import logging
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfcourse import flows, landscapes

# h * lambda spans every regime: lambda < 0, lambda = 0, 0 < h lambda < 1, 1 < h lambda < 2, > 2.
H = 0.5
REGIMES = np.array([-0.7, 0.0, 0.9, 1.6, 2.6, 3.5, 4.5])


def random_quadratic(seed, lam=REGIMES):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(lam.size, lam.size)))
    return landscapes.quadratic(lam, eigenvectors=Q), rng.normal(size=lam.size)


def rel_err(a, b):
    """max over times of ||a(t) - b(t)|| / ||b(t)||."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


# ---------------------------------------------------------------- exactness on quadratics (eq-pf-quadratic)

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quadratic_pf_solution_passes_through_gd_iterates(seed):
    """eq-pf-quadratic: theta(nh) = U (1 - h Lambda)^n U^T theta0 = GD iterate n, n <= 20."""
    L, th0 = random_quadratic(seed)
    gd = flows.gradient_descent(L.loss, jnp.asarray(th0), H, 20)
    pf = flows.quadratic_pf_solution(L.params["A"], th0, H, H * np.arange(21))
    assert rel_err(pf, gd) < 1e-12
    assert np.max(np.abs(np.asarray(pf).imag)) < 1e-10 * np.max(np.abs(gd))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("method,kw", [("dopri8", dict(rtol=1e-12, atol=1e-14)), ("rk4", dict(substeps=800))])
def test_integrated_pf_matches_gd_on_random_quadratics(seed, method, kw):
    """eq-pf: integrating the PF field from theta0 reproduces GD at t = nh to relative 1e-8 or better."""
    L, th0 = random_quadratic(seed)
    gd = flows.gradient_descent(L.loss, jnp.asarray(th0), H, 20)
    ts = H * np.arange(21)
    pf = flows.integrate(flows.principal_flow(L.loss, H), jnp.asarray(th0), ts, method=method, **kw)
    assert rel_err(pf, gd) < 1e-8
    assert rel_err(pf.real, gd) < 1e-8
    assert np.max(np.abs(np.asarray(pf).imag)) < 1e-8 * np.max(np.abs(gd))


def test_pf_is_complex_between_iterates_when_h_lambda_above_one():
    """Between GD steps the PF of an oscillating direction is genuinely complex (chapter 3 figure)."""
    lam = np.array([3.0])  # h lambda = 1.5
    pf = flows.quadratic_pf_solution(np.diag(lam), np.array([1.0]), H, np.array([0.25, 0.5, 0.75]))
    pf = np.asarray(pf)[:, 0]
    assert abs(pf[0].imag) > 0.1 and abs(pf[2].imag) > 0.01
    np.testing.assert_allclose(pf[1], -0.5, atol=1e-14)  # (1 - 1.5)^1
    # closed form (1 - h lam)^(t/h) on the principal branch
    np.testing.assert_allclose(pf[0], np.exp(0.5 * (np.log(0.5) + 1j * np.pi)), rtol=1e-13)


@settings(max_examples=25, deadline=None)
@given(x=st.floats(-5, 5).filter(lambda v: abs(v - 1) > 1e-6), n=st.integers(0, 12))
def test_pf_growth_factor_at_integer_times_is_gd_factor(x, n):
    """exp(n log(1 - x)) = (1 - x)^n for every real x != 1: the PF and GD agree per direction."""
    val = np.exp(n * np.asarray(flows.log_one_minus(jnp.asarray(x))))
    np.testing.assert_allclose(val, (1 - x) ** n, rtol=1e-10, atol=1e-300)


# ---------------------------------------------------------------- the coefficient alpha (eq-pf-coefficient)

def test_pf_coefficient_special_values():
    """eq-pf-coefficient: alpha(0) = -1 (limit), alpha(1) = -inf, principal branch for x > 1."""
    a = np.asarray(flows.pf_coefficient(jnp.array([0.0, 1e-7, -1e-7, 1.0, 2.0, 3.0, -1.0])))
    np.testing.assert_allclose(a[0], -1.0)
    np.testing.assert_allclose(a[1], -1 - 1e-7 / 2, rtol=1e-14)
    np.testing.assert_allclose(a[2], -1 + 1e-7 / 2, rtol=1e-14)
    assert a[3].real == -np.inf and a[3].imag == 0
    np.testing.assert_allclose(a[4], 1j * np.pi / 2, atol=1e-15)
    np.testing.assert_allclose(a[5], (np.log(2) + 1j * np.pi) / 3, rtol=1e-14)
    np.testing.assert_allclose(a[6], -np.log(2), rtol=1e-14)


@settings(max_examples=50, deadline=None)
@given(x=st.floats(-0.9, 0.9))
def test_pf_coefficient_is_the_principal_series(x):
    """alpha(x) = -sum_k x^k / (k + 1) for |x| < 1 (eq-pf-series)."""
    k = np.arange(400)
    series = -np.sum(x**k / (k + 1))
    np.testing.assert_allclose(np.asarray(flows.pf_coefficient(jnp.asarray(x))).real, series, rtol=1e-12)


def test_pf_field_is_the_matrix_logarithm_and_the_principal_series():
    """eq-pf: the PF field equals (1/h) log(I - hH) H^{-1} grad E (scipy's logm, an independent
    route) and, for h ||H|| < 1, the principal series -sum_k h^k/(k+1) H^k grad E."""
    import scipy.linalg

    L = landscapes.rosenbrock()
    th = jnp.array([-0.5, 0.7])
    g = np.asarray(jax.grad(L.loss)(th))
    Hm = np.asarray(L.hessian(th))
    for h in [1e-3, 2e-3, 0.02]:  # h lambda_max = 0.18, 0.35, 3.5 (complex)
        pf = np.asarray(flows.principal_flow(L.loss, h)(th))
        expected = scipy.linalg.logm(np.eye(2) - h * Hm) @ np.linalg.solve(Hm, g) / h
        np.testing.assert_allclose(pf, expected, rtol=1e-10)
        if h * np.linalg.norm(Hm, 2) < 1:
            series, term = np.zeros(2), g.copy()
            for k in range(200):
                series -= term / (k + 1)
                term = h * Hm @ term
            np.testing.assert_allclose(pf.real, series, rtol=1e-10)
            np.testing.assert_allclose(pf.imag, 0.0, atol=1e-14)
    # h -> 0: gradient flow; first order: IGR (they differ by O(h^2))
    h = 1e-8
    np.testing.assert_allclose(np.asarray(flows.principal_flow(L.loss, h)(th)).real,
                               np.asarray(flows.igr_flow(L.loss, h)(th)), rtol=1e-9)
    np.testing.assert_allclose(flows.gradient_flow(L.loss)(th), -g)


def test_igr_field_is_gradient_of_modified_loss():
    """eq-bea-igr: -grad E - (h/2) H grad E = -grad(E + (h/4) ||grad E||^2)."""
    L = landscapes.rosenbrock()
    h = 0.01
    modified = lambda t: L.loss(t) + h / 4 * jnp.sum(jax.grad(L.loss)(t) ** 2)
    th = jnp.array([0.3, -0.2])
    np.testing.assert_allclose(flows.igr_flow(L.loss, h)(th), -jax.grad(modified)(th), rtol=1e-12)


def test_fields_accept_pytrees():
    E = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 4)
    p = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(0.5)}
    for f in [flows.gradient_flow(E), flows.igr_flow(E, 0.1), flows.principal_flow(E, 0.1)]:
        out = f(p)
        assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(p)
    it = flows.gradient_descent(E, p, 0.1, 3)
    assert it["w"].shape == (4, 2) and it["b"].shape == (4,)
    st_ = flows.integrate(flows.gradient_flow(E), p, jnp.array([0.0, 0.1]))
    assert st_["w"].shape == (2, 2)


# ---------------------------------------------------------------- h lambda = 1 exactly

def test_h_lambda_equal_one_is_exact_in_the_closed_form():
    """GD lands on the minimum along u_i in one step; the closed form gives exactly 0 for t > 0."""
    A = np.diag([2.0, 1.0])  # h = 0.5: h lambda = (1, 0.5)
    ts = np.array([0.0, 0.1, 0.5, 1.0])
    pf = np.asarray(flows.quadratic_pf_solution(A, np.array([1.0, 1.0]), 0.5, ts))
    assert np.all(np.isfinite(pf))
    np.testing.assert_array_equal(pf[:, 0], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(pf[:, 1].real, 0.5 ** (ts / 0.5), rtol=1e-14)


def test_h_lambda_equal_one_field_raises_instead_of_nan():
    E = lambda t: 0.5 * (2 * t[0] ** 2 + t[1] ** 2)
    field = flows.principal_flow(E, 0.5)
    with pytest.raises(Exception, match="singular"):
        field(jnp.array([1.0, 1.0]))
    with pytest.raises(Exception, match="singular"):
        jax.jit(field)(jnp.array([1.0, 1.0]))
    # with no gradient component along that direction the field is finite
    out = field(jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(out, [0.0, np.log(0.5) / 0.5], atol=1e-15)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("h", [-0.1, 0.0, np.inf, np.nan])
def test_bad_learning_rate(h):
    E = lambda t: jnp.sum(t**2)
    for make in [lambda: flows.igr_flow(E, h), lambda: flows.principal_flow(E, h),
                 lambda: flows.gradient_descent(E, jnp.ones(2), h, 3),
                 lambda: flows.quadratic_pf_solution(np.eye(2), np.ones(2), h, [0.0])]:
        with pytest.raises(ValueError, match="learning rate"):
            make()


def test_non_finite_parameters():
    E = lambda t: jnp.sum(t**2)
    with pytest.raises(ValueError, match="non-finite"):
        flows.gradient_descent(E, jnp.array([1.0, np.nan]), 0.1, 3)
    with pytest.raises(ValueError, match="non-finite"):
        flows.integrate(flows.gradient_flow(E), jnp.array([np.inf, 0.0]), [0.0, 1.0])
    with pytest.raises(Exception, match="not finite"):
        flows.principal_flow(E, 0.1)(jnp.array([np.nan, 0.0]))


def test_mismatched_shapes_and_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        flows.quadratic_pf_solution(np.eye(3), np.ones(2), 0.1, [0.0])
    with pytest.raises(ValueError, match="square"):
        flows.quadratic_pf_solution(np.ones((2, 3)), np.ones(2), 0.1, [0.0])
    with pytest.raises(ValueError, match="symmetric"):
        flows.quadratic_pf_solution(np.array([[1.0, 2.0], [0.0, 1.0]]), np.ones(2), 0.1, [0.0])
    with pytest.raises(ValueError, match="scalar"):
        flows.gradient_descent(lambda t: t**2, jnp.ones(2), 0.1, 3)
    with pytest.raises(ValueError, match="shaped like theta0"):
        flows.integrate(lambda t: jnp.ones(3), jnp.ones(2), [0.0, 1.0])
    with pytest.raises(ValueError, match="increasing"):
        flows.integrate(flows.gradient_flow(lambda t: jnp.sum(t**2)), jnp.ones(2), [1.0, 0.0])
    with pytest.raises(ValueError, match="steps"):
        flows.gradient_descent(lambda t: jnp.sum(t**2), jnp.ones(2), 0.1, -1)
    with pytest.raises(ValueError, match="branch"):
        flows.principal_flow(lambda t: jnp.sum(t**2), 0.1, branch="nearest")


def test_divergence_is_reported_with_the_step():
    E = lambda t: 0.5 * 10.0 * jnp.sum(t**2)  # h lambda = 10: factor 9 per step, overflow near step 330
    with pytest.raises(flows.DivergenceError, match="iterate"):
        flows.gradient_descent(E, jnp.ones(2), 1.0, 400)
    # y' = y^2 from y(0) = 1 blows up at t = 1
    with pytest.raises(flows.DivergenceError, match="solver stopped"):
        flows.integrate(lambda t: t**2, jnp.ones(1), [0.0, 2.0])
    with pytest.raises(flows.DivergenceError, match="not finite at t"):
        flows.integrate(lambda t: t**2, jnp.ones(1), [0.0, 2.0], method="rk4", substeps=50)


# ---------------------------------------------------------------- probes that used to go silently wrong

FIELDS = {
    "gradient_flow": lambda E: flows.gradient_flow(E),
    "igr_flow": lambda E: flows.igr_flow(E, 0.1),
    "principal_flow": lambda E: flows.principal_flow(E, 0.1),
    "pf_corrected_flow": lambda E: flows.pf_corrected_flow(E, 0.1),
    "third_order_flow": lambda E: flows.third_order_flow(E, 0.1),
}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_fields_refuse_nan_theta_eagerly_and_under_jit(name):
    """A field at a NaN theta used to return NaN; now it says so, also inside compiled code."""
    field = FIELDS[name](lambda t: jnp.sum(t**2) + t[0] ** 3)
    bad = jnp.array([jnp.nan, 1.0])
    with pytest.raises(ValueError, match=f"{name}: the field is not finite at theta"):
        field(bad)
    with pytest.raises(eqx.EquinoxRuntimeError, match=f"{name}: the field is not finite at theta") as caught:
        eqx.filter_jit(field)(bad)
    assert "INTERNAL: CpuCallback error" not in str(caught.value)
    with pytest.raises(Exception, match=f"{name}: the field is not finite at theta"):  # plain jax.jit
        jax.jit(field)(jnp.array([1.0, jnp.inf]))
    assert np.all(np.isfinite(np.asarray(jax.jit(field)(jnp.array([0.1, 0.2])))))


def test_a_flow_that_reaches_nan_inside_integrate_is_a_divergence():
    """The fields' run-time check fires inside integrate's compiled solver; integrate reports it as
    the divergence it is (not as the field's error), with the time span."""
    blow_up = flows.gradient_flow(lambda t: -jnp.sum(t**4))   # dtheta/dt = 4 theta^3: infinite at t = 1/8
    with pytest.raises(flows.DivergenceError, match="became NaN or inf between t = 0.0 and t = 2.0"):
        flows.integrate(blow_up, jnp.ones(1), [0.0, 2.0], method="rk4", substeps=50)


def test_nan_gradient_is_not_blamed_on_the_learning_rate():
    """GD on a loss whose gradient is NaN at an ordinary point (sqrt below 0) used to report
    'learning rate above the stability threshold 2/lambda_max'."""
    E = lambda t: jnp.sum(jnp.sqrt(t))  # gradient 1 / (2 sqrt(t)): NaN once an iterate is negative
    with pytest.raises(flows.DivergenceError, match="gradient of E is NaN at iterate 2") as caught:
        flows.gradient_descent(E, jnp.array([0.5, 1.0]), 0.6, 5)
    assert "stability threshold" not in str(caught.value) and "not differentiable" in str(caught.value)
    # a real divergence still names the threshold
    with pytest.raises(flows.DivergenceError, match="stability threshold 2/lambda_max"):
        flows.gradient_descent(lambda t: 5.0 * jnp.sum(t**2), jnp.ones(2), 1.0, 400)


def test_integrate_refuses_an_empty_grid_and_bad_step_counts_before_any_work():
    def field(t):
        raise AssertionError("the field must not be called before the arguments are checked")

    with pytest.raises(ValueError, match="ts is empty"):
        flows.integrate(field, jnp.ones(2), [])
    for kw, match in [(dict(max_steps=0), "max_steps must be a positive integer"),
                      (dict(max_steps=-5), "max_steps must be a positive integer"),
                      (dict(max_steps=10.5), "max_steps must be a positive integer"),
                      (dict(substeps=0), "substeps must be a positive integer"),
                      (dict(substeps=2.5), "substeps must be a positive integer")]:
        with pytest.raises(ValueError, match=match):
            flows.integrate(field, jnp.ones(2), [0.0, 1.0], **kw)


def test_landscapes_refuse_theta_of_the_wrong_length():
    """A 2-D landscape given 3 (or 1) parameters used to broadcast or ignore the extra entries, and
    gradient descent 'worked'."""
    for L in (landscapes.quadratic([1.0, 2.0]), landscapes.double_well(), landscapes.rosenbrock(),
              landscapes.saddle(), landscapes.local_minimum()):
        for bad in (jnp.ones(3), jnp.ones(1), jnp.ones((2, 2))):
            with pytest.raises(ValueError, match=r"theta must have shape \(2,\)"):
                flows.gradient_descent(L.loss, bad, 0.1, 3)
            with pytest.raises(ValueError, match="shape"):
                L.hessian(bad)
        assert np.isfinite(float(L.loss(jnp.asarray(L.start))))
        np.testing.assert_allclose(jax.vmap(L.loss)(jnp.stack([jnp.asarray(L.start)] * 3)), L.loss(jnp.asarray(L.start)))


# ---------------------------------------------------------------- landscapes

@pytest.mark.parametrize("make", [landscapes.saddle, landscapes.double_well, landscapes.rosenbrock,
                                  lambda: landscapes.quadratic([3.0, -1.0], angle=0.4)])
def test_landscape_hessians_match_autodiff(make):
    L = make()
    rng = np.random.default_rng(3)
    for _ in range(3):
        th = jnp.asarray(rng.normal(size=L.dim))
        np.testing.assert_allclose(L.hessian(th), jax.hessian(L.loss)(th), rtol=1e-12, atol=1e-12)
    for m in L.minima:
        g = jax.grad(L.loss)(jnp.asarray(m))
        np.testing.assert_allclose(g, 0.0, atol=1e-12)
        assert np.all(np.linalg.eigvalsh(np.asarray(L.hessian(jnp.asarray(m)))) > 0)


def test_landscapes_are_analytic():
    """The losses are polynomials: they evaluate at complex theta (chapter 5's complex PF)."""
    for L in [landscapes.saddle(), landscapes.double_well(), landscapes.rosenbrock()]:
        z = jnp.array([0.3 + 0.1j, -0.2 + 0.05j])
        assert jnp.iscomplexobj(L.loss(z))
        gz = jax.grad(L.loss, holomorphic=True)(z)
        # Cauchy–Riemann: d/dx along the real direction equals the holomorphic derivative
        eps = 1e-7
        fd = (L.loss(z + jnp.array([eps, 0])) - L.loss(z - jnp.array([eps, 0]))) / (2 * eps)
        np.testing.assert_allclose(gz[0], fd, rtol=1e-6)


# ---------------------------------------------------------------- chapter 1 and 3 closed forms

@pytest.mark.parametrize("hl", [-0.4, 0.3, 1.0, 1.5, 2.0, 2.4])
def test_gd_and_ngf_closed_forms_per_eigendirection(hl):
    """eq-gd-quadratic: z_n = (1 - h lam)^n z_0; eq-ngf-quadratic: z(t) = exp(-lam t) z_0."""
    L, th0 = random_quadratic(4, lam=np.array([hl / H, 0.8]))
    U = L.params["eigenvectors"]
    z0 = U.T @ th0
    gd = np.asarray(flows.gradient_descent(L.loss, jnp.asarray(th0), H, 12)) @ U
    n = np.arange(13)[:, None]
    np.testing.assert_allclose(gd, (1 - H * L.params["eigenvalues"]) ** n * z0, rtol=1e-12, atol=1e-13)
    ts = np.linspace(0, 3, 7)
    ngf = np.asarray(flows.integrate(flows.gradient_flow(L.loss), jnp.asarray(th0), ts, rtol=1e-12, atol=1e-14)) @ U
    np.testing.assert_allclose(ngf, np.exp(-ts[:, None] * L.params["eigenvalues"]) * z0, rtol=1e-9, atol=1e-10)


def test_gd_stability_threshold():
    """eq-gd-stability: |1 - x| < 1 iff 0 < x < 2, symbolically and by running GD."""
    import sympy as sp

    x = sp.symbols("x", real=True)
    assert sp.solve_univariate_inequality(sp.Abs(1 - x) < 1, x, relational=False) == sp.Interval.open(0, 2)
    E = lambda t: 0.5 * jnp.sum(t**2)  # lambda = 1, so h = h lambda
    for hl, converges in [(0.5, True), (1.9, True), (2.0, False), (2.1, False)]:
        z = np.abs(np.asarray(flows.gradient_descent(E, jnp.ones(1), hl, 200))[-1, 0])
        assert (z < 1e-3) == converges


@pytest.mark.parametrize("xx", [-0.5, 0.1, 0.5, 1.5, 2.5])
def test_step_factors_of_the_four_models(xx):
    """eq-step-factors: over time h along one direction (x = h lambda) GD and PF multiply by 1 - x,
    NGF by exp(-x), IGR by exp(-x (1 + x / 2)); measured by integrating each field."""
    hh = 0.5
    lam = xx / hh
    E = landscapes.quadratic([lam]).loss   # data: the five cases share each field's compilation
    ts = jnp.array([0.0, hh])
    gd = flows.gradient_descent(E, jnp.ones(1), hh, 1)[1, 0]
    ngf = flows.integrate(flows.gradient_flow(E), jnp.ones(1), ts, rtol=1e-12, atol=1e-14)[1, 0]
    igr = flows.integrate(flows.igr_flow(E, hh), jnp.ones(1), ts, rtol=1e-12, atol=1e-14)[1, 0]
    pf = flows.integrate(flows.principal_flow(E, hh), jnp.ones(1), ts, rtol=1e-12, atol=1e-14)[1, 0]
    np.testing.assert_allclose(gd, 1 - xx, rtol=1e-14)
    np.testing.assert_allclose(pf, 1 - xx, rtol=1e-9)
    np.testing.assert_allclose(ngf, np.exp(-xx), rtol=1e-9)
    np.testing.assert_allclose(igr, np.exp(-xx * (1 + xx / 2)), rtol=1e-9)


# ---------------------------------------------------------------- flows as data: one compilation, jit, vmap

def _double_well(t):
    return 0.25 * (t[0] ** 2 - 1) ** 2 + 0.5 * t[1] ** 2


def count_compilations(caplog, call):
    """How many XLA compilations ``call()`` triggers (JAX logs each one under ``jax.log_compiles``)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        call()
    return sum("Compiling" in r.getMessage() for r in caplog.records)


def test_integrate_compiles_once_for_every_h(caplog):
    """Fields are data (h an array leaf): repeated integrate calls of one structure reuse one
    compilation whatever h, start and time grid; so do two landscapes of one kind."""
    ts = jnp.linspace(0.0, 1.0, 5)
    y0 = jnp.array([0.3, 0.5])
    first = count_compilations(caplog, lambda: flows.integrate(flows.igr_flow(_double_well, 0.1), y0, ts))
    assert first >= 1                               # the counter sees compilations at all
    for h, start, grid in [(0.2, y0 / 2, ts + 1.0), (0.3, -y0, 2 * ts), (0.45, y0, ts)]:
        assert count_compilations(caplog, lambda: flows.integrate(flows.igr_flow(_double_well, h), start, grid)) == 0
    pf = lambda kappa: flows.principal_flow(landscapes.double_well(kappa).loss, 0.3)  # noqa: E731
    z0 = y0.astype(complex)
    assert count_compilations(caplog, lambda: flows.integrate(pf(1.0), z0, ts, method="rk4", substeps=4)) >= 1
    assert count_compilations(caplog, lambda: flows.integrate(pf(2.0), z0, ts, method="rk4", substeps=4)) == 0


def test_gradient_descent_and_integrate_under_jit_and_vmap_over_h():
    """Traced h: vmap over h gives the calls one at a time (the same float64 operations, so equal to
    rounding: rtol 1e-12 is ~1e4 ulps)."""
    hs = jnp.array([0.1, 0.4, 0.7])
    y0 = jnp.array([0.3, 0.5])
    ts = jnp.linspace(0.0, 1.0, 3)
    gd = jax.vmap(lambda h: flows.gradient_descent(_double_well, y0, h, 6))(hs)
    gd_jit = jax.jit(lambda h: flows.gradient_descent(_double_well, y0, h, 6))
    flow = lambda h: flows.integrate(flows.igr_flow(_double_well, h), y0, ts, method="rk4", substeps=8)  # noqa: E731
    igr = jax.vmap(flow)(hs)
    for i, h in enumerate(np.asarray(hs)):
        np.testing.assert_allclose(gd[i], flows.gradient_descent(_double_well, y0, float(h), 6), rtol=1e-12)
        np.testing.assert_allclose(gd_jit(h), gd[i], rtol=1e-12)
        np.testing.assert_allclose(igr[i], flow(float(h)), rtol=1e-12)
        np.testing.assert_allclose(jax.jit(flow)(h), igr[i], rtol=1e-12)


def test_errors_inside_jit_reach_the_user_as_the_message():
    """Under tracing the divergence checks run in compiled code (equinox.error_if): under
    equinox.filter_jit the user gets EquinoxRuntimeError with the message; under jax.jit the same
    message inside JAX's runtime error."""
    E = lambda t: 5.0 * jnp.sum(t**2)  # noqa: E731   h lambda = 10: diverges
    gd = lambda h: flows.gradient_descent(E, jnp.ones(2), h, 400)  # noqa: E731
    with pytest.raises(eqx.EquinoxRuntimeError, match="stability threshold 2/lambda_max") as caught:
        eqx.filter_jit(gd)(1.0)
    assert "CpuCallback" not in str(caught.value)
    with pytest.raises(Exception, match="stability threshold 2/lambda_max"):
        jax.jit(gd)(1.0)
    nan = lambda h: flows.gradient_descent(lambda t: jnp.sum(jnp.sqrt(t)), jnp.array([0.5, 1.0]), h, 5)  # noqa: E731
    with pytest.raises(eqx.EquinoxRuntimeError, match="gradient of E is NaN at an ordinary finite iterate"):
        eqx.filter_jit(nan)(0.6)
    blow = lambda y0: flows.integrate(lambda t: t**2, y0, jnp.array([0.0, 2.0]), method="rk4", substeps=50)  # noqa: E731
    with pytest.raises(eqx.EquinoxRuntimeError, match="the flow is not finite from some time on") as caught:
        eqx.filter_jit(blow)(jnp.ones(1))
    assert "CpuCallback" not in str(caught.value)
    solver = lambda y0: flows.integrate(lambda t: t**2, y0, jnp.array([0.0, 2.0]))  # noqa: E731
    with pytest.raises(eqx.EquinoxRuntimeError, match="solver stopped early"):
        eqx.filter_jit(solver)(jnp.ones(1))
