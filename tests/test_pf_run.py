"""Tests for pfcourse.pf_run: the flows followed along a whole run of GD (chapter 5)."""
import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pfcourse import pf_run  # noqa: E402

A = jnp.diag(jnp.array([1.0, 3.0, 5.0]))
H = 0.3                                    # h * lambda = 0.3, 0.9, 1.5: one direction oscillates


def quadratic(theta):
    return 0.5 * theta["x"] @ A @ theta["x"]


@pytest.fixture(scope="module")
def on_a_quadratic():
    return pf_run.follow_run(quadratic, {"x": jnp.array([1.0, -1.0, 0.5])}, H, 6, substeps=16, num_iter=3,
                             sharp_every=3)


def test_on_a_quadratic_the_pf_is_gd_at_every_step(on_a_quadratic):
    """The PF is exact on a quadratic (chapter 3): at t = nh it is GD's iterate, the oscillating
    direction included (its complex factor (1 - h lambda)^(t/h) is real at whole steps). What is
    left is RK4's error: the fastest component has rate z = log(1 - 1.5) + i pi (|z| = 3.2 per step),
    so 16 RK4 steps leave about 16 |z/16|^5 / 120 = 4e-5 of it per step; 5e-5 bounds that (measured
    8e-6 relative to the path)."""
    r = on_a_quadratic
    assert np.nanmax(r.distance["PF"]) < 5e-5 and np.nanmax(r.pf_imag) < 5e-5
    assert r.distance["NGF"][1] > 0.1                    # gradient flow cannot oscillate
    np.testing.assert_allclose(r.loss["PF"], r.loss["GD"], rtol=1e-4)
    assert r.rk4_error["PF"] < 5e-5 and r.krylov_gap < 1e-10


def test_shapes_and_the_sharpness_schedule(on_a_quadratic):
    r = on_a_quadratic
    assert set(r.loss) == {"GD", "NGF", "IGR", "PF"} and set(r.distance) == {"NGF", "IGR", "PF"}
    assert all(np.shape(v) == (7,) for v in [*r.loss.values(), *r.distance.values(), r.pf_imag])
    assert np.isnan(r.distance["PF"][0]) and list(r.sharp_steps) == [0, 3, 6]
    np.testing.assert_allclose(r.h_sharpness["GD"], H * 5.0, rtol=1e-10)   # the Hessian is A everywhere
    assert r.singular_distance.shape == r.nearest_ritz.shape == (7,)
    assert set(r.states) == {"NGF", "IGR", "PF"} and all(v.shape == (7, 3) for v in r.states.values())
    assert np.iscomplexobj(r.states["PF"]) and not np.iscomplexobj(r.states["NGF"])
    assert all(np.shape(v) == (7,) for v in r.rk4_steps.values())
    assert r.rk4_error["PF"] == np.nanmax(r.rk4_steps["PF"])
    np.testing.assert_allclose(r.states["PF"][0], [1.0, -1.0, 0.5])       # the start, complexified


def test_the_ritz_value_nearest_the_branch_point_is_read_at_every_step(on_a_quadratic):
    """On the quadratic the Hessian is A at every state, real or complex, so the Ritz values of 3
    Lanczos steps are h lambda = 0.3, 0.9, 1.5 exactly (to rounding, 1e-12): the one nearest 1 is 0.9
    at each of the 7 steps, at distance 0.1."""
    r = on_a_quadratic
    np.testing.assert_allclose(r.nearest_ritz, 0.9, atol=1e-12)
    np.testing.assert_allclose(r.singular_distance, 0.1, atol=1e-12)


@pytest.mark.parametrize("kw, match", [(dict(substeps=3), "even"), (dict(steps=0), "steps"),
                                       (dict(h=-0.1), "h")])
def test_bad_settings_fail_before_any_work(kw, match):
    args = dict(E=quadratic, theta0={"x": jnp.ones(3)}, h=H, steps=4) | kw
    with pytest.raises(ValueError, match=match):
        pf_run.follow_run(**args)


