"""Widgets: live ones (ipywidgets core widgets only, so they run in Colab's ipywidgets 7 and in Jupyter),
and sliders that move in the book's pages without a kernel (:mod:`pfcourse.widgets.page_slider`).

Presentation layer: uses the core and the experiments, never the reverse. Each widget lives in a
module of its own and is re-exported here.
"""
from pfcourse.widgets.explorer import landscape_explorer  # noqa: F401  (chapters 4-5)
from pfcourse.widgets.eos_player import eos_player  # noqa: F401  (chapter 6)
from pfcourse.widgets.page_slider import page_slider  # noqa: F401  (chapter 1: no kernel needed)
