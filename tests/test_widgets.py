"""The landscape explorer and the animation helpers, exercised headlessly (no browser, no kernel)."""
import base64
import warnings

import jax.numpy as jnp
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.animation import FuncAnimation

from pfcourse import flows, landscapes, plots, stability
from pfcourse.widgets import explorer, landscape_explorer


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _gd_line(ax, gd):
    """The line of axes ``ax`` whose data are the GD iterates (markers, no line)."""
    for line in ax.get_lines():
        x, y = line.get_data()
        if line.get_marker() == "o" and len(x) == len(gd) and np.allclose(x, gd[:, 0]) and np.allclose(y, gd[:, 1]):
            return line
    return None


@pytest.mark.parametrize("name", list(explorer.SCENES))
def test_compute_state_and_draw_every_scene(name):
    """compute_state runs the public API on each scene; draw gives three axes whose data are the state's."""
    scene = explorer.SCENES[name]
    state = explorer.compute_state(name, steps=min(scene.steps, 12))
    L = state["landscape"]
    gd = flows.gradient_descent(L.loss, jnp.asarray(scene.start), scene.h, state["steps"])
    np.testing.assert_allclose(state["gd"], np.asarray(gd), rtol=1e-12)
    assert set(state["curves"]) | set(state["errors"]) == {"NGF", "IGR", "PF"}
    for m, pts in state["curves"].items():
        assert pts.shape == (len(state["ts"]), 2)
    assert len(state["regimes"]) == 2 and all(r in stability.REGIMES for r in state["regimes"])
    fig = explorer.draw(state)
    assert len(fig.axes) == 3
    assert _gd_line(fig.axes[0], state["gd"]) is not None
    loss_lines = fig.axes[1].get_lines()
    assert len(loss_lines) == 1 + len(state["curves"])
    markers = [l for l in fig.axes[2].get_lines() if l.get_linestyle() == "--"]
    np.testing.assert_allclose(sorted(l.get_xdata()[0] for l in markers), sorted(state["h_lambdas"]))


def test_pf_on_the_quadratic_scene_is_the_closed_form():
    """On the valley the explorer's PF is flows.quadratic_pf_solution, passing through every GD iterate."""
    state = explorer.compute_state("valley (quadratic)", 1.8)
    L = state["landscape"]
    pf = state["curves"]["PF"]
    np.testing.assert_allclose(pf, flows.quadratic_pf_solution(L.params["A"], np.array([1.6, 0.4]), 1.8, state["ts"]))
    np.testing.assert_allclose(pf[::8].real, state["gd"], atol=1e-12)
    assert state["regimes"] == ["oscillating convergence", "monotone convergence"]


def test_models_toggle_and_bad_input():
    """Only the requested models are computed and drawn; bad names, h and steps are refused clearly."""
    state = explorer.compute_state("double well", 0.5, models=("GD", "PF"), steps=5)
    assert list(state["curves"]) == ["PF"]
    fig = explorer.draw(state)
    assert len(fig.axes[1].get_lines()) == 2
    state = explorer.compute_state("double well", 0.5, models=("NGF",), steps=5)
    assert _gd_line(explorer.draw(state).axes[0], state["gd"]) is None
    with pytest.raises(ValueError, match="unknown landscape"):
        explorer.compute_state("banana split")
    with pytest.raises(ValueError, match="unknown models"):
        explorer.compute_state("saddle", models=("SGD",))
    with pytest.raises(ValueError, match="learning rate"):
        explorer.compute_state("saddle", h=-0.1)
    with pytest.raises(ValueError, match="steps"):
        explorer.compute_state("saddle", steps=0)


def test_divergence_is_shown_not_raised():
    """GD that diverges is cut at its last finite iterate and flagged; the figure still draws."""
    state = explorer.compute_state("local minimum", 0.95, steps=40)   # the escape overshoots and blows up
    assert state["diverged"] and 1 <= len(state["gd"]) - 1 < 40
    assert np.all(np.isfinite(state["gd"]))
    assert "diverged" in explorer.draw(state).axes[0].get_title()


def test_regime_at_a_chosen_iterate():
    """at_step reads the Hessian at that GD iterate: on the local-minimum scene at h = 0.7 the start
    (1.2, 0.3) has h lambda_y > 2, and the last iterate (the flat minimum) is stable."""
    first = explorer.compute_state("local minimum", 0.7, models=("GD",), at_step=0)
    last = explorer.compute_state("local minimum", 0.7, models=("GD",), at_step=10**6)
    assert "oscillating divergence" in first["regimes"]
    assert last["at_step"] == last["steps"]
    assert all(0 < x < 2 for x in last["h_lambdas"])
    np.testing.assert_allclose(last["point"], [-1.0, 0.0], atol=1e-3)


