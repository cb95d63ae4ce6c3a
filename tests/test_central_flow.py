"""The central flow (chapter 8) in float64: the gradient of the sharpness, sigma^2, the 2-D toy with a
closed form, the integrator, what GD does on the toys, the chapter's run, and every bad input."""
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

from pfcourse import central_flow as cf
from pfcourse import data, flows, models, spectral


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def stack_flat(trees):
    return np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(trees))


# ---------------------------------------------------------------- the toy of the chapter

H_TOY, A_TOY, G_TOY = 0.5, 2.0, 0.05


def toy(lam, g=G_TOY):
    """E(x, y) = lambda(y) x^2 / 2 + g y: the curvature along x is lambda(y), the slope along y is g."""
    return lambda th: 0.5 * lam(th[1]) * th[0] ** 2 + g * th[1]


def lam_exp(y):
    return A_TOY * jnp.exp(-y)


Y_STAR = -np.log(2 / (H_TOY * A_TOY))        # lambda(y*) = 2/h
SIGMA2_STAR = 2 * G_TOY / (2 / H_TOY)        # -2g / lambda'(y*), with lambda' = -lambda


# ---------------------------------------------------------------- grad S (eq-grad-sharpness)

def cubic_pytree_loss():
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.normal(size=(12, 3)))
    params = {"W": jnp.asarray(rng.normal(size=(3, 4))), "b": jnp.asarray(rng.normal(size=4) / 5)}

    def E(p):
        return jnp.mean(jnp.tanh(X @ p["W"] + p["b"]) ** 2) + 0.1 * jnp.sum(p["W"] ** 3) + 0.05 * jnp.sum(p["b"] ** 4)

    return E, params


def test_sharpness_gradient_matches_central_differences():
    """eq-grad-sharpness: D^3E[u0, u0] = grad lambda_0, against 4th-order central differences of the
    dense top eigenvalue, on a pytree loss with non-zero third derivatives."""
    E, params = cubic_pytree_loss()
    x0, unravel = ravel_pytree(params)
    lam, U = spectral.hessian_eigh(E, params)
    assert lam[0] - lam[1] > 0.05                     # a simple top eigenvalue
    grad_S = flat(cf.sharpness_gradient(E, params, U[:, 0]))

    S_jit = jax.jit(lambda x: spectral.hessian_eigh(E, unravel(x))[0][0])

    def S(x):
        return float(S_jit(x))

    eps = 1e-3
    fd = np.array([
        (-S(x0 + 2 * eps * e) + 8 * S(x0 + eps * e) - 8 * S(x0 - eps * e) + S(x0 - 2 * eps * e)) / (12 * eps)
        for e in np.eye(x0.size)
    ])
    np.testing.assert_allclose(grad_S, fd, rtol=0, atol=1e-9 * max(1.0, np.abs(fd).max()))
    assert np.abs(grad_S).max() > 0.1                  # not a vacuous comparison


def test_sharpness_gradient_is_gradient_of_rayleigh_quotient_for_any_u():
    """D^3E[u, u] = grad_theta (u^T H(theta) u) for a fixed u (flat or pytree), by reverse mode."""
    E, params = cubic_pytree_loss()
    u_flat = jnp.asarray(np.random.default_rng(3).normal(size=ravel_pytree(params)[0].size))
    u_tree = ravel_pytree(params)[1](u_flat)
    rq = jax.grad(lambda p: sum(jnp.vdot(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(u_tree), jax.tree_util.tree_leaves(spectral.hvp(E, p, u_tree)))))(params)
    np.testing.assert_allclose(flat(cf.sharpness_gradient(E, params, u_flat)), flat(rq), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(flat(cf.sharpness_gradient(E, params, u_tree)), flat(rq), rtol=1e-12, atol=1e-12)


def test_sharpness_gradient_on_toy_is_lambda_prime():
    """On the toy at x = 0: u0 = e_x and grad S = (0, lambda'(y))."""
    E = toy(lam_exp)
    th = jnp.array([0.0, 0.3])
    np.testing.assert_allclose(cf.sharpness_gradient(E, th, jnp.array([1.0, 0.0])), [0.0, -lam_exp(0.3)], rtol=1e-14)


# ---------------------------------------------------------------- sigma^2 (eq-central-sigma)

@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), above=st.floats(0.0, 0.5))
def test_sigma_squared_holds_the_sharpness(seed, above):
    """eq-central-sigma: on the edge, <grad S, grad E + sigma^2/2 grad S> = 0 when gradient flow would
    sharpen (<grad S, grad E> < 0), and sigma^2 = 0 when it would not."""
    rng = np.random.default_rng(seed)
    g, dS = jnp.asarray(rng.normal(size=6)), jnp.asarray(rng.normal(size=6))
    h = 0.25
    S = 2 / h + above
    s2 = float(cf.sigma_squared(g, dS, S, h))
    if float(dS @ g) < 0:
        assert s2 > 0
        assert abs(float(dS @ (g + 0.5 * s2 * dS))) < 1e-12 * float(jnp.linalg.norm(g) * jnp.linalg.norm(dS))
    else:
        assert s2 == 0.0


