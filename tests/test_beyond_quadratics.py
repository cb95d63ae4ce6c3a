"""Chapter 5 (ch-beyond): non-quadratic landscapes, the PF's error, its correction, and branches.

Every equation the chapter displays is checked here; each test's docstring names its label.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

from pfcourse import flows, landscapes, symbolic

QUARTIC_1D = lambda t: t[0] ** 2 / 2 + t[0] ** 4 / 4
QUARTIC_2D = lambda t: t[0] ** 2 / 2 + t[0] ** 4 / 4 + 0.2 * t[1] ** 2 + 0.15 * t[0] ** 2 * t[1] ** 2


# ---------------------------------------------------------------- the local-minimum landscape

def test_local_minimum_critical_points_and_curvatures():
    """eq-beyond-local-minimum: exactly three critical points, (1, 0) local with E = -1/4 + 2c/3 and
    Hessian diag(2(1 - c), 4 kappa + eps), (-1, 0) global with E = -1/4 - 2c/3 and diag(2(1 + c), eps),
    (c, 0) a saddle; the landscape's analytic Hessian and params agree with autodiff."""
    X, Y = sp.symbols("x y")
    c, kappa, eps = sp.Rational(1, 5), sp.Rational(3, 2), sp.Rational(1, 4)
    E = X**4 / 4 - c * X**3 / 3 - X**2 / 2 + c * X + Y**2 * (kappa * (1 + X) ** 2 + eps) / 2
    crit = sp.solve([sp.diff(E, X), sp.diff(E, Y)], [X, Y], dict=True)
    assert sorted((p[X], p[Y]) for p in crit) == [(-1, 0), (c, 0), (1, 0)]
    L = landscapes.local_minimum(float(c), float(kappa), float(eps))
    P = L.params
    for name, point in (("global", (-1, 0)), ("local", (1, 0)), ("saddle", (c, 0))):
        sub = {X: point[0], Y: point[1]}
        H = sp.hessian(E, (X, Y)).subs(sub)
        np.testing.assert_allclose(sorted(np.array(H, dtype=float).diagonal()),
                                   sorted(P[f"{name}_curvatures"]), rtol=1e-14)
        assert H[0, 1] == 0
        if name != "saddle":
            np.testing.assert_allclose(float(E.subs(sub)), P[f"{name}_value"], rtol=1e-14)
            np.testing.assert_allclose(float(L.loss(jnp.asarray(P[f"{name}_minimum"]))), P[f"{name}_value"], rtol=1e-14)
    for point in (np.array([0.3, -0.7]), np.array([-1.2, 0.4]), np.array([1.0, 0.0])):
        np.testing.assert_allclose(L.hessian(jnp.asarray(point)), jax.hessian(L.loss)(jnp.asarray(point)), atol=1e-12)
    for m in L.minima:
        np.testing.assert_allclose(jax.grad(L.loss)(jnp.asarray(m)), 0.0, atol=1e-15)
    for bad in (dict(c=1.2), dict(kappa=-1.0), dict(eps=0.0)):
        with pytest.raises(ValueError, match="local_minimum"):
            landscapes.local_minimum(**bad)


