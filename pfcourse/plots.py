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

__all__ = ["STYLE", "contour", "figure", "legend_below", "time_series", "trajectory"]


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
