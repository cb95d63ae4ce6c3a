"""pfcourse.edge_toy: the PF through the edge of stability beside GD and the central flow (chapter 8).

Everything runs in float64 and is deterministic: GD's map and the two RK4 integrations repeat to
rounding. At the edge GD amplifies a perturbation by at most |1 - h lambda| ~ 1.05 per step, so over 120
steps rounding (1e-16) grows to below 1e-12: the bounds below, set with margins of 3x or more on the
measured figures (identical on both backends, `XLA_FLAGS=--xla_cpu_max_isa=SSE4_2`), cannot be met by
chance and cannot be missed through rounding.
"""
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pfcourse import edge_toy  # noqa: E402


@pytest.fixture(scope="module")
def run():
    return edge_toy.pf_through_the_edge(0.5, (0.05, 0.1), 120, substeps=40)


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


def test_pf_has_no_stabilising_mechanism(run):
    hl = run.pf_h_lambda
    # measured Re h lambda: 2.15 at step 40, 104 at 60, 647 at 120 (40 and 80 RK4 substeps agree to 1%):
    # it grows at every step from step 47 on (one dip of 0.1 at step 46, as x swings into the complex plane),
    # and ends two orders of magnitude above GD's 2.05
    assert np.all(np.diff(hl[47:]) > 0)
    assert hl[60] > 30 and hl[120] > 200
    # the PF's x runs to i*pi/2, the zero of cosh (the continued loss has a log singularity there)
    assert abs(run.pf[120, 0].imag - np.pi / 2) < 1e-3 and abs(run.pf[120, 0].real) < 1e-3
