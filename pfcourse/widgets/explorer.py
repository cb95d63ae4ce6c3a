r"""The landscape explorer: pick a loss, move the learning rate, watch GD and the flows that model it.

Three layers, so that everything but the wiring runs (and is tested) without a browser:

* :func:`compute_state` — pure computation: GD iterates, the NGF / IGR / PF trajectories, the loss
  along each, and the eigenvalues and regimes :math:`h\lambda_i` at a chosen GD iterate;
* :func:`draw` — pure drawing: one figure with the trajectories on the contours, the loss against
  time, and the regime map (:func:`pfcourse.plots.regime_map`) with the current :math:`h\lambda_i`;
* :func:`landscape_explorer` — ipywidgets core widgets only (``Dropdown``, ``FloatLogSlider``,
  ``IntSlider``, ``Checkbox``, ``Output``), so it runs in Jupyter and in Colab's ipywidgets 7.
  Each change recomputes the state, renders the figure to a PNG and makes it the ``Output``'s
  content (no ipympl, no interactive backend). Setting ``Output.outputs`` directly, rather than
  capturing ``plt.show()`` with ``with out:``, keeps all widget traffic kernel-to-front-end: a
  notebook executed headlessly by nbclient (the book build) then never answers a capture with
  comm messages of its own, which can deadlock its execution (jupyter/nbclient#312).

In Jupyter or Colab::

    from pfcourse.widgets import landscape_explorer
    landscape_explorer()

Book: chapter 4 (regimes) and chapter 5 (landscapes), §Explore it yourself.
"""
from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from pfcourse import flows, landscapes, plots, spectral, stability

__all__ = ["MODELS", "SCENES", "Scene", "compute_state", "draw", "figure_output", "landscape_explorer", "Explorer"]

#: The models the explorer can show, in the colours of :data:`pfcourse.plots.STYLE`.
MODELS = ("GD", "NGF", "IGR", "PF")


@dataclass(frozen=True)
class Scene:
    """A landscape with the learning rates and starting point that make it interesting.

    Attributes:
      make: a function returning the :class:`pfcourse.landscapes.Landscape`.
      h: the default learning rate.
      h_range: ``(h_min, h_max)`` of the slider (log scale).
      steps: the default number of GD steps.
      start: the starting point.
      note: one line on what to look for.
    """

    make: Callable[[], landscapes.Landscape]
    h: float
    h_range: tuple
    steps: int
    start: tuple
    note: str = ""


SCENES = {
    "valley (quadratic)": Scene(
        lambda: landscapes.quadratic([1.0, 0.1], angle=math.pi / 6), 1.8, (0.05, 2.4), 12, (1.6, 0.4),
        "h*lambda_0 = h here: flips sign above 1, diverges above 2; the PF is exact."),
    "saddle": Scene(
        lambda: landscapes.saddle(0.5, 1.0), 0.5, (0.05, 2.0), 12, (1.0, 0.05),
        "escape along y: GD and PF at log(1 + h)/h, NGF at 1, IGR at 1 - h/2 (converges for h > 2)."),
    "double well": Scene(
        lambda: landscapes.double_well(1.0), 0.8, (0.05, 1.3), 15, (0.15, 1.0),
        "minima at (+-1, 0) with curvatures (2, 1): GD is stable there iff h < 1."),
    "local minimum": Scene(
        landscapes.local_minimum, 0.7, (0.05, 0.95), 40, (1.2, 0.3),
        "the minimum at (1, 0) is sharp (4.25 along y): for h > 0.47 GD leaves it for the flat one."),
    "Rosenbrock": Scene(
        landscapes.rosenbrock, 1e-3, (1e-4, 2.2e-3), 40, (-1.0, 1.5),
        "curvature ~1000 across the banana: h ~ 1e-3 puts h*lambda near 1."),
}


@eqx.filter_jit
def _losses(E, points):
    """``E`` at each row of ``points`` (one compilation per landscape kind: ``E`` is data)."""
    return jax.vmap(E)(points)


def _check_name(name: str) -> Scene:
    if name not in SCENES:
        raise ValueError(f"unknown landscape {name!r}; choose one of {list(SCENES)}.")
    return SCENES[name]


