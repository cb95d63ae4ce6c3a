"""Drawing code shared by the chapters (presentation layer: uses the core, never the reverse).

One colour and marker per model, kept across the whole book:
GD black dots, NGF blue, IGR green, PF red (real part solid, imaginary part dashed).
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

STYLE = {
    "GD": dict(color="black", marker="o", linestyle="none", markersize=4, label="GD iterates"),
    "NGF": dict(color="tab:blue", linestyle="-", label="gradient flow (NGF)"),
    "IGR": dict(color="tab:green", linestyle="-", label="IGR flow"),
    "PF": dict(color="tab:red", linestyle="-", label="principal flow (PF)"),
    "PF imag": dict(color="tab:red", linestyle="--", label="PF, imaginary part"),
}

__all__ = ["STYLE", "contour", "figure", "legend_below", "time_series", "trajectory",
           "animation_html", "descent_animation", "regime_map"]


def figure(ncols: int = 1, width: float = 4.2, height: float = 3.4, **kw):
    """A row of ``ncols`` axes of a size that reads well in the book."""
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), **kw)
    return fig, np.atleast_1d(axes)


def contour(ax, loss: Callable, bounds, levels: int = 25, resolution: int = 160, log: bool = False):
    """Filled-line contours of a 2-D loss over ``bounds = ((x0, x1), (y0, y1))``."""
    (x0, x1), (y0, y1) = bounds
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    X, Y = np.meshgrid(xs, ys)
    grid = np.stack([X.ravel(), Y.ravel()], axis=1)
    Z = np.asarray(jax.vmap(loss)(jnp.asarray(grid))).reshape(X.shape)
    if log:
        Z = np.log10(Z - Z.min() + 1e-3)
    ax.contour(X, Y, Z, levels=levels, colors="0.75", linewidths=0.7)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal", adjustable="box")
    return ax


def trajectory(ax, points, model: str = "PF", part: str = "real", **kw):
    """Draw a 2-D trajectory ``points`` (shape ``(T, 2)``, real or complex) in a model's style."""
    pts = np.asarray(points)
    pts = pts.imag if part == "imag" else pts.real
    style = {**STYLE[model], **kw}
    if model == "GD" and "linestyle" not in kw:
        ax.plot(pts[:, 0], pts[:, 1], color="0.6", linewidth=0.6, zorder=2)
    ax.plot(pts[:, 0], pts[:, 1], zorder=3, **style)
    return ax


def time_series(ax, ts, values, model: str = "PF", part: str = "real", **kw):
    """Plot a scalar series (real or complex) against time in a model's style."""
    v = np.asarray(values)
    v = v.imag if part == "imag" else v.real
    key = "PF imag" if (model == "PF" and part == "imag") else model
    ax.plot(np.asarray(ts), v, **{**STYLE[key], **kw})
    return ax


def legend_below(fig, axes: Sequence, ncol: int = 4):
    """One legend for the figure, under the axes, without duplicates."""
    handles, labels = [], []
    for ax in np.atleast_1d(axes):
        for hd, lb in zip(*ax.get_legend_handles_labels()):
            if lb not in labels:
                handles.append(hd)
                labels.append(lb)
    rows = -(-len(labels) // ncol)
    height = fig.get_size_inches()[1]
    bottom = min(0.45, (0.3 + 0.25 * rows) / height)  # inches of legend, as a fraction of the figure
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 0.0))
    return fig


# --------------------------------------------------------------------------- chapter 6: edge of stability

__all__ += ["eos_dashboard", "eos_animation", "eos_loss", "eos_sharpness", "rate_colors"]


def rate_colors(hs) -> list:
    """One colour per learning rate, from a sequential colormap (small h light, large h dark)."""
    hs = np.atleast_1d(np.asarray(hs, float))
    cmap = plt.get_cmap("viridis")
    if hs.size == 1:
        return [cmap(0.35)]
    order = np.argsort(np.argsort(hs))
    return [cmap(0.85 - 0.7 * o / (hs.size - 1)) for o in order]


def eos_sharpness(ax, history, runs=None, threshold: bool = True):
    """Sharpness :math:`\\lambda_0` against the step for each run, with :math:`2/h` dashed in the same colour."""
    runs = range(len(history.h)) if runs is None else runs
    colors = rate_colors(history.h)
    for i in runs:
        r = history.run(i)
        ax.plot(r["eig_step"], r["sharpness"], color=colors[i], lw=1.4, label=f"$h = {r['h']:.3g}$")
        if threshold:
            ax.axhline(2 / r["h"], color=colors[i], ls="--", lw=0.9)
    ax.set_xlabel("step")
    ax.set_ylabel(r"sharpness $\lambda_0$")
    return ax


