r"""A slider that moves in the page, without a kernel: figures drawn in advance over a grid of values.

The live widgets (:mod:`pfcourse.widgets.explorer`) need a running kernel, so on the book's pages
they are still. For the toy settings the figure depends on one number (a learning rate, say), so it
can be drawn for every value of a grid when the chapter is executed and the browser can pick among
the pictures. :func:`page_slider` does that: ``draw(value)`` is called once per value of
``values``, each figure is kept as a PNG, and the cell's output is an HTML range input that shows
the picture of the value chosen (a few lines of JavaScript, no library, no network). In Jupyter and
Colab the same output works as it does on the page.

In Jupyter, Colab or the book (the cell's output is the slider)::

    >>> import matplotlib.pyplot as plt, numpy as np
    >>> def draw(hl):                      # one figure per value
    ...     fig, ax = plt.subplots()
    ...     ax.plot((1 - hl) ** np.arange(10), "o-")
    ...     return fig
    >>> page_slider(draw, [0.5, 1.5, 2.1], label="h*lambda")
    PageSlider(h*lambda: 3 pictures, shown at 1.50)

Book: chapter 1, §The quadratic case (GD's regimes as :math:`h\lambda` moves).
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from dataclasses import dataclass
from typing import Callable, Sequence

import matplotlib.pyplot as plt

__all__ = ["PageSlider", "page_slider"]

#: The most figures one slider holds (each is a PNG in the page: about 20-40 kB at the default size).
MAX_FRAMES = 41


@dataclass(frozen=True)
class PageSlider:
    """The pictures of a :func:`page_slider` and their labels; shown as HTML (``_repr_html_``)."""

    pngs: tuple[bytes, ...]
    labels: tuple[str, ...]
    label: str
    start: int
    alt: str

    def _repr_html_(self) -> str:
        uid = "pf-slider-" + hashlib.sha1(b"".join(self.pngs)).hexdigest()[:12]
        frames = [f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}" for png in self.pngs]
        label, alt = html.escape(self.label), html.escape(self.alt)
        value = html.escape(self.labels[self.start])
        return (
            f'<div class="pf-page-slider" id="{uid}">'
            f'<div style="display:flex;gap:0.6em;align-items:center;flex-wrap:wrap">'
            f'<label for="{uid}-input">{label}</label>'
            f'<input id="{uid}-input" type="range" min="0" max="{len(frames) - 1}" step="1" '
            f'value="{self.start}" style="flex:1 1 10em;max-width:24em">'
            f'<output id="{uid}-value" for="{uid}-input">{value}</output></div>'
            f'<img id="{uid}-img" src="{frames[self.start]}" alt="{alt}" style="max-width:100%;height:auto">'
            f"<script>(function () {{"
            f"var frames = {json.dumps(frames)}, labels = {json.dumps(list(self.labels))};"
            f'var input = document.getElementById("{uid}-input");'
            f'var img = document.getElementById("{uid}-img");'
            f'var out = document.getElementById("{uid}-value");'
            f'input.addEventListener("input", function () {{'
            f"img.src = frames[input.value]; out.textContent = labels[input.value]; }});"
            f"}})();</script></div>")

    def __repr__(self) -> str:
        return f"PageSlider({self.label}: {len(self.pngs)} pictures, shown at {self.labels[self.start]})"


def page_slider(draw: Callable[[float], "plt.Figure"], values: Sequence[float], *, label: str,
                fmt: str = "{:.2f}", start: int | None = None, dpi: int = 72,
                alt: str = "") -> PageSlider:
    """Draw ``draw(v)`` for every ``v`` in ``values`` and show the pictures under one slider.

    ``label`` names the value beside the slider and ``fmt`` formats it; ``start`` is the index
    shown first (default: the middle); ``alt`` describes the picture for a screen reader. Each
    figure is closed once saved. Book: chapter 1, §The quadratic case.
    """
    values = list(values)
    if not 2 <= len(values) <= MAX_FRAMES:
        raise ValueError(f"page_slider needs 2 to {MAX_FRAMES} values (each is a picture in the page), "
                         f"got {len(values)}: use a coarser grid.")
    start = len(values) // 2 if start is None else start
    if not 0 <= start < len(values):
        raise ValueError(f"start={start} is not an index of the {len(values)} values.")
    pngs = []
    for v in values:
        fig = draw(v)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        pngs.append(buf.getvalue())
    return PageSlider(tuple(pngs), tuple(fmt.format(v) for v in values), label, start, alt or label)