def _gd_until_divergence(E, start, h, steps):
    """GD iterates; if GD diverges, the longest finite prefix (found by halving) and ``True``."""
    n = steps
    while n >= 1:
        try:
            return np.asarray(flows.gradient_descent(E, start, h, n)), n < steps
        except flows.DivergenceError:
            n //= 2
    return np.asarray(start)[None], steps > 0


def _short_message(err: Exception) -> str:
    """One informative line of an error (equinox wraps the message in stack-trace advice)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in lines:
        if any(key in ln for key in ("principal_flow", "not finite", "diverge", "stopped early")):
            return f"{type(err).__name__}: {ln[:150]}"
    return f"{type(err).__name__}: {(lines[-1] if lines else '')[:150]}"


def _clip_escape(points: np.ndarray, bounds, factor: float = 20.0) -> np.ndarray:
    """NaN from the first point whose real part is ``factor`` plot-widths away (a flow that blew up)."""
    (x0, x1), (y0, y1) = bounds
    scale = factor * max(x1 - x0, y1 - y0)
    far = np.any(np.abs(points.real) > scale, axis=1) | ~np.all(np.isfinite(points), axis=1)
    if far.any():
        points = points.astype(complex if np.iscomplexobj(points) else float).copy()
        points[int(np.argmax(far)):] = np.nan
    return points


def _flow_curves(L: landscapes.Landscape, models, x0, h: float, ts, substeps: int):
    """``(curves, errors)``: each flow of ``models`` integrated from ``x0`` at ``ts`` (RK4), or the
    short message of its error (a flow that diverges or is singular is part of the story)."""
    curves, errors = {}, {}
    fields = {"NGF": lambda: flows.gradient_flow(L.loss), "IGR": lambda: flows.igr_flow(L.loss, h),
              "PF": lambda: flows.principal_flow(L.loss, h)}
    for m in models:
        try:
            if m == "PF" and L.name == "quadratic":
                sol = flows.quadratic_pf_solution(L.params["A"], x0, h, ts, center=L.params["center"])
            else:
                y0 = x0.astype(jnp.complex128) if m == "PF" else x0
                sol = flows.integrate(fields[m](), y0, ts, method="rk4", substeps=substeps)
            curves[m] = _clip_escape(np.asarray(sol), L.bounds)
        except Exception as err:  # noqa: BLE001  the error is shown in the widget
            errors[m] = _short_message(err)
    return curves, errors


def _settings(scene: Scene, models, h, steps):
    """``(models, h, steps)`` checked, the scene's defaults filled in."""
    models = tuple(models)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose among {MODELS}.")
    h = scene.h if h is None else float(h)
    flows.check_learning_rate(h)
    steps = scene.steps if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    return models, h, steps