def test_a_failed_recurrence_reads_as_nan_not_an_error():
    """Past a jump the PF's state can be anywhere, and Lanczos can break down there (seen under the
    SSE4.2 backend on appendix A's run): the checks at such a state read NaN. Under ``jax.jit`` the
    field's error would surface as a JaxRuntimeError that ``except EquinoxRuntimeError`` misses."""
    flat = lambda x: quadratic({"x": x})  # noqa: E731
    bad = jnp.array([jnp.nan, 1.0, 0.0])
    assert np.isnan(pf_run._krylov_gap(flat, H, bad, 3))
    ritz_values = eqx.filter_jit(lambda x: eqx.error_if(x, x[0] > 0, "the recurrence broke down"))
    assert np.isnan(pf_run._nearest_to_one(ritz_values, jnp.ones(3)))


def test_departure_and_closest_approach(on_a_quadratic):
    """On the quadratic the PF is GD (distance 8e-6 against gradient flow's 0.1 and more), so it never
    leaves, and its nearest Ritz value is 0.9 throughout; a run whose PF is farther than gradient flow
    from step 2 on, or stops there (NaN), leaves at step 2, and only the steps before count."""
    r = on_a_quadratic
    assert pf_run.departure_step(r) is None
    assert pf_run.closest_approach(r) == pytest.approx(0.1, abs=1e-12)
    for late in (1.0, np.nan):
        pf = r.distance["PF"].copy()
        pf[2:] = late
        left = r._replace(distance={**r.distance, "PF": pf},
                          singular_distance=np.array([0.5, 0.2, 1e-6, 1e-6, 1e-6, 1e-6, 1e-6]))
        assert pf_run.departure_step(left) == 2
        assert pf_run.closest_approach(left) == pytest.approx(0.2)


def test_tanh_pole_distance_real_and_complex_networks():
    """A real network's pre-activations are at least pi/2 from tanh's poles i pi (k + 1/2); moving one
    hidden unit's bias to 1.5i + 0.1 puts it sqrt(0.01 + (pi/2 - 1.5)^2) from i pi/2 (every example's
    pre-activation of that unit is its bias when the inputs are zero). The output layer has no tanh,
    so an imaginary part there changes nothing."""
    from pfcourse import models
    params = models.init_mlp(jax.random.key(0), [3, 4, 2], "tanh")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)))
    assert float(models.tanh_pole_distance(params, x)) >= np.pi / 2 - 1e-12
    zero = jnp.zeros((5, 3))
    hidden = {**params[0], "b": params[0]["b"].astype(complex).at[2].set(0.1 + 1.5j)}
    out = {**params[1], "b": params[1]["b"] + 1.5j}
    got = float(models.tanh_pole_distance([hidden, out], zero))
    assert got == pytest.approx(np.hypot(0.1, np.pi / 2 - 1.5), rel=1e-12)
    hidden = {**params[0], "b": params[0]["b"].astype(complex).at[2].set(-3.1j)}   # nearest: -i pi/2
    assert float(models.tanh_pole_distance([hidden, out], zero)) == pytest.approx(3.1 - np.pi / 2, rel=1e-12)


def test_the_corrected_pf_is_the_pf_on_a_quadratic_and_differs_off_it():
    """The first non-principal term holds the third derivative, zero on a quadratic: there "PF+c"
    follows the same states as the PF (up to rounding: both are integrated with the same steps).
    On a quartic the term is not zero and the two part."""
    start = {"x": jnp.array([1.0, -1.0, 0.5])}
    r = pf_run.follow_run(quadratic, start, H, 3, substeps=4, num_iter=3, corrected=True)
    assert set(r.distance) == {"NGF", "IGR", "PF", "PF+c"} and "PF+c" in r.rk4_error
    np.testing.assert_allclose(r.states["PF+c"], r.states["PF"], rtol=0, atol=1e-12)
    assert pf_run.departure_step(r, "PF+c") == pf_run.departure_step(r)

    def quartic(theta):
        return quadratic(theta) + 0.25 * jnp.sum(theta["x"] ** 4)

    r = pf_run.follow_run(quartic, start, 0.1, 3, substeps=4, num_iter=3, corrected=True)
    gap = np.abs(r.states["PF+c"][1:] - r.states["PF"][1:]).max()
    assert gap > 1e-6 and r.stop_reason["PF+c"] == ""