def test_sigma_squared_is_zero_below_the_threshold():
    """sigma^2 = 0 for S < 2/h even where gradient flow sharpens; edge_rtol widens the edge."""
    g, dS = jnp.array([0.0, 1.0]), jnp.array([0.0, -2.0])
    h = 0.5
    assert float(cf.sigma_squared(g, dS, 3.99, h)) == 0.0
    assert float(cf.sigma_squared(g, dS, 4.0, h)) == pytest.approx(1.0)   # -2 (-2) / 4
    assert float(cf.sigma_squared(g, dS, 3.999, h, edge_rtol=1e-3)) == pytest.approx(1.0)


def test_central_flow_field_keeps_dS_dt_zero_on_the_edge():
    """eq-central-flow: at a point of the toy on the edge the field is orthogonal to grad S and equals
    -h [grad E + sigma*^2/2 grad S] = 0 there; below the edge it is the stable flow -h grad E."""
    E = toy(lam_exp)
    field = jax.jit(cf.central_flow(E, H_TOY))
    on = jnp.array([0.0, Y_STAR])
    v = field(on)
    np.testing.assert_allclose(v, [0.0, 0.0], atol=1e-14)
    below = jnp.array([0.0, Y_STAR + 0.2])
    np.testing.assert_allclose(field(below), cf.stable_flow(E, H_TOY)(below), atol=1e-15)
    # a point on the edge with a non-zero x-component too: dS/dt = <grad S, v> = 0
    E3 = lambda th: 0.5 * A_TOY * jnp.exp(-(th[1] + 0.5 * th[2] ** 2)) * th[0] ** 2 + G_TOY * th[1] + 0.03 * th[2]
    p = jnp.array([0.0, Y_STAR - 0.5 * 0.4 ** 2, 0.4])
    v3 = jax.jit(cf.central_flow(E3, H_TOY))(p)
    lam, U = spectral.hessian_eigh(E3, p)
    np.testing.assert_allclose(float(lam[0]), 2 / H_TOY, rtol=1e-12)
    dS = cf.sharpness_gradient(E3, p, U[:, 0])
    assert abs(float(dS @ v3)) < 1e-12
    assert float(jnp.linalg.norm(v3)) > 1e-3


# ---------------------------------------------------------------- the 2-D toy with a closed form

def test_toy_gradient_flow_sharpens_without_bound():
    """eq-stable-flow on the toy eq-toy (here with an exponential lambda): the field is h times gradient
    flow's; from x = 0, y(n) = y0 - h g n, so S(n) = lambda(y0 - h g n) grows past 2/h and keeps
    growing."""
    E = toy(lam_exp)
    p = jnp.array([0.3, -0.2])
    np.testing.assert_allclose(cf.stable_flow(E, H_TOY)(p), H_TOY * flows.gradient_flow(E)(p), rtol=1e-15)
    ts = np.arange(0, 201, 20.0)
    traj = flows.integrate(cf.stable_flow(E, H_TOY), jnp.array([0.0, 0.0]), ts)
    np.testing.assert_allclose(traj[:, 1], -H_TOY * G_TOY * ts, atol=1e-10)
    S = np.asarray(lam_exp(traj[:, 1]))
    assert S[-1] > 30 * (2 / H_TOY) and np.all(np.diff(S) > 0)