def compute_state(
    landscape_name: str,
    h: float | None = None,
    models: Sequence[str] = MODELS,
    steps: int | None = None,
    start=None,
    at_step: int = 0,
    points_per_step: int = 8,
    substeps: int = 10,
) -> dict:
    r"""Everything the explorer shows, computed with the public API of :mod:`pfcourse`.

    GD is :func:`pfcourse.flows.gradient_descent`; NGF, IGR and the PF are integrated with
    :func:`pfcourse.flows.integrate` (RK4, ``substeps`` per output interval, ``points_per_step``
    outputs per GD step); on a quadratic the PF is the exact :func:`~pfcourse.flows.quadratic_pf_solution`.
    Off quadratics the PF state is complex and the field uses the ``"side"`` branch
    (:func:`pfcourse.flows.log_one_minus`). If GD diverges, the run stops at the last finite
    iterate; if a flow fails (diverges, or meets :math:`h\lambda = 1`), its error is recorded
    instead of its curve. At the GD iterate ``at_step`` the Hessian's eigenvalues give
    :math:`h\lambda_i` and their regimes (:func:`pfcourse.stability.stability_regime`).

    Args:
      landscape_name: a key of :data:`SCENES`.
      h: the learning rate (default: the scene's).
      models: a subset of :data:`MODELS`.
      steps: number of GD steps (default: the scene's).
      start: the starting point (default: the scene's).
      at_step: the GD iterate at which to read the regimes (clipped to the run).

    Returns:
      A dict with keys ``name, landscape, h, steps, diverged, gd, ts, curves, errors, losses,
      point, h_lambdas, regimes, models``.
    """
    scene = _check_name(landscape_name)
    models, h, steps = _settings(scene, models, h, steps)
    L = scene.make()  # landscapes are data: a fresh one reuses every compilation of the last one
    x0 = jnp.asarray(scene.start if start is None else start, dtype=jnp.float64)

    gd, diverged = _gd_until_divergence(L.loss, x0, h, steps)
    n = len(gd) - 1
    ts = h * np.arange(n * points_per_step + 1) / points_per_step if n > 0 else np.zeros(1)
    curves, errors = _flow_curves(L, [m for m in models if m != "GD"] if n > 0 else [], x0, h, ts, substeps)
    losses = {"GD": np.asarray(_losses(L.loss, jnp.asarray(gd)))}
    for m, pts in curves.items():
        losses[m] = np.asarray(_losses(L.loss, jnp.asarray(pts.real)))
    k = int(np.clip(at_step, 0, n))
    point = gd[k]
    lam = np.asarray(spectral.hessian_eigh(L.loss, jnp.asarray(point))[0])
    return {
        "name": landscape_name, "landscape": L, "h": h, "steps": steps, "diverged": diverged,
        "gd": gd, "ts": ts, "curves": curves, "errors": errors, "losses": losses,
        "at_step": k, "point": point, "h_lambdas": h * lam, "regimes": stability.stability_regime(h * lam),
        "models": models,
    }


def draw(state: dict, width: float = 4.0, height: float = 3.4):
    r"""Draw a state of :func:`compute_state`: trajectories, loss against time, regime map.

    Panel 1: contours of the loss, the real part of each flow, the GD iterates (the iterate at which
    the regimes are read is circled). Panel 2: the loss along each model against time (GD at
    :math:`t = nh`; the flows' loss at their real part). Panel 3: :func:`pfcourse.plots.regime_map`
    with the current :math:`h\lambda_i` marked.

    Returns:
      The matplotlib figure (three axes).
    """
    L, h = state["landscape"], state["h"]
    fig, axes = plots.figure(3, width=width, height=height)
    ax, lax, rax = axes
    plots.contour(ax, L.loss, L.bounds)
    for m, pts in state["curves"].items():
        plots.trajectory(ax, pts, m, lw=1.2)
    if "GD" in state["models"]:
        plots.trajectory(ax, state["gd"], "GD")
    p = state["point"]
    ax.plot([p[0]], [p[1]], "o", mfc="none", mec="tab:purple", mew=2, markersize=11, zorder=6)
    ax.set_title(f"{state['name']}, h = {h:.3g}" + ("  (GD diverged)" if state["diverged"] else ""),
                 fontsize=9)

    t_gd = h * np.arange(len(state["gd"]))
    for m, vals in state["losses"].items():
        if m == "GD":
            if "GD" in state["models"]:
                lax.plot(t_gd, vals, **plots.STYLE["GD"])
        else:
            lax.plot(state["ts"], vals, **plots.STYLE[m])
    lax.set_xlabel("time $t$")
    lax.set_ylabel(r"$E(\mathrm{Re}\,\theta)$")
    lax.set_title("loss", fontsize=9)
    if state["errors"]:
        lax.text(0.02, 0.02, "\n".join(f"{m}: {e[:60]}" for m, e in state["errors"].items()),
                 transform=lax.transAxes, fontsize=6, color="tab:red", va="bottom")

    hl = np.asarray(state["h_lambdas"])
    plots.regime_map(rax, markers=hl, x_range=(min(-1.5, hl.min() - 0.3), max(3.5, hl.max() + 0.3)),
                     labels=False)
    rax.set_title(f"step {state['at_step']}: " + ", ".join(f"{x:.2f}" for x in hl), fontsize=9)
    plots.legend_below(fig, axes, ncol=5)
    return fig


