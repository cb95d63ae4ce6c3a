"""pfcourse.edge_toy: the PF through the edge of stability beside GD and the central flow (chapter 8).

Everything runs in float64 (or, for ``pf_mp``, in mpmath at a chosen precision) and is deterministic:
GD's map and the RK4 integrations repeat to rounding. At the edge GD amplifies a perturbation by at most |1 - h lambda| ~ 1.05 per step, so over 120
steps rounding (1e-16) grows to below 1e-12: the bounds below, set with margins of 3x or more on the
measured figures (identical on both backends, `XLA_FLAGS=--xla_cpu_max_isa=SSE4_2`), cannot be met by
chance and cannot be missed through rounding.
"""
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pfcourse import edge_toy, flows  # noqa: E402


@pytest.fixture(scope="module")
def run():
    return edge_toy.pf_through_the_edge(0.5, (0.05, 0.1), 120, substeps=40, pf_steps=40)


def test_loss_is_the_toy_and_analytic():
    th = jnp.array([0.3, -0.7])
    assert np.isclose(edge_toy.edge_toy_loss(th), 4.7 * np.log(np.cosh(0.3)) - 0.014, rtol=1e-14)
    z = jnp.array([0.3 + 0.1j, -0.7 + 0.0j])          # complex states (the PF's) are accepted
    assert np.isfinite(complex(edge_toy.edge_toy_loss(z)))


def test_gd_holds_the_edge_and_the_central_flow_sits_on_it(run):
    s = edge_toy.edge_summary(run, (60, 120))
    lo, hi = s["gd_h_lambda_range"]
    # measured 1.9929 .. 2.0455 over steps 60..120: GD hovers within 2.5% of 2 (its y pushed back up the
    # slope by h sum log cosh x_k); bounds 1.95 .. 2.15 leave 3x the measured excursion either side
    assert 1.95 < lo and hi < 2.15
    # measured rms x = 0.1932; the central flow's sigma is 0.2 exactly (sigma^2 = -2<grad S, grad E>/|grad S|^2
    # = 2 * 0.02 on the valley): GD's oscillation matches it to 4%; bound at 12%
    assert abs(s["gd_rms_x"] - 0.2) < 0.024
    assert abs(s["central_sigma"] - 0.2) < 1e-6                      # closed form, solver tolerance
    a, b = s["central_h_s_range"]
    assert abs(a - 2) < 1e-6 and abs(b - 2) < 1e-6                   # measured within 3e-12 of 2


@pytest.fixture(scope="module")
def quadratic():
    return edge_toy.pf_through_the_edge(0.5, (0.05, 0.1), 60, substeps=40, loss=edge_toy.quadratic_toy_loss,
                                        pf_steps=54)


def test_pf_follows_gradient_flow_through_the_edge_on_the_polynomial_toy(quadratic):
    line = 0.5 * (4 - (0.1 - 0.01 * np.arange(61)))
    # measured: the PF's Re h lambda is 0.0043 above the line at step 40, 0.083 at step 50; GD has turned
    # back (2.115 at step 40, 1.852 at step 60): bounds with margins of 3x and more
    assert abs(quadratic.pf_h_lambda[40] - line[40]) < 0.015
    assert quadratic.pf_h_lambda[50] > line[50]
    assert quadratic.gd_h_lambda[60] < 1.95
    # and then leaves for infinity in the complex plane: |x| 0.30 at step 40, 1.35 at 50, 12.9 at 54
    assert abs(quadratic.pf[54, 0]) > 5


def test_pf_mp_agrees_with_float64_where_both_resolve_the_flow():
    # on the polynomial toy, to step 50, the same RK4 in float64 and in 30-digit mpmath: measured 3e-15
    # in h lambda (rounding, growing at most ~|1 - h lambda| ~ 1.3 per step); bound 1e-10
    precise = edge_toy.pf_mp(0.5, (0.05, 0.1), 50, substeps=10, digits=30, profile="square", progress=False)
    plain = edge_toy.pf_float64(0.5, (0.05, 0.1), 50, substeps=10, loss=edge_toy.quadratic_toy_loss)
    assert np.max(np.abs(precise.h_lambda - 0.5 * (4 - plain[:, 1].real))) < 1e-10
    assert np.max(np.abs(precise.x - plain[:, 0])) < 1e-10


@pytest.mark.parametrize("profile, loss", [("logcosh", edge_toy.edge_toy_loss),
                                           ("square", edge_toy.quadratic_toy_loss)])
def test_the_mp_field_is_the_principal_flow(profile, loss):
    import mpmath
    field = jax.jit(flows.principal_flow(loss, 0.5))
    for z in ([0.3 + 0.1j, -0.7 + 0.05j], [0.05, 0.1], [1.2 - 0.4j, 0.3 + 0.2j]):
        want = np.asarray(field(jnp.asarray(z, dtype=complex)))
        with mpmath.workdps(30):
            got = edge_toy.pf_field_mp([mpmath.mpc(v) for v in z], mpmath.mpf(0.5), profile)
        # eig in float64 against closed-form projectors in 30 digits: measured 2e-14 relative at worst
        assert np.max(np.abs(np.array([complex(v) for v in got]) - want)) < 1e-11 * np.max(np.abs(want))


def test_the_log_cosh_pf_sits_on_the_pole_at_each_arithmetic_s_floor():
    # the PF's x runs into i pi/2 by step ~49; each precision gets as close as it can (measured 1e-19 at 30
    # digits, 4e-24 at 50, at 40 substeps), and the later Re h lambda is the arithmetic's (77 vs 96 at
    # step 56): bounds with margins of 10x and more
    runs = {d: edge_toy.pf_mp(0.5, (0.05, 0.1), 52, substeps=40, digits=d, progress=False) for d in (30, 50)}
    assert runs[30].pole_distance[52] < 1e-15 and runs[50].pole_distance[52] < 1e-20
    assert abs(runs[30].h_lambda[44] - runs[50].h_lambda[44]) < 1e-8
    assert runs[50].h_lambda[52] / runs[30].h_lambda[52] > 1.05


def test_bad_input_is_refused_before_work():
    with pytest.raises(ValueError, match="profile"):
        edge_toy.pf_mp(profile="cubic")
    with pytest.raises(ValueError, match="digits"):
        edge_toy.pf_mp(digits=8)
    with pytest.raises(ValueError, match="pf_steps"):
        edge_toy.pf_through_the_edge(steps=10, pf_steps=20)