def eos_loss(ax, history, runs=None, log: bool = True):
    """Train loss against the step for each run (log scale by default)."""
    runs = range(len(history.h)) if runs is None else runs
    colors = rate_colors(history.h)
    for i in runs:
        r = history.run(i)
        ax.plot(r["step"], r["loss"], color=colors[i], lw=1.0, label=f"$h = {r['h']:.3g}$")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    return ax


def eos_dashboard(history, run: int = 0, title: str | None = None, width: float = 9.0, height: float = 5.6,
                  dpi: float | None = None):
    """Four panels of one run, for the widget and the animation: sharpness against :math:`2/h`, loss,
    the projection :math:`u_0^\\top\\nabla E`, and the PF coefficient :math:`\\alpha(h\\lambda_0)`.

    Returns ``(fig, update)``; ``update(step)`` shows the run up to ``step`` (a marker at the
    current point) and returns the artists it changed.
    """
    r = history.run(run)
    fig, axes = plt.subplots(2, 2, figsize=(width, height), dpi=dpi)
    last = int(r["step"][-1])
    _eos_panels(axes, r, last)
    artists = _eos_artists(axes, rate_colors([r["h"]])[0], last)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()

    def update(step: int):
        return _eos_show(artists, r, int(np.clip(step, 0, last)))

    update(last)
    return fig, update


def _eos_limits(r) -> dict:
    """The vertical ranges of :func:`eos_dashboard`'s four panels for run record ``r``, by panel name
    (``None``: left to matplotlib); each takes the finite records only."""
    h, lam, loss, proj, alpha = r["h"], r["sharpness"], r["loss"], r["projection"], r["pf_coefficient"]
    lam, proj = np.asarray(lam, float), np.abs(np.asarray(proj, float))
    top = max(np.max(lam[np.isfinite(lam)], initial=0.0), 2 / h)
    finite = loss[np.isfinite(loss)]
    pmax = np.max(proj[np.isfinite(proj)]) if np.isfinite(proj).any() else 1.0
    fin = np.isfinite(alpha.real)
    lo = min(-1.5, np.min(alpha.real[fin]) - 0.2) if fin.any() else -2
    hi = max(np.pi / 2, np.max(alpha.imag[fin]) + 0.2) if fin.any() else 2
    return dict(sharp=(0, 1.15 * top), loss=(0.7 * finite.min(), 1.4 * finite.max()) if finite.size else None,
                proj=(-1.1 * pmax, 1.1 * pmax), pf=(lo, hi))


def _eos_panels(axes, r, last: int) -> None:
    """The fixed part of :func:`eos_dashboard`: step axes, ranges, reference lines and titles."""
    (a_sharp, a_loss), (a_proj, a_pf) = axes
    lim = _eos_limits(r)
    for ax in axes.ravel():
        ax.set_xlim(0, max(last, 1))
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
    a_sharp.axhline(2 / r["h"], color="0.3", ls="--", lw=1, label="$2/h$")
    a_sharp.set_ylim(*lim["sharp"])
    a_sharp.set_title(r"sharpness $\lambda_0$ and $2/h$", fontsize=9)
    a_loss.set_yscale("log")
    if lim["loss"] is not None:
        a_loss.set_ylim(*lim["loss"])
    a_loss.set_title("train loss", fontsize=9)
    a_proj.set_ylim(*lim["proj"])
    a_proj.axhline(0, color="0.85", lw=0.8)
    a_proj.set_title(r"projection $u_0^\top\nabla E$", fontsize=9)
    a_pf.axhline(0, color="0.85", lw=0.8)
    a_pf.set_ylim(*lim["pf"])
    a_pf.set_title(r"PF coefficient $\alpha(h\lambda_0)$ of the top direction", fontsize=9)