def test_explorer_widget_callbacks():
    """The ipywidgets wiring: moving h, switching landscape, toggling a model and choosing the
    iterate each recompute the state and redraw a three-axes figure (core widgets only)."""
    import ipywidgets as W

    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # no warning from the wiring
        # but old libraries warn from inside about newer ones (tests/test_lowest_versions.py):
        # ipywidgets 7 (Colab's) about ipykernel's Comm class, matplotlib 3.7 about pyparsing's API
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(ipywidgets|matplotlib)\.")
        ui = landscape_explorer()
        ex = ui.explorer
        assert isinstance(ui, W.VBox) and ex.state["name"] == "valley (quadratic)"
        for w in (ex.landscape, ex.h, ex.steps, ex.at_step, *ex.toggles.values(), ex.out):
            assert type(w).__module__.startswith("ipywidgets.widgets")
        ex.h.value = 2.2
        assert ex.state["h"] == pytest.approx(2.2) and "oscillating divergence" in ex.state["regimes"]
        ex.landscape.value = "saddle"
        scene = explorer.SCENES["saddle"]
        assert ex.state["name"] == "saddle" and ex.state["h"] == pytest.approx(scene.h)
        assert 10 ** ex.h.min == pytest.approx(scene.h_range[0]) and 10 ** ex.h.max == pytest.approx(scene.h_range[1])
        ex.toggles["PF"].value = False
        assert "PF" not in ex.state["curves"] and len(ex.figure.axes) == 3
        (shown,) = ex.out.outputs                      # the redraw is the Output's only content
        assert shown["output_type"] == "display_data"
        assert base64.b64decode(shown["data"]["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
        ex.at_step.value = 5
        assert ex.state["at_step"] == 5
        np.testing.assert_allclose(ex.state["point"], ex.state["gd"][5])


# ---------------------------------------------------------------- animation helpers (plots)

def test_descent_animation_and_html():
    """descent_animation returns a FuncAnimation with the requested frames; animation_html embeds it as a
    JavaScript player (no kernel needed), within the embed limit, and closes the figure."""
    valley = landscapes.quadratic([1.0, 0.1], angle=np.pi / 6)
    h, steps = 1.8, 4
    ts = np.linspace(0, steps * h, 41)
    gd = flows.gradient_descent(valley.loss, jnp.array([1.6, 0.4]), h, steps)
    pf = flows.quadratic_pf_solution(valley.params["A"], np.array([1.6, 0.4]), h, ts)
    anim = plots.descent_animation(valley.loss, ((-2, 2), (-2, 2)), h, gd, {"PF": pf}, ts,
                                   series=lambda p: p[:, 0], frames=8, dpi=40)
    assert isinstance(anim, FuncAnimation)
    fig = anim.pfcourse_figure
    assert len(fig.axes) == 2
    n_figures = len(plt.get_fignums())
    html = plots.animation_html(anim)
    assert "<script" in html.data and html.data.count("data:image/png;base64") == 8
    assert len(html.data) < 2e6
    assert len(plt.get_fignums()) == n_figures - 1
    assert matplotlib.rcParams["animation.embed_limit"] == matplotlib.rcParamsDefault["animation.embed_limit"]
    with pytest.raises(ValueError, match="shape"):
        plots.descent_animation(valley.loss, ((-2, 2), (-2, 2)), h, gd, {"PF": pf[:5]}, ts)
    with pytest.raises(ValueError, match="frames"):
        plots.descent_animation(valley.loss, ((-2, 2), (-2, 2)), h, gd, frames=500)


def test_regime_map_draws_the_four_factors():
    """regime_map: GD dots on the PF curve |1 - x|, NGF e^{-x}, IGR e^{-x(1 + x/2)}; markers as dashed lines."""
    fig, axes = plots.figure(2)
    plots.regime_map(axes[0], markers=[0.5, 2.5])
    plots.regime_map(axes[1], signed=True)
    by_label = {l.get_label(): l for l in axes[1].get_lines()}
    x, y = by_label[plots.STYLE["PF"]["label"]].get_data()
    np.testing.assert_allclose(y, 1 - x, atol=1e-12)
    x, y = by_label[plots.STYLE["IGR"]["label"]].get_data()
    np.testing.assert_allclose(y, np.exp(-x * (1 + x / 2)), rtol=1e-12)
    dashed = [l for l in axes[0].get_lines() if l.get_linestyle() == "--"]
    assert sorted(l.get_xdata()[0] for l in dashed) == [0.5, 2.5]


# ---------------------------------------------------------------- the page slider (no kernel)


def _line(v):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, v])
    return fig


def test_page_slider_holds_one_picture_per_value_and_shows_the_start():
    from pfcourse.widgets import page_slider

    slider = page_slider(_line, [0.0, 0.5, 1.0], label="v", fmt="{:.1f}", start=2)
    page = slider._repr_html_()
    assert len(slider.pngs) == 3 and all(png.startswith(b"\x89PNG") for png in slider.pngs)
    assert len(set(slider.pngs)) == 3, "each value draws its own picture"
    assert page.count("data:image/png;base64,") == 4        # the three frames, and the one shown first
    assert '<output id="' in page and ">1.0</output>" in page and 'value="2"' in page
    assert page == page_slider(_line, [0.0, 0.5, 1.0], label="v", fmt="{:.1f}", start=2)._repr_html_(), \
        "the same pictures give the same page (no random ids)"
    assert repr(slider) == "PageSlider(v: 3 pictures, shown at 1.0)"


def test_page_slider_says_what_to_change():
    from pfcourse.widgets import page_slider

    with pytest.raises(ValueError, match="2 to 41 values"):
        page_slider(_line, [1.0], label="v")
    with pytest.raises(ValueError, match="2 to 41 values.*coarser grid"):
        page_slider(_line, range(42), label="v")
    with pytest.raises(ValueError, match="start=3 is not an index of the 3 values"):
        page_slider(_line, [0.0, 0.5, 1.0], label="v", start=3)
