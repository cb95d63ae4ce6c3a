"""Live widgets (ipywidgets core widgets only, so they run in Colab's ipywidgets 7 and in Jupyter).

Presentation layer: uses the core and the experiments, never the reverse. Each widget lives in a
module of its own and is re-exported here.
"""
from pfcourse.widgets.explorer import landscape_explorer  # noqa: F401  (chapters 4-5)
from pfcourse.widgets.eos_player import eos_player  # noqa: F401  (chapter 6)