def _eos_artists(axes, color, last: int) -> tuple:
    """The empty lines, markers and text that :func:`_eos_show` fills, in its return order, and the legends."""
    (a_sharp, a_loss), (a_proj, a_pf) = axes
    l_sharp, = a_sharp.plot([], [], color=color, lw=1.4, label=r"$\lambda_0$ (Lanczos)")
    m_sharp, = a_sharp.plot([], [], "o", color=color, ms=4)
    l_loss, = a_loss.plot([], [], color=color, lw=1.0)
    m_loss, = a_loss.plot([], [], "o", color=color, ms=4)
    l_proj, = a_proj.plot([], [], color="black", lw=0.5, **(dict(marker=".", ms=2) if last <= 300 else {}))
    l_re, = a_pf.plot([], [], **{**STYLE["PF"], "label": r"Re $\alpha$"})
    l_im, = a_pf.plot([], [], **{**STYLE["PF imag"], "label": r"Im $\alpha$"})
    a_sharp.legend(fontsize=7, loc="lower right")
    a_pf.legend(fontsize=7, loc="lower left")
    text = a_sharp.text(0.02, 0.95, "", transform=a_sharp.transAxes, fontsize=8, va="top")
    return l_sharp, m_sharp, l_loss, m_loss, l_proj, l_re, l_im, text


def _eos_show(artists: tuple, r, step: int) -> tuple:
    """Show run record ``r`` up to ``step`` (``0 <= step <= last``) in :func:`_eos_artists`'s artists."""
    l_sharp, m_sharp, l_loss, m_loss, l_proj, l_re, l_im, text = artists
    lam, alpha, loss = r["sharpness"], r["pf_coefficient"], r["loss"]
    e = r["eig_step"] <= step
    l_sharp.set_data(r["eig_step"][e], lam[e])
    l_loss.set_data(r["step"][: step + 1], loss[: step + 1])
    l_proj.set_data(r["step"][: step + 1], r["projection"][: step + 1])
    l_re.set_data(r["eig_step"][e], alpha.real[e])
    l_im.set_data(r["eig_step"][e], alpha.imag[e])
    if e.any():
        j = np.flatnonzero(e)[-1]
        m_sharp.set_data([r["eig_step"][j]], [lam[j]])
        text.set_text(f"step {step}: $h\\lambda_0$ = {r['h'] * lam[j]:.2f}, loss {loss[step]:.3g}")
    m_loss.set_data([step], [loss[step]])
    return artists


def eos_animation(history, run: int = 0, frames: int = 60, interval: int = 120, title: str | None = None,
                  dpi: float | None = 72):
    """A ``matplotlib.animation.FuncAnimation`` of :func:`eos_dashboard`, ``frames`` evenly spaced steps
    (embed it in a static page with ``to_jshtml()``; keep ``frames`` small, each is an image)."""
    from matplotlib.animation import FuncAnimation

    fig, update = eos_dashboard(history, run, title=title, width=8.0, height=5.0, dpi=dpi)
    last = int(history.stop_step[run])
    steps = np.unique(np.linspace(0, last, max(2, int(frames))).round().astype(int))
    anim = FuncAnimation(fig, update, frames=steps, interval=interval, blit=False)
    plt.close(fig)
    return anim


# --------------------------------------------------------------------------- chapters 4 and 5

