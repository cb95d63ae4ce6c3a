"""The chapters' calls into pfcourse, at toy sizes: run by tests/test_lowest_versions.py in the
environment of pyproject.toml's lowest declared versions (not collected by pytest: no ``test_`` prefix).

Each block makes the calls one chapter makes (book/NN_*.md), with the keyword arguments it uses,
and checks only that they run and give finite results of the right shape: the numbers themselves
are checked by the unit tests. Prints one line per chapter; any exception fails the leg.
"""
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import time  # noqa: E402
import warnings  # noqa: E402

START = time.perf_counter()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)   # the chapters' first cell

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import sympy as sp  # noqa: E402

from pfcourse import central_flow, dal, data, eos, flows, landscapes, models, plots, spectral, stability, symbolic  # noqa: E402
from pfcourse.widgets import eos_player, explorer, landscape_explorer  # noqa: E402


def done(what):
    print(f"{time.perf_counter() - START:6.1f} s  {what}", flush=True)


def finite(x):
    assert np.all(np.isfinite(np.asarray(x))), x
    return x


# ---- chapter 1: gradient descent, gradient flow, the landscapes, the figures
valley = landscapes.quadratic([1.0, 0.1], angle=np.pi / 6)
theta0 = jnp.array([1.6, 0.4])
gd = finite(flows.gradient_descent(valley.loss, theta0, 1.8, 6))
ngf = finite(flows.integrate(flows.gradient_flow(valley.loss), theta0, np.linspace(0, 4, 5), rtol=1e-10, atol=1e-12))
assert gd.shape == (7, 2) and ngf.shape == (5, 2)
for L in (landscapes.rosenbrock(), landscapes.double_well(0.5), landscapes.saddle(0.5, 1.0),
          landscapes.local_minimum()):
    finite(L.loss(jnp.array([0.3, 0.2])))
fig, axes = plots.figure(2)
plots.contour(axes[0], valley.loss, ((-2, 2), (-2, 2)), resolution=20)
plots.trajectory(axes[0], ngf, "NGF")
plots.trajectory(axes[0], gd, "GD")
plots.time_series(axes[1], np.arange(7.0), gd[:, 0], "GD")
plots.legend_below(fig, axes, ncol=2)
plt.close("all")
done("chapter 1: gradient descent, flows.integrate (diffrax), landscapes, plots")

# ---- chapter 2: backward error analysis (sympy) and the IGR flow
terms = symbolic.modified_field_terms(3)
symbolic.prime_notation(symbolic.modified_field(3))
symbolic.principal_part(terms[2])
y = sp.Symbol("y")
symbolic.substitute_field(symbolic.modified_field(3), -sp.sin(y))
symbolic.principal_coefficients(4)
symbolic.principal_terms_gradient(3)
symbolic.principal_series_sum()
assert symbolic.verify_principal_series(4)
t1, t2 = sp.symbols("theta1 theta2", real=True)
E_poly = (t1**2 - 1) ** 2 / 4 + 2 * t2**2 + t1 * t2**2
symbolic.igr_regularizer(E_poly, [t1, t2])
assert symbolic.verify_igr_identity(E_poly, [t1, t2])
well = landscapes.double_well(kappa=1.0)
ts = np.linspace(0, 0.5, 3)
finite(flows.integrate(flows.igr_flow(well.loss, 0.1), jnp.array([0.5, 0.3]), ts, method="rk4", substeps=10))
finite(jax.jacfwd(flows.igr_flow(well.loss, 0.1))(jnp.array([0.5, 0.3])))
done("chapter 2: symbolic (sympy), igr_flow, rk4")

# ---- chapter 3: the principal flow (complex states)
h = 1.8
pf_closed = flows.quadratic_pf_solution(valley.params["A"], np.asarray(theta0), h, np.linspace(0, 2 * h, 5))
pf_num, stats = flows.integrate(flows.principal_flow(valley.loss, h), theta0.astype(complex), np.linspace(0, 2 * h, 5),
                                return_stats=True)
np.testing.assert_allclose(np.asarray(pf_num), np.asarray(pf_closed), atol=1e-6)
for branch in ("side", "principal"):
    finite(jnp.abs(flows.log_one_minus(jnp.array([0.5, 1.5]), branch)))
finite(jnp.abs(flows.pf_coefficient(jnp.array([0.5, 1.5]))))
done("chapter 3: principal_flow, quadratic_pf_solution, log_one_minus, pf_coefficient")

# ---- chapters 4 and 5: stability, beyond quadratics, the explorer widget (ipywidgets)
stability.growth_rates(0.5, np.array([1.0, 3.0, 5.0]))
stability.stability_regime(1.5)
p = jnp.array([0.9, 0.1])
for make in (flows.third_order_flow, flows.pf_corrected_flow, flows.principal_flow):
    finite(jnp.abs(make(well.loss, 0.3)(p.astype(complex) if make is not flows.third_order_flow else p)))
finite(jnp.abs(jax.jacfwd(flows.principal_flow(well.loss, 0.3))(jnp.array([1.0, 0.0]))))
plots.regime_map(plots.figure(1)[1][0], markers=[0.5, 2.5])
anim = plots.descent_animation(valley.loss, ((-2, 2), (-2, 2)), h, gd, {"PF": pf_closed}, np.linspace(0, 2 * h, 5),
                               series=lambda q: q[:, 0], frames=3, dpi=30)
assert "<script" in plots.animation_html(anim).data
ui = landscape_explorer()
ui.explorer.h.value = 1.2
ui.explorer.landscape.value = "double well"
assert ui.explorer.state["name"] == "double well" and len(ui.explorer.figure.axes) == 3
explorer.compute_state("saddle", steps=4)
plt.close("all")
done("chapters 4-5: growth_rates, third_order/pf_corrected flows, plots animation, landscape_explorer")