@pytest.mark.parametrize("method,substeps", [("rk4", 1), ("rk4", 2), ("euler", 1), ("euler", 4)])
def test_toy_central_flow_matches_closed_form(method, substeps):
    """eq-toy-central: the central flow stops where lambda(y*) = 2/h with sigma^2 = -2g/lambda'(y*):
    y(n) = max(y0 - h g n, y*), x = 0, S = 2/h and sigma^2 = sigma*^2 after arrival, sigma^2 = 0 before."""
    E = toy(lam_exp)
    steps = 80
    run = cf.run_central_flow(E, jnp.array([0.0, 0.0]), H_TOY, steps, method=method, substeps=substeps,
                              progress=False)
    n = np.arange(steps + 1)
    y_closed = np.maximum(-H_TOY * G_TOY * n, Y_STAR)
    arrival = -Y_STAR / (H_TOY * G_TOY)            # 27.7 steps
    y = np.asarray(run.params[:, 1])
    np.testing.assert_allclose(np.asarray(run.params[:, 0]), 0.0, atol=1e-15)
    before = n < arrival - 1
    np.testing.assert_allclose(y[before], y_closed[before], atol=1e-12)
    # projected Euler lands on the edge; RK4 on the stabilised field approaches it like e^{-kappa t}
    # (kappa = substeps per step, discrete factor about 0.375 per substep): within 1e-5 after ten substeps
    settle = 2 if method == "euler" else 10 / substeps
    after = n > arrival + settle
    np.testing.assert_allclose(y[after], Y_STAR, atol=1e-5)
    np.testing.assert_allclose(y[-10:], Y_STAR, atol=1e-12)
    # nowhere further from the closed form than one substep of travel, h g / substeps
    assert np.max(np.abs(y - y_closed)) <= H_TOY * G_TOY / substeps
    np.testing.assert_allclose(run.sharpness[after], 2 / H_TOY, rtol=1e-4)
    np.testing.assert_allclose(run.sigma2[-10:], SIGMA2_STAR, rtol=1e-10)
    np.testing.assert_allclose(run.sharpness[-10:], 2 / H_TOY, rtol=1e-12)
    assert np.all(run.sigma2[before] == 0.0)
    np.testing.assert_allclose(run.predicted_loss[-10:], G_TOY * Y_STAR + SIGMA2_STAR / H_TOY, rtol=1e-10)