def regime_map(ax, markers=None, x_range=(-1.5, 3.5), signed: bool = False, labels: bool = True):
    r"""Per-step factor of each model along one eigen-direction, against :math:`x = h\lambda`.

    GD and the PF multiply the coordinate by :math:`1 - x` per step, NGF by :math:`e^{-x}` and IGR by
    :math:`e^{-x(1 + x/2)}` (book: chapter 3, eq. ``eq-step-factors``), computed here from
    :func:`pfcourse.stability.growth_rates` (factor :math:`= e^{hr}`) and
    :func:`pfcourse.flows.log_one_minus`. With ``signed=False`` the modulus is drawn on a log scale
    (above 1: the direction grows); with ``signed=True`` the signed factor (below 0: it flips sign).
    ``markers``: values of :math:`h\lambda_i` to mark with vertical lines (e.g. at the current point).
    Book: chapter 4, §A map of the regimes; the landscape explorer.
    """
    from pfcourse import flows, stability  # presentation uses the core

    lo, hi = x_range
    xs = np.linspace(lo, hi, 801)
    xs = xs[np.abs(xs - 1) > 1e-3]
    rates = stability.growth_rates(1.0, xs)               # h = 1: lam = x
    pf = np.exp(np.asarray(flows.log_one_minus(jnp.asarray(xs))))
    curves = {
        "PF": pf.real if signed else np.abs(pf),
        "NGF": np.exp(rates["NGF"]),
        "IGR": np.exp(rates["IGR"]),
    }
    for a, b, colour, name in stability.REGIME_BANDS:
        a, b = max(a, lo), min(b, hi)
        if a < b:
            ax.axvspan(a, b, color=colour, zorder=0, lw=0)
            if labels:
                ax.text((a + b) / 2, 0.97, name, transform=ax.get_xaxis_transform(), ha="center",
                        va="top", fontsize=7, color="0.35")
    xg = np.linspace(lo, hi, 21)
    gd = 1 - xg if signed else np.abs(1 - xg)
    if not signed:
        keep = gd > 0
        xg, gd = xg[keep], gd[keep]
    for name in ("NGF", "IGR", "PF"):
        ax.plot(xs, curves[name], **{**STYLE[name], "lw": 1.5})
    ax.plot(xg, gd, **{**STYLE["GD"], "label": "GD: factor $1 - h\\lambda$"})
    ax.axhline(1.0, color="0.4", lw=0.8)
    if signed:
        ax.axhline(0.0, color="0.4", lw=0.8, ls=":")
        ax.axhline(-1.0, color="0.4", lw=0.8)
        ax.set_ylim(-2.7, 2.7)
        ax.set_ylabel("factor per step")
    else:
        ax.set_yscale("log")
        ax.set_ylim(1e-3, 30)
        ax.set_ylabel("|factor| per step")
    for m in np.atleast_1d(markers if markers is not None else []):
        ax.axvline(float(np.real(m)), color="tab:purple", lw=1.2, ls="--")
    ax.set_xlim(lo, hi)
    ax.set_xlabel(r"$h\lambda$")
    return ax


def descent_animation(loss: Callable, bounds, h: float, gd, curves: dict | None = None, ts=None, *,
                      series: Callable | None = None, series_label: str = "", frames: int = 48,
                      title: str | None = None, width: float = 7.6, height: float = 3.2, dpi: int = 72,
                      interval: int = 150, levels: int = 15, log_contours: bool = False):
    r"""An animation of gradient descent hopping while continuous flows move through the landscape.

    Frame :math:`k` shows time :math:`t_k` (evenly spaced over the run): every flow up to
    :math:`t_k` (real part, a dot at its current point) and the GD iterates with :math:`nh \le t_k`
    (the latest one larger). With ``series``, a second panel shows ``series(points)`` against
    time for each model: real part solid, and for the PF the imaginary part dashed.

    Args:
      loss: the 2-D loss, for the contours.
      bounds: ``((x0, x1), (y0, y1))``.
      h: the learning rate (GD iterate ``n`` is at time ``n h``).
      gd: GD iterates, shape ``(N + 1, 2)``.
      curves: ``{model: points}`` with models among ``"NGF", "IGR", "PF"`` (styles of
        :data:`STYLE`) and points of shape ``(T, 2)``, real or complex, sampled at ``ts``.
      ts: times of the curves, shape ``(T,)``, increasing.
      series: optional ``points (K, 2) -> values (K,)``, e.g. a projection on an eigenvector.
      frames: number of frames; keep it at most about 60 for the book (each is a PNG).
      dpi: resolution of each frame.

    Returns:
      A :class:`matplotlib.animation.FuncAnimation`; turn it into HTML with :func:`animation_html`.
    Book: chapters 4 and 5 (every animation).
    """
    from matplotlib.animation import FuncAnimation

    gd, curves, ts = _descent_inputs(h, gd, curves, ts, frames)
    t_gd = h * np.arange(len(gd))
    t_end = max(ts[-1], t_gd[-1])
    times = np.linspace(0.0, t_end, frames)

    fig, axes = figure(2 if series is not None else 1, width=width / 2, height=height, dpi=dpi)
    contour(axes[0], loss, bounds, levels=levels, resolution=100, log=log_contours)
    panel = _descent_panel(axes[0], curves, h)
    spanel = None
    if series is not None:
        spanel = _series_panel(axes[1], series, series_label, curves, gd, t_end)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()

    def update(i):
        _descent_frame(panel, spanel, times[i], ts, t_gd, gd, h)
        return ()

    update(0)
    anim = FuncAnimation(fig, update, frames=frames, interval=interval, blit=False)
    anim.pfcourse_figure = fig
    return anim