# ---- chapter 6: the edge of stability (data, models, spectral, eos, the player widget)
# the book's networks start from jax.random draws; jax < 0.5 draws other numbers from the same key
assert getattr(jax.config, "jax_threefry_partitionable", True), "jax < 0.5: the random draws are not those of the book"
ds = data.load_digits(n_train=60, n_test=20)
params0 = models.init_mlp(jax.random.key(0), [64, 8, 10], "tanh", dtype=jnp.float32)
apply = models.mlp_apply("tanh")
E = models.full_batch_loss(apply, ds.x_train, ds.y_train, "square")
assert models.num_params(params0) == 64 * 8 + 8 + 8 * 10 + 10
finite(jax.jit(lambda q: spectral.sharpness(E, q, "lanczos", num_iter=10))(params0))
finite(spectral.sharpness(E, params0, "dense"))
lam, U = spectral.top_hessian_eigenpairs(E, params0, k=2, num_iter=10)
finite(lam)
history = eos.gd_edge_of_stability(apply, params0, ds.x_train, ds.y_train, [0.2, 0.5], steps=12, eig_every=4, k=2,
                                   num_iter=8, progress=False)
eos.fit_check(history, tolerance=0.15)
history.summary()
finite(stability.growth_rates(0.5, history.run(1)["sharpness"])["PF"])
fig, axes = plots.figure(2)
plots.eos_sharpness(axes[0], history)
plots.eos_loss(axes[1], history)
plots.rate_colors([0.2, 0.5])
assert "<script" in plots.eos_animation(history, run=1, frames=3, dpi=30).to_jshtml()
box = eos_player(history, "a tiny run", run=1)          # the player (ipywidgets 7 in Colab)
box.children[3].children[1].value = 0                   # drag the frame slider
box = eos_player(setting=dict(n_train=40, hidden=[8], steps=4, eig_every=2, k=1, num_iter=4), train=False)
box.children[1].children[1].click()                     # the Train button
assert box.state["history"].loss.shape == (1, 5)
plt.close("all")
done("chapter 6: load_digits (scikit-learn), init_mlp, spectral, gd_edge_of_stability, eos_player")

# ---- chapter 7: DAL (optax)
quad = landscapes.quadratic([4.0, 1.0])
th = jnp.array([1.0, 1.0])
finite(dal.dal_learning_rate_at(quad.loss, th, p=1.0))
g = jax.grad(E)(params0)
finite(dal.drift_ratio(g, spectral.hvp(E, params0, g)))
finite(dal.drift_ratio(g, dal.finite_difference_hvp(E, params0, g)))
for opt in (dal.dal(1.0, learning_rate=0.1, h_max=5.0), dal.dal(1.0, 0.1, hvp="finite_difference"),
            dal.dal(p=1.0, learning_rate=0.1, window=(0, 3)),
            optax.chain(dal.scale_by_dal(p=1.0, learning_rate=0.1), optax.trace(decay=0.9), optax.scale(-1.0))):
    state = opt.init(th)
    update = jax.jit(lambda grad, state, th, opt=opt: opt.update(grad, state, th, loss_fn=quad.loss))
    for _ in range(3):
        updates, state = update(jax.grad(quad.loss)(th), state, th)
        th = optax.apply_updates(th, updates)
    finite(th)
ritz, _ = spectral.lanczos(lambda v: 2.0 * v, 5, k=2, num_iter=5, dtype=jnp.float64)
np.testing.assert_allclose(ritz, [2.0, 2.0], rtol=1e-8)
finite(models.accuracy(apply(params0, ds.x_test), ds.labels_test))
fig, ax = plots.figure(1)
plots.seed_band(ax[0], np.arange(3), np.ones((2, 3)), label="band")
plt.close("all")
done("chapter 7: dal (optax), scale_by_dal chain, finite_difference_hvp, lanczos")

# ---- chapter 8: the central flow (equinox error checks)
h_toy, g_toy = 0.5, 0.002
E_toy = lambda t: 0.5 * (4.0 - t[1]) * t[0] ** 2 + g_toy * t[1]   # noqa: E731
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    toy = central_flow.run_central_flow(E_toy, jnp.array([0.0, 0.3]), h_toy, 20, progress=False)
finite(toy.sharpness)
finite(flows.integrate(central_flow.stable_flow(E_toy, h_toy), jnp.array([0.0, 0.3]), np.arange(4.0)))
lam_s, U_s = spectral.hessian_eigh(E_toy, jnp.array([0.1, 0.3]))
finite(central_flow.sharpness_gradient(E_toy, jnp.array([0.1, 0.3]), U_s[:, 0]))
gd_toy = flows.gradient_descent(E_toy, jnp.array([0.05, 0.3]), h_toy, 20)
central_flow.measured_oscillation(gd_toy, toy.params, toy.directions)
central_flow.time_average(np.arange(10.0), 3)
plots.edge_line(plots.figure(1)[1][0], h_toy, scale=h_toy / 2, label="edge")
plt.close("all")
field = flows.principal_flow(lambda t: 0.5 * (2 * t[0] ** 2 + t[1] ** 2), 0.5)   # h*lambda = 1: refused
for f in (field, jax.jit(field)):      # equinox.error_if, eagerly and compiled
    try:
        f(jnp.array([1.0, 1.0]))
    except Exception as err:           # noqa: BLE001
        assert "singular" in str(err), err
    else:
        raise AssertionError("principal_flow at h*lambda = 1 did not raise")
done("chapter 8: run_central_flow, stable_flow, sharpness_gradient, measured_oscillation")
done("all chapters' calls ran")