def test_gd_escapes_the_sharp_minimum_only_at_large_h():
    """Chapter 5, 'A minimum that GD escapes': from (1.05, 0.01), GD at h = 0.4 returns to (1, 0),
    at h = 0.7 (h lambda_y = 2.975 > 2 there, 1.68 < 2 at (-1, 0)) it lands in the global minimum,
    and at h = 0.55 it ends on a period-2 orbit next to the sharp minimum; gradient flow stays."""
    L = landscapes.local_minimum()
    start = jnp.array([1.05, 0.01])
    run = lambda h: np.asarray(flows.gradient_descent(L.loss, start, h, 300))
    np.testing.assert_allclose(run(0.4)[-1], [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(run(0.7)[-1], [-1.0, 0.0], atol=1e-6)
    orbit = run(0.55)
    np.testing.assert_allclose(orbit[-1], orbit[-3], atol=1e-4)   # still settling, slowly
    assert orbit[-1, 1] * orbit[-2, 1] < 0 and abs(orbit[-1, 1]) > 0.1 and orbit[-1, 0] > 0.5
    lc = L.params["local_curvatures"]
    assert 0.7 * lc.max() > 2 and 0.4 * lc.max() < 2 and 0.7 * L.params["global_curvatures"].max() < 2
    ngf = np.asarray(flows.integrate(flows.gradient_flow(L.loss), start, np.linspace(0, 30, 4), method="rk4"))
    np.testing.assert_allclose(ngf[-1], [1.0, 0.0], atol=1e-6)


def test_above_the_landing_window_gd_diverges_except_at_h_085():
    """Chapter 5, exercise ex-beyond-window: from (1.05, 0.01), GD diverges within 400 steps at h = 0.8,
    0.825 and 0.875, but at h = 0.85 it ends on a period-2 orbit around the flat minimum (-1, 0), x
    alternating about -1.071 and -0.913: there h * 2.4 > 2, so (-1, 0) is itself unstable along x.
    The outcomes do not change when h moves by 1e-6."""
    L = landscapes.local_minimum()
    start = jnp.array([1.05, 0.01])
    for h in (0.8, 0.825, 0.875, 0.8 + 1e-6, 0.875 - 1e-6):
        with pytest.raises(flows.DivergenceError):
            flows.gradient_descent(L.loss, start, jnp.asarray(h), 400)
    for h in (0.85, 0.85 - 1e-6, 0.85 + 1e-6):
        gd = np.asarray(flows.gradient_descent(L.loss, start, jnp.asarray(h), 400))
        np.testing.assert_allclose(gd[-2:, 0], gd[-4:-2, 0], atol=1e-8)        # period 2
        assert abs(gd[-1, 0] - gd[-2, 0]) > 0.1 and abs(np.mean(gd[-2:, 0]) + 1) < 0.01
        assert np.all(np.abs(gd[-2:, 1]) < 1e-8)
    assert 0.85 * L.params["global_curvatures"].max() > 2 > 0.775 * L.params["global_curvatures"].max()


def test_rosenbrock_curvatures_at_the_minimum():
    """Chapter 5: at (1, 1) the banana's Hessian has eigenvalues 501 -+ sqrt(250601) = 0.3994 and 1001.6."""
    H = np.asarray(jax.hessian(landscapes.rosenbrock().loss)(jnp.array([1.0, 1.0])))
    np.testing.assert_allclose(np.linalg.eigvalsh(H), [501 - np.sqrt(250601), 501 + np.sqrt(250601)], rtol=1e-12)
    np.testing.assert_allclose(np.linalg.eigvalsh(H), [0.3994, 1001.6], rtol=1e-4)


def test_pf_tracks_the_onset_of_the_escape_but_not_the_landing():
    """Chapter 5: at h = 0.7 the real part of the PF follows GD's first four steps (sign flips of y,
    doubling) within 5 %, then departs by more than 0.2 by step 6."""
    L = landscapes.local_minimum()
    h, start = 0.7, jnp.array([1.05, 0.01])
    gd = np.asarray(flows.gradient_descent(L.loss, start, h, 6))
    pf = np.asarray(flows.integrate(flows.principal_flow(L.loss, h), start.astype(complex), h * np.arange(7),
                                    method="rk4", substeps=80))
    np.testing.assert_allclose(pf[1:5, 1].real, gd[1:5, 1], rtol=0.05)
    assert np.all(np.sign(gd[1:6, 1]) == (-1.0) ** np.arange(1, 6))
    assert np.linalg.norm(pf[6].real - gd[6]) > 0.2


# ---------------------------------------------------------------- the correction (eq-beyond-correction)

def test_correction_sign_from_bea_symbolically():
    """eq-beyond-correction: h^2 times the non-principal part of f_3 = 1/3 f'f'f + 1/12 f''(f, f), with
    f = -E', is -(h^2/12) E''' E'^2; pf_corrected_flow - principal_flow equals it (1-D, two points)."""
    y, h = symbolic.y, symbolic.h
    E = y**2 / 2 + y**4 / 4 + y**3 / 3
    f3 = symbolic.modified_field_terms(3)[2]
    non_principal = sp.expand(f3 - symbolic.principal_part(f3))
    assert sp.simplify(symbolic.prime_notation(non_principal)
                       - sp.Symbol("f") ** 2 * sp.Symbol("f''") / 12) == 0
    dropped = h**2 * symbolic.substitute_field(non_principal, -sp.diff(E, y))
    assert sp.simplify(dropped + h**2 / 12 * sp.diff(E, y, 3) * sp.diff(E, y) ** 2) == 0
    E_jax = lambda t: t[0] ** 2 / 2 + t[0] ** 4 / 4 + t[0] ** 3 / 3
    for yy, hh in ((0.7, 0.3), (-1.1, 0.05)):
        diff = flows.pf_corrected_flow(E_jax, hh)(jnp.array([yy]))[0] - flows.principal_flow(E_jax, hh)(jnp.array([yy]))[0]
        np.testing.assert_allclose(complex(diff), float(dropped.subs({y: yy, h: hh})), rtol=1e-12)


def test_correction_in_two_dimensions_is_gradient_of_gHg():
    """eq-beyond-correction: the correction is -(h^2/12) grad_theta (g^T H(theta) g) with g held fixed
    (the authors' form), here by reverse mode against pfcourse's forward-over-forward contraction;
    it works at complex states too (holomorphic)."""
    L = landscapes.rosenbrock()
    grad = jax.grad(L.loss)
    theta = jnp.array([-0.4, 0.7])
    g = grad(theta)
    ghg = jax.grad(lambda s: g @ jax.jvp(grad, (s,), (g,))[1])(theta)
    h = 1e-3
    diff = flows.pf_corrected_flow(L.loss, h)(theta) - flows.principal_flow(L.loss, h)(theta)
    np.testing.assert_allclose(diff, -(h**2 / 12) * ghg, rtol=1e-10)
    z = theta + 0.01j
    gz = jax.grad(L.loss, holomorphic=True)(z)
    hol = jax.grad(lambda s: gz @ jax.jvp(jax.grad(L.loss, holomorphic=True), (s,), (gz,))[1], holomorphic=True)(z)
    diffz = flows.pf_corrected_flow(L.loss, h)(z) - flows.principal_flow(L.loss, h)(z)
    np.testing.assert_allclose(diffz, -(h**2 / 12) * hol, rtol=1e-10)


def test_third_order_flow_is_the_truncated_modified_equation():
    """eq-beyond-error-orders ('third order'): flows.third_order_flow = f_1 + h f_2 + h^2 f_3 from
    symbolic.modified_field(3) with f = -E' (1-D), and = -g - h/2 Hg - h^2/3 H^2 g - h^2/12 D^3E[g, g] (2-D)."""
    y, h = symbolic.y, symbolic.h
    E = y**4 / 4 + y**2 / 2
    field = symbolic.substitute_field(symbolic.modified_field(3), -sp.diff(E, y))
    E_jax = lambda t: t[0] ** 4 / 4 + t[0] ** 2 / 2
    for yy, hh in ((0.9, 0.2), (-0.4, 0.7)):
        np.testing.assert_allclose(float(flows.third_order_flow(E_jax, hh)(jnp.array([yy]))[0]),
                                   float(field.subs({y: yy, h: hh})), rtol=1e-13)
    L = landscapes.double_well(0.7)
    theta, hh = jnp.array([0.3, -0.5]), 0.1
    g = jax.grad(L.loss)(theta)
    H = jax.hessian(L.loss)(theta)
    d3 = jnp.einsum("ijk,j,k->i", jax.jacfwd(jax.hessian(L.loss))(theta), g, g)
    expected = -g - hh / 2 * H @ g - hh**2 / 3 * H @ H @ g - hh**2 / 12 * d3
    np.testing.assert_allclose(flows.third_order_flow(L.loss, hh)(theta), expected, rtol=1e-12)


def test_error_slopes_on_the_banana():
    """eq-beyond-error-orders: on Rosenbrock's banana from (-1, 1.5), over 10 steps, the error against GD
    falls like h^2 (NGF), h^3 (IGR, PF) and h^4 (third order, PF + correction); fitted log-log slopes
    at h = 5e-6, 1e-5, 2e-5 within 0.2. The PF's error is at least 3x below IGR's, and the PF + correction
    below the third-order flow's."""
    L = landscapes.rosenbrock()
    start = jnp.asarray(L.start)
    hs = np.array([5e-6, 1e-5, 2e-5])
    models = {
        "NGF": (2, lambda h: flows.gradient_flow(L.loss)),
        "IGR": (3, lambda h: flows.igr_flow(L.loss, h)),
        "third order": (4, lambda h: flows.third_order_flow(L.loss, h)),
        "PF": (3, lambda h: flows.principal_flow(L.loss, h)),
        "PF + correction": (4, lambda h: flows.pf_corrected_flow(L.loss, h)),
    }
    errors = {m: [] for m in models}
    for h in hs:
        gd = np.asarray(flows.gradient_descent(L.loss, start, h, 10))
        for m, (_, make) in models.items():
            y0 = start.astype(complex) if m.startswith("PF") else start
            sol = flows.integrate(make(h), y0, h * np.arange(11), method="rk4", substeps=100)
            errors[m].append(np.max(np.linalg.norm(np.asarray(sol) - gd, axis=1)))
    for m, (order, _) in models.items():
        slope = np.polyfit(np.log(hs), np.log(errors[m]), 1)[0]
        assert abs(slope - order) < 0.2, (m, slope)
    assert np.all(np.array(errors["PF"]) * 3 < np.array(errors["IGR"]))
    assert np.all(np.array(errors["PF + correction"]) < np.array(errors["third order"]))


# ---------------------------------------------------------------- branches (eq-beyond-side-branch)

def test_side_branch_definition():
    """eq-beyond-side-branch: log_side w = log w (Re w >= 0), log(-w) + i pi (Re w < 0): arg in
    (-pi/2, 3pi/2]; the principal value on the real axis; continuous across the real axis, with a jump
    of 2 pi i across the negative imaginary axis only."""
    side = lambda w: np.asarray(flows.log_one_minus(jnp.asarray(1 - w, dtype=complex), "side"))
    rng = np.random.default_rng(0)
    w = rng.normal(size=200) + 1j * rng.normal(size=200)
    L = side(w)
    np.testing.assert_allclose(np.exp(L), w, rtol=1e-12)
    assert np.all(L.imag > -np.pi / 2 - 1e-12) and np.all(L.imag <= 3 * np.pi / 2 + 1e-12)
    real = np.array([-2.0, -0.5, 0.3, 1.7]) + 0j
    np.testing.assert_allclose(side(real), np.log(np.abs(real)) + 1j * np.pi * (real.real < 0), rtol=1e-14)
    eps = 1e-9
    for w0 in (-0.7, 0.4):   # across the real axis: continuous
        assert abs(side(np.array([w0 + 1j * eps]))[0] - side(np.array([w0 - 1j * eps]))[0]) < 1e-8
    jump = side(np.array([eps - 0.5j]))[0] - side(np.array([-eps - 0.5j]))[0]
    np.testing.assert_allclose(jump, -2j * np.pi, atol=1e-8)
    principal = np.asarray(flows.log_one_minus(jnp.asarray(1 - np.array([-0.7 + 1j * eps, -0.7 - 1j * eps])), "principal"))
    np.testing.assert_allclose(principal[0] - principal[1], 2j * np.pi, atol=1e-8)


def _branch_runs(E, x0, h, steps=4):
    gd = np.asarray(flows.gradient_descent(E, jnp.array(x0), h, steps))
    runs = {}
    for policy in flows.BRANCHES:
        runs[policy] = np.asarray(flows.integrate(flows.principal_flow(E, h, branch=policy),
                                                  jnp.array(x0, dtype=complex), h * np.arange(steps + 1),
                                                  method="rk4", substeps=400))
    return gd, runs


def test_branch_policies_in_one_dimension():
    """eq-beyond-side-branch, 1-D quartic x^2/2 + x^4/4, h = 1.3, x0 = 0.3: the 'side' PF's real part
    flips sign with GD at every step and stays within 30 % of GD; the principal branch never flips
    (it stays on the positive real axis)."""
    gd, runs = _branch_runs(QUARTIC_1D, [0.3], 1.3)
    side, principal = runs["side"][:, 0], runs["principal"][:, 0]
    signs = (-1.0) ** np.arange(5)
    assert np.all(np.sign(gd[:, 0]) == signs) and np.all(np.sign(side.real) == signs)
    assert np.all(np.abs(side.real[1:] - gd[1:, 0]) <= 0.3 * np.abs(gd[1:, 0]))
    assert np.all(principal.real > 0) and np.max(np.abs(principal.imag)) < 1e-10
    np.testing.assert_allclose(runs["positive_cut"][:, 0], side, atol=1e-12)  # one eigenvalue, left half-plane


def test_branch_policies_in_two_dimensions():
    """eq-beyond-side-branch, 2-D quartic, h = 1.3 from (0.3, 0.8): 'side' flips x with GD at every step,
    |Re x - x_GD| <= 0.4 |x_GD| and Re y within 10 % of GD; 'principal' never flips x; 'positive_cut'
    blows up (|theta| > 50 after four steps) while GD converges. At h = 2.1 from (0.05, 0.8) 'side'
    tracks GD's divergence along x within 5 %."""
    gd, runs = _branch_runs(QUARTIC_2D, [0.3, 0.8], 1.3)
    side = runs["side"]
    signs = (-1.0) ** np.arange(5)
    assert np.all(np.sign(gd[:, 0]) == signs) and np.all(np.sign(side[:, 0].real) == signs)
    assert np.all(np.abs(side[1:, 0].real - gd[1:, 0]) <= 0.4 * np.abs(gd[1:, 0]))
    np.testing.assert_allclose(side[:, 1].real, gd[:, 1], rtol=0.1)
    assert np.all(runs["principal"][:, 0].real > 0)
    assert np.abs(runs["positive_cut"][-1]).max() > 50 and np.abs(gd[-1]).max() < 0.1
    gd, runs = _branch_runs(QUARTIC_2D, [0.05, 0.8], 2.1)
    side = runs["side"][:, 0]
    assert np.all(np.sign(side.real) == np.sign(gd[:, 0]))
    np.testing.assert_allclose(side[1:].real, gd[1:, 0], rtol=0.05)
    assert abs(gd[4, 0]) > abs(gd[1, 0])  # diverging along x


def test_side_policy_eigenvalue_paths():
    """Chapter 5, w-plane figure: along the 'side' solution, w = 1 - h lambda stays in the left
    half-plane in 1-D (never near its cut), but in 2-D at h = 1.3 the oscillating eigenvalue reaches the
    cut (|Re w| < 0.01 with Im w < -0.1) between t = 0.4 and 0.7 and slides along it."""
    def path(E, x0, h):
        ts = h * np.arange(101) / 25
        states = flows.integrate(flows.principal_flow(E, h), jnp.array(x0, dtype=complex), ts,
                                 method="rk4", substeps=16)
        hessians = np.asarray(jax.vmap(jax.hessian(E, holomorphic=True))(states))
        return ts, 1 - h * np.linalg.eigvals(hessians)

    _, w1 = path(QUARTIC_1D, [0.3], 1.3)
    assert w1.real.max() < -0.05
    ts, w2 = path(QUARTIC_2D, [0.3, 0.8], 1.3)
    on_cut = np.any((np.abs(w2.real) < 0.01) & (w2.imag < -0.1), axis=1)
    assert on_cut.sum() >= 3 and 0.4 < ts[on_cut].min() and ts[on_cut].max() < 0.7


# ---------------------------------------------------------------- the authors' notebooks

@pytest.mark.parametrize("h,n", [(0.9, 200), (1.05, 5)])
def test_authors_notebooks_reproduced(h, n):
    """Chapter 5, 'The authors' notebooks': E = theta^T A theta, A = diag(1, 0.01), start (-0.35, -0.2);
    the integrated complex PF (Dopri8) matches GD to 1e-8 with fewer than 200 field evaluations per
    GD step (explicit Euler at 1e-5 needs h/1e-5 = 90,000+), and the exact solution (eq-pf-quadratic) to 1e-13."""
    A = landscapes.quadratic([2.0, 0.02])
    theta0 = jnp.array([-0.35, -0.2])
    np.testing.assert_allclose(A.loss(theta0), theta0 @ jnp.diag(jnp.array([1.0, 0.01])) @ theta0, rtol=1e-15)
    ts = h * np.arange(n + 1)
    gd = np.asarray(flows.gradient_descent(A.loss, theta0, h, n))
    pf, stats = flows.integrate(flows.principal_flow(A.loss, h), theta0, ts, return_stats=True)
    assert np.abs(np.asarray(pf) - gd).max() < 1e-8
    assert stats["field_evaluations"] / n < 200 < h / 1e-5
    exact = flows.quadratic_pf_solution(A.params["A"], theta0, h, ts)
    assert np.abs(np.asarray(exact) - gd).max() < 1e-13
    assert (np.abs(gd[-1, 0]) > np.abs(gd[0, 0])) == (h > 1)   # divergence at h lambda = 2.1