def _descent_inputs(h, gd, curves, ts, frames):
    """:func:`descent_animation`'s inputs checked and as arrays: ``(gd, curves, ts)``, ``ts`` the GD
    times ``n h`` when there are no curves."""
    gd = np.asarray(gd)
    if gd.ndim != 2 or gd.shape[1] != 2:
        raise ValueError(f"gd must have shape (N + 1, 2), got {gd.shape}.")
    curves = {} if curves is None else {k: np.asarray(v) for k, v in curves.items()}
    if curves and ts is None:
        raise ValueError("pass the times ts of the curves.")
    ts = np.asarray(ts if ts is not None else h * np.arange(len(gd)), dtype=float)
    for k, v in curves.items():
        if k not in STYLE:
            raise ValueError(f"unknown model {k!r}; use one of {list(STYLE)}.")
        if v.shape != (ts.size, 2):
            raise ValueError(f"curve {k!r} must have shape ({ts.size}, 2) to match ts, got {v.shape}.")
    if not 1 <= frames <= 200:
        raise ValueError(f"frames must be between 1 and 200 (the book embeds every frame), got {frames}.")
    return gd, curves, ts


def _descent_panel(ax, curves: dict, h: float) -> dict:
    """The empty artists of the landscape panel (over its contours): per flow a line and a head, the GD
    trail, dots and current iterate, and the time stamp."""
    ax.set_xticks([])  # tick labels are most of the drawing time of a frame
    ax.set_yticks([])
    per_flow = {}
    for k, v in curves.items():
        line, = ax.plot([], [], zorder=3, **{**STYLE[k], "lw": 1.4})
        head, = ax.plot([], [], "o", color=STYLE[k]["color"], markersize=5, zorder=4)
        per_flow[k] = (line, head, v.real)
    gd_trail, = ax.plot([], [], color="0.6", lw=0.6, zorder=2)
    gd_dots, = ax.plot([], [], **{**STYLE["GD"], "zorder": 5})
    gd_now, = ax.plot([], [], "o", color="black", markersize=8, mfc="white", mew=2, zorder=6)
    stamp = ax.set_title(f"t = {0:.2f}   (GD step 0, h = {h:g})", fontsize=9)  # sized for tight_layout
    return dict(flows=per_flow, gd_trail=gd_trail, gd_dots=gd_dots, gd_now=gd_now, stamp=stamp)


def _series_range(svals: dict, sgd) -> tuple[float, float]:
    """The vertical range of the series panel: it follows GD's finite values, widened for the flows
    (real parts, and the PF's imaginary part) by at most one GD span each way, padded by 8%."""
    finite = [np.real(s)[np.isfinite(np.real(s))] for s in svals.values()]
    if "PF" in svals:
        finite.append(np.imag(svals["PF"])[np.isfinite(np.imag(svals["PF"]))])
    g = sgd[np.isfinite(sgd)]
    g_lo, g_hi = float(g.min()), float(g.max())
    span = g_hi - g_lo if g_hi > g_lo else 1.0
    # (a flow that leaves, e.g. a PF that blows up off quadratics, is cut at the edge)
    allv = np.clip(np.concatenate(finite + [g]), g_lo - span, g_hi + span)
    lo, hi = float(allv.min()), float(allv.max())
    pad = 0.08 * (hi - lo if hi > lo else 1.0)
    return lo - pad, hi + pad


def _series_panel(sax, series: Callable, series_label: str, curves: dict, gd, t_end: float) -> dict:
    """The series panel: ``series`` of every flow and of GD against time, empty artists to fill
    (per flow the real part, and the PF's imaginary part when it is nonzero), axes and legend."""
    svals = {k: np.asarray(series(v)) for k, v in curves.items()}
    sgd = np.real(np.asarray(series(gd)))
    sax.set_xlim(0, t_end)
    sax.set_ylim(*_series_range(svals, sgd))
    sax.axhline(0, color="0.85", lw=0.8)
    sax.set_xlabel("time $t$")
    sax.set_ylabel(series_label)
    per_flow = {}
    for k, s in svals.items():
        re, = sax.plot([], [], **STYLE[k])
        im = None
        if k == "PF" and np.any(np.abs(np.imag(s)) > 0):
            im, = sax.plot([], [], **STYLE["PF imag"])
        per_flow[k] = (re, im, s)
    s_gd, = sax.plot([], [], **STYLE["GD"])
    sax.legend(fontsize=7, loc="upper right")
    return dict(flows=per_flow, gd=s_gd, values=sgd)


