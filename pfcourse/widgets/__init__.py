"""Live widgets (ipywidgets core widgets only, so they run in Colab's ipywidgets 7 and in Jupyter).

Presentation layer: uses the core and the experiments, never the reverse. Each widget lives in a
module of its own and is re-exported here.
"""