def test_run_is_the_loop_over_the_jitted_step():
    """run_central_flow is the short loop ``(theta, state) -> (theta, state), record`` over
    central_flow_step: stepping by hand gives the same states and records. Same float64 operations
    in differently fused programs, over 6 steps of a contracting (non-chaotic) toy: rounding ~1e-15,
    asserted at 1e-10."""
    E = toy(lam_exp)
    steps = 6
    run = cf.run_central_flow(E, jnp.array([0.0, 0.0]), H_TOY, steps, progress=False)
    theta, state = jnp.array([0.0, 0.0]), cf.init_central_flow(jnp.array([0.0, 0.0]))
    for n in range(steps):
        (theta, state), rec = cf.central_flow_step(E, theta, state, H_TOY, substeps=2, num_iter=10)
        np.testing.assert_allclose(rec["S"], run.sharpness[n], rtol=1e-10)
        np.testing.assert_allclose(rec["sigma2"], run.sigma2[n], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(theta, run.params[n + 1], rtol=1e-10, atol=1e-12)


def curved_toy():
    """3-D: the edge {lambda = 2/h} is the curved surface y + z^2/2 = y*, and the flow slides along it."""
    def E(th):
        x, y, z = th
        return 0.5 * A_TOY * jnp.exp(-(y + 0.5 * z ** 2)) * x ** 2 + G_TOY * y + 0.03 * z
    return E, jnp.array([0.0, -0.5, 0.4])


def test_integrator_converges_and_holds_the_edge():
    """Projected Euler is first order (halving the substep halves the error); RK4 converges too (the
    switch onto the edge limits it to first order overall, so no better order is claimed); on the edge
    S stays within 0.1% of 2/h."""
    E, th0 = curved_toy()
    steps = 30
    ref = cf.run_central_flow(E, th0, H_TOY, steps, method="rk4", substeps=16, progress=False)
    on = np.flatnonzero(ref.sigma2 > 0)
    assert on.size > 10 and on[0] > 3                  # it arrives during the run and stays
    errs = {}
    for method, subs in [("euler", (2, 4, 8)), ("rk4", (1, 2, 4))]:
        for s in subs:
            r = cf.run_central_flow(E, th0, H_TOY, steps, method=method, substeps=s, progress=False)
            errs[method, s] = np.max(np.abs(np.asarray(r.params) - np.asarray(ref.params)))
            assert np.max(np.abs(r.sharpness[on[3:]] - 2 / H_TOY)) < 1e-3 * (2 / H_TOY)
    for s in (2, 4):
        assert 1.7 < errs["euler", s] / errs["euler", 2 * s] < 2.3
    assert errs["rk4", 1] > errs["rk4", 2] > errs["rk4", 4]


# ---------------------------------------------------------------- what GD does on the toys

def test_gd_on_the_quadratic_toy_catapults_instead_of_settling():
    """With a linear lambda and lambda(y) x^2/2 the 2-cycle at (+-sigma, y*) is not attracting: GD
    alternates long quiet phases (x collapses by factors |1 - h lambda| < 1) with spikes far beyond sigma,
    a predator-prey cycle around the central flow's point."""
    b, g, h = 1.0, 0.002, 0.5
    E = toy(lambda y: 4.0 - b * y, g)
    sigma = np.sqrt(2 * g / b)
    x, y = np.asarray(flows.gradient_descent(E, jnp.array([0.05, 0.2]), h, 4000)).T
    late = slice(200, None)
    hl = h * (4.0 - b * y[late])
    assert np.max(np.abs(x[late])) > 5 * sigma
    assert np.min(np.abs(x[late])) < 1e-6 * sigma
    assert hl.min() < 1.8 and hl.max() > 2.2
    # ... while its long-run average of h*lambda is close to the central flow's 2
    assert abs(hl.mean() - 2.0) < 0.1


def test_gd_on_the_saturating_toy_oscillates_with_the_predicted_sigma():
    """eq-central-loss: with log cosh(x) in place of x^2/2 (curvature falling off away from the valley), GD
    settles on a 2-cycle around the central flow's point: rms x = sigma, h lambda = 2 and the mean loss
    E + sigma^2 S / 2, each to leading order (here within 2%)."""
    b, g, h = 2.0, 0.01, 0.5
    lam = lambda y: 4.0 - b * y
    E = lambda th: lam(th[1]) * jnp.log(jnp.cosh(th[0])) + g * th[1]
    run = cf.run_central_flow(E, jnp.array([0.0, 0.3]), h, 100, progress=False)
    y_star, s2 = 0.0, 2 * g / b
    np.testing.assert_allclose(run.params[-1], [0.0, y_star], atol=1e-10)
    np.testing.assert_allclose(run.sigma2[-1], s2, rtol=1e-10)
    traj = np.asarray(flows.gradient_descent(E, jnp.array([0.3, 0.3]), h, 3000))
    x, y = traj[-500:].T
    assert np.sqrt(np.mean(x ** 2)) == pytest.approx(np.sqrt(s2), rel=0.02)
    assert np.mean(h * lam(y)) == pytest.approx(2.0, rel=0.02)
    mean_loss = np.mean(np.asarray(jax.vmap(E)(jnp.asarray(traj[-500:]))))
    assert abs(mean_loss - run.predicted_loss[-1]) < 0.02 * s2 / h


def test_third_and_fourth_derivatives_decide_together_whether_the_2_cycle_attracts():
    """Chapter 8, open problem 3: in 1-D, at h lambda = 2, GD's map f(x) = x - (2/E'') E'(x) has
    f(f(x)) = x - 2 (3 E'''^2 - E'' E'''') / (3 E''^2) x^3 + O(x^4) (period-doubling normal form), so just
    past h lambda = 2 GD settles on a small 2-cycle iff 3 E'''^2 > E'' E''''. With even slices (E''' = 0,
    both toys of the chapter) only the sign of E'''' is left; with E''' != 0 a positive E'''' can still
    give a 2-cycle. Checked with SymPy and by running GD at h = 2.02 on E = x^2/2 + a x^3/6 + b x^4/24."""
    import sympy as sp

    x, lam, a, b = sp.symbols("x lambda a b", real=True)
    grad = lam * x + a * x**2 / 2 + b * x**3 / 6                 # E' with E'' = lam, E''' = a, E'''' = b at 0
    f = x - 2 / lam * grad
    ff = sp.series(sp.expand(f.subs(x, f)), x, 0, 4).removeO()
    assert sp.simplify(ff.coeff(x, 1) - 1) == 0 and sp.simplify(ff.coeff(x, 2)) == 0
    assert sp.simplify(ff.coeff(x, 3) + 2 * (3 * a**2 - b * lam) / (3 * lam**2)) == 0

    def settles_on_a_small_2_cycle(a_, b_, h=2.02, steps=20000):
        E = lambda t: t[0] ** 2 / 2 + a_ * t[0] ** 3 / 6 + b_ * t[0] ** 4 / 24
        try:
            xs = np.asarray(flows.gradient_descent(E, jnp.array([1e-3]), h, steps))[:, 0]
        except flows.DivergenceError:
            return False
        tail = xs[-100:]
        return bool(np.all(np.abs(tail) < 0.5) and np.all(tail[1:] * tail[:-1] < 0)
                    and np.allclose(tail[2:], tail[:-2], atol=1e-10) and np.min(np.abs(tail)) > 1e-3)

    # (E''', E''''), with 3 E'''^2 - E'' E'''' = 1, -1, 2, -1
    assert settles_on_a_small_2_cycle(0.0, -1.0)          # log cosh-like: negative fourth derivative
    assert not settles_on_a_small_2_cycle(0.0, 1.0)
    assert settles_on_a_small_2_cycle(1.0, 1.0)           # positive fourth derivative, yet a 2-cycle
    assert not settles_on_a_small_2_cycle(1.0, 4.0)


def test_the_complex_pf_has_no_net_push_down_grad_S():
    """Chapters 6 and 8: on E = (4 - y) log cosh x + 0.02 y at h = 0.5 from (0.05, 0.1), GD's y is pushed up
    the slope by exactly h sum log cosh x_k (0.060 by step 40) and is back at the edge (h lambda(y) within
    1% of 2) by step 60, while the real part of the side-branch PF (RK4, 40 substeps) stays within 0.02 of
    gradient flow's line 0.1 - 0.01 n: the phase of z^2 averages the push out."""
    h = 0.5
    E = lambda th: (4.0 - th[1]) * jnp.log(jnp.cosh(th[0])) + 0.02 * th[1]
    n = np.arange(41)
    gd = np.asarray(flows.gradient_descent(E, jnp.array([0.05, 0.1]), h, 60))
    pf = np.asarray(flows.integrate(flows.principal_flow(E, h), jnp.array([0.05, 0.1], dtype=complex), h * n,
                                    method="rk4", substeps=40))
    line = 0.1 - 0.01 * n
    push = h * np.concatenate([[0.0], np.cumsum(np.log(np.cosh(gd[:40, 0])))])
    np.testing.assert_allclose(gd[:41, 1] - line, push, atol=1e-12)
    assert push[40] > 0.03
    assert abs(h * (4.0 - gd[60, 1]) - 2.0) < 0.02
    assert np.max(np.abs(pf[:, 1].real - line)) < 0.02
    assert h * (4.0 - pf[40, 1].real) > 2.1                    # still sharpening at gradient flow's pace


# ---------------------------------------------------------------- the chapter's run (book/08_central_flow.md)

def chapter_problem():
    """The configuration of chapter 8 (keep in sync with book/08_central_flow.md)."""
    ds = data.load_digits(n_train=1000, dtype=np.float64)
    y = ((ds.labels_train - 4.5) / 3.0)[:, None]
    E = models.full_batch_loss(models.mlp_apply("tanh"), ds.x_train, y)
    p0 = models.init_mlp(jax.random.key(0), [64, 32, 32, 1], "tanh")
    return E, p0, 0.3


def test_central_flow_holds_the_sharpness_on_the_chapters_run():
    """On the chapter's MLP (first 300 steps: sharpening, arrival near step 80, then the edge) the flow
    equals the stable flow before the edge (to 5e-3; the chapter prints the actual discretisation
    error) and, from five steps after arrival (RK4 approaches the edge exponentially), keeps S within
    0.5% of 2/h, also while a second eigenvalue touches the edge."""
    E, p0, h = chapter_problem()
    steps = 300
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # a second eigenvalue may touch the edge
        run = cf.run_central_flow(E, p0, h, steps, substeps=1, num_iter=8, progress=False)
    on = np.flatnonzero(run.sigma2 > 0)
    assert 50 < on[0] < 150 and on.size == steps + 1 - on[0]
    assert np.max(np.abs(run.sharpness[on[5:]] * h / 2 - 1)) < 5e-3     # from five steps after arrival
    gf = flows.integrate(cf.stable_flow(E, h), p0, np.arange(on[0] + 1.0), rtol=1e-9, atol=1e-11)
    assert np.max(np.linalg.norm(stack_flat(gf) - stack_flat(run.params)[: on[0] + 1], axis=1)) < 5e-3
    assert np.all(run.sharpness[: on[0] - 2] * h / 2 < 1)
    assert np.all(np.isfinite(run.loss)) and np.all(run.sigma2 >= 0)


# ---------------------------------------------------------------- helpers for comparing with GD

def test_measured_oscillation_and_time_average():
    """x_n = u_n^T (theta_gd - theta_flow), and the centred moving average over full windows."""
    rng = np.random.default_rng(0)
    a, b = jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(rng.normal(size=(5, 3)))
    U = rng.normal(size=(5, 3))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    np.testing.assert_allclose(cf.measured_oscillation(a, b, U), np.sum(U * (np.asarray(a) - np.asarray(b)), axis=1))
    centres, avg = cf.time_average(np.arange(6.0), 3)
    np.testing.assert_allclose(centres, [1, 2, 3, 4])
    np.testing.assert_allclose(avg, [1, 2, 3, 4])
    # period-2 oscillation averages out exactly over an even window
    _, avg2 = cf.time_average(1.0 + (-1.0) ** np.arange(10), 2)
    np.testing.assert_allclose(avg2, 1.0)


# ---------------------------------------------------------------- bad input

def test_start_above_the_edge_is_refused():
    E = toy(lam_exp)
    with pytest.raises(ValueError, match="above the edge"):
        cf.run_central_flow(E, jnp.array([0.0, Y_STAR - 0.01]), H_TOY, 5, progress=False)
    # within the tolerance it is accepted
    cf.run_central_flow(E, jnp.array([0.0, Y_STAR - 1e-4]), H_TOY, 2, progress=False, edge_rtol=1e-3)


def test_zero_grad_S_on_the_edge_is_refused():
    """A quadratic has a constant Hessian: grad S = 0, nothing can hold S once it is above 2/h."""
    h = 0.5
    lam = (2 / h) * (1 + 1e-4)                       # above 2/h, inside edge_rtol = 1e-3
    E = lambda th: 0.5 * lam * th[0] ** 2 + 0.5 * th[1] ** 2
    with pytest.raises(ValueError, match="grad S = 0"):
        cf.run_central_flow(E, jnp.array([0.1, 1.0]), h, 3, progress=False)
    with pytest.raises(eqx.EquinoxRuntimeError, match="grad S = 0"):
        cf.sigma_squared(jnp.array([1.0, 0.0]), jnp.zeros(2), lam, h)


def test_non_finite_states_are_refused():
    E = toy(lam_exp)
    with pytest.raises(ValueError, match="non-finite"):
        cf.run_central_flow(E, jnp.array([np.nan, 0.0]), H_TOY, 3, progress=False)
    blow_up = lambda th: -jnp.sum(th ** 3)             # dtheta/dt = 3 h theta^2: infinite in finite time
    with pytest.raises(flows.DivergenceError, match="not finite after step"):
        cf.run_central_flow(blow_up, jnp.array([1.0]), 1.0, 5, substeps=1, progress=False)


@pytest.mark.parametrize("kw,match", [
    (dict(steps=0), "steps"), (dict(steps=-3), "steps"), (dict(steps=2.5), "steps"), (dict(steps=True), "steps"),
    (dict(substeps=0), "substeps"), (dict(num_iter=0), "num_iter"), (dict(method="dopri8"), "method"),
    (dict(edge_rtol=1.5), "edge_rtol"), (dict(h=-0.1), "learning rate"), (dict(h=0.0), "learning rate"),
])
def test_bad_arguments_are_refused(kw, match):
    args = dict(E=toy(lam_exp), theta0=jnp.array([0.0, 0.0]), h=H_TOY, steps=3, progress=False)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        cf.run_central_flow(**args)


def test_runs_that_do_not_fit_are_refused():
    gd = jnp.zeros((11, 3))
    with pytest.raises(ValueError, match="do not fit"):
        cf.measured_oscillation(gd, jnp.zeros((8, 3)), np.ones((8, 3)))
    with pytest.raises(ValueError, match="does not fit"):
        cf.time_average(np.arange(5.0), 6)
    with pytest.raises(ValueError, match="window"):
        cf.time_average(np.arange(5.0), 0)
    with pytest.raises(ValueError, match="flat vector"):
        cf.sharpness_gradient(toy(lam_exp), jnp.zeros(2), jnp.ones(3))