def _descent_frame(panel: dict, spanel: dict | None, t: float, ts, t_gd, gd, h: float) -> None:
    """Show time ``t``: each flow up to ``t`` and the GD iterates with ``n h <= t`` (both panels)."""
    upto = ts <= t + 1e-12
    for line, head, pts in panel["flows"].values():
        p = pts[upto]
        line.set_data(p[:, 0], p[:, 1])
        head.set_data(p[-1:, 0], p[-1:, 1])
    n = int(np.sum(t_gd <= t + 1e-12))
    panel["gd_trail"].set_data(gd[:n, 0], gd[:n, 1])
    panel["gd_dots"].set_data(gd[:n, 0], gd[:n, 1])
    panel["gd_now"].set_data(gd[n - 1:n, 0], gd[n - 1:n, 1])
    panel["stamp"].set_text(f"t = {t:.2f}   (GD step {n - 1}, h = {h:g})")
    if spanel is not None:
        for re, im, s in spanel["flows"].values():
            re.set_data(ts[upto], np.real(s[upto]))
            if im is not None:
                im.set_data(ts[upto], np.imag(s[upto]))
        spanel["gd"].set_data(t_gd[:n], spanel["values"][:n])


def animation_html(anim, embed_limit_mb: float = 40.0):
    """The animation as a self-contained HTML player (``to_jshtml``) that needs no kernel.

    Renders every frame to PNG and embeds it in base64, under a size limit of
    ``embed_limit_mb`` megabytes (matplotlib's ``animation.embed_limit``, set only while
    rendering; a book page with a few 50-frame animations at 72 dpi stays at a few MB).
    Closes the figure so that the notebook shows the player only.
    Book: chapters 4 and 5.

    Returns:
      An :class:`IPython.display.HTML` object; the last expression of a cell displays it.
    """
    import matplotlib
    from IPython.display import HTML

    with matplotlib.rc_context({"animation.embed_limit": embed_limit_mb}):
        html = anim.to_jshtml(default_mode="loop")
    fig = getattr(anim, "pfcourse_figure", None) or getattr(anim, "_fig", None)
    if fig is not None:
        plt.close(fig)
    return HTML(html)


# --------------------------------------------------------------------------- chapter 7: DAL

__all__ += ["seed_band"]


def seed_band(ax, x, runs, color=None, label: str | None = None, lw: float = 1.3, alpha: float = 0.22, **kw):
    """Several seeds of one configuration: the median as a line, the min-max range as a shaded band.

    ``runs`` has shape ``(seeds, len(x))``; NaNs (a run that stopped) are ignored per point.
    Book: chapter 7 (every curve over seeds).
    """
    runs = np.atleast_2d(np.asarray(runs, dtype=float))
    x = np.asarray(x)
    if runs.shape[-1] != x.shape[0]:
        raise ValueError(f"runs must have shape (seeds, {x.shape[0]}) to match x, got {runs.shape}.")
    import warnings

    with warnings.catch_warnings():  # all-NaN columns give NaN, which matplotlib leaves out
        warnings.simplefilter("ignore", RuntimeWarning)
        mid, lo, hi = np.nanmedian(runs, 0), np.nanmin(runs, 0), np.nanmax(runs, 0)
    line, = ax.plot(x, mid, color=color, lw=lw, label=label, **kw)
    if runs.shape[0] > 1:
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=alpha, lw=0)
    return ax


# --------------------------------------------------------------------------- chapter 8: the central flow

__all__ += ["edge_line"]

STYLE.setdefault("CF", dict(color="tab:purple", linestyle="-", label="central flow"))
STYLE.setdefault("GD average", dict(color="black", linestyle="-", linewidth=1.2, label="GD, time average"))
STYLE.setdefault("GD line", dict(color="0.65", linestyle="-", linewidth=0.6, label="GD"))


def edge_line(ax, h: float, scale: float = 1.0, **kw):
    """The stability threshold :math:`2/h` (times ``scale``) as a dashed horizontal line.

    Book: chapter 8 (every sharpness panel).
    """
    style = {"color": "0.3", "linestyle": ":", "linewidth": 1.0, "label": "$2/h$", **kw}
    ax.axhline(scale * 2.0 / h, **style)
    return ax