def figure_output(fig, dpi: int = 80) -> dict:
    """A matplotlib figure as one notebook output (``display_data`` with a PNG), for ``Output.outputs``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    png = base64.b64encode(buf.getvalue()).decode("ascii")
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": png, "text/plain": f"<Figure with {len(fig.axes)} Axes>"}}


class Explorer:
    """The widget wiring around :func:`compute_state` and :func:`draw` (ipywidgets core widgets).

    ``Explorer(...).ui`` is the container to display; :meth:`update` recomputes and redraws (the
    callback of every control; call it directly to drive the explorer without a browser).
    Attributes after an update: ``state`` and ``figure``.
    """

    def __init__(self, landscape: str = "valley (quadratic)"):
        import ipywidgets as W

        scene = _check_name(landscape)
        self.landscape = W.Dropdown(options=list(SCENES), value=landscape, description="landscape")
        self.h = W.FloatLogSlider(value=scene.h, base=10, min=math.log10(scene.h_range[0]),
                                  max=math.log10(scene.h_range[1]), step=0.01, description="h",
                                  continuous_update=False, readout_format=".3g")
        self.steps = W.IntSlider(value=scene.steps, min=1, max=4 * scene.steps, description="GD steps",
                                 continuous_update=False)
        self.at_step = W.IntSlider(value=0, min=0, max=scene.steps, description="regime at",
                                   continuous_update=False)
        self.toggles = {m: W.Checkbox(value=True, description=m, indent=False,
                                      layout=W.Layout(width="70px")) for m in MODELS}
        self.note = W.HTML(value=f"<i>{scene.note}</i>")
        self.out = W.Output()
        self.state, self.figure = None, None
        self._quiet = False
        for w in (self.h, self.steps, self.at_step, *self.toggles.values()):
            w.observe(self.update, names="value")
        self.landscape.observe(self._new_landscape, names="value")
        self.ui = W.VBox([
            W.HBox([self.landscape, self.h]),
            W.HBox([self.steps, self.at_step]),
            W.HBox(list(self.toggles.values())),
            self.note,
            self.out,
        ])
        self.ui.explorer = self  # so that tests (and curious readers) can reach the callbacks
        self.update()

    def _new_landscape(self, change=None):
        scene = SCENES[self.landscape.value]
        self._quiet = True
        try:
            lo, hi = math.log10(scene.h_range[0]), math.log10(scene.h_range[1])
            # widen first so that no intermediate value is out of range
            self.h.min, self.h.max = min(self.h.min, lo), max(self.h.max, hi)
            self.h.value = scene.h
            self.h.min, self.h.max = lo, hi
            self.steps.max = max(self.steps.max, 4 * scene.steps)
            self.steps.value = scene.steps
            self.steps.max = 4 * scene.steps
            self.at_step.value = 0
            self.note.value = f"<i>{scene.note}</i>"
        finally:
            self._quiet = False
        self.update()

    def update(self, change=None):
        """Recompute the state from the controls and redraw it into the output area."""
        if self._quiet:
            return
        self.at_step.max = self.steps.value
        models = [m for m, box in self.toggles.items() if box.value]
        state = compute_state(self.landscape.value, self.h.value, models, self.steps.value,
                              at_step=self.at_step.value)
        fig = draw(state)
        self.out.outputs = (figure_output(fig),)
        plt.close(fig)  # drawn once, into the Output; never shown again at the end of the cell
        self.state, self.figure = state, fig


def landscape_explorer(landscape: str = "valley (quadratic)"):
    """The live landscape explorer: returns the ipywidgets container (display it, or end a cell with it).

    Controls: the landscape (:data:`SCENES`), the learning rate ``h`` (log slider), the number of GD
    steps, the GD iterate at which the regimes are read, and one checkbox per model (GD, NGF,
    IGR, PF). Works in Jupyter and Colab (core widgets; each redraw is a PNG in an ``Output``). The
    :class:`Explorer` behind it is ``container.explorer``.
    Book: chapters 4 and 5.
    """
    return Explorer(landscape).ui
