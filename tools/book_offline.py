"""Sphinx extension: the built book loads nothing from the network (math renders offline).

Loaded by ``_config.yml`` (``sphinx: local_extensions: {book_offline: tools/}``); book tooling,
deliberately outside the ``pfcourse`` package that students install.

- MathJax 3 (3.2.2) is served from ``_build/html/_static/mathjax/``, a copy of the files that the
  pinned PyPI package ``sphinx-mathjax-offline`` ships (requirements.txt), instead of a CDN.
- matplotlib's ``to_jshtml`` animations link Font Awesome 4 from a CDN for their buttons' icons:
  that link is dropped, the theme's own Font Awesome (``_static/scripts/fontawesome.js``, which
  knows the v4 names) draws them.
- Widgets saved in a page (ipywidgets) would need a widget manager from a CDN, and their controls a
  live kernel anyway: each is drawn statically instead (its text and output images, from the saved
  widget state) under a note that says to open the chapter in Colab or Jupyter to use it.
- The theme's colour mode defaults to ``auto`` (pydata-sphinx-theme's ``default_mode``): with
  none, a first visit logs "Got invalid theme mode" as a console error.
- Inline scripts added twice are written once: sphinx-thebe registers its ``const THEBE_JS_URL``
  script on every ``env-before-read-docs``, and a second ``const`` is a JavaScript error.

``tests/book_browser.py`` (collected by ``tests/test_book.py``) opens every page in headless Chromium with the network cut off and
checks the result.
"""
from __future__ import annotations

import html
import importlib.util
import json
import re
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

MATHJAX_CDN = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"  # Sphinx's default
MATHJAX_LOCAL = "mathjax/tex-mml-chtml.js"  # relative to _static/
_FA4_CDN = re.compile(r'<link[^>]*href="https?://[^"]*font-awesome[^"]*"[^>]*>\s*', re.IGNORECASE)


def mathjax_static_dir() -> Path:
    """The folder holding ``mathjax/`` in the installed ``sphinx-mathjax-offline`` package."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the package sphinx-mathjax-offline (MathJax for the book) is not installed: "
                           "python3 dev.py env installs requirements.txt")
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    if not (static / MATHJAX_LOCAL).is_file():
        raise RuntimeError(f"{static / MATHJAX_LOCAL} is missing: reinstall sphinx-mathjax-offline")
    return static


def _config_inited(app, config) -> None:
    if config.mathjax_path == MATHJAX_CDN:  # an explicit mathjax_path in _config.yml wins
        config.mathjax_path = MATHJAX_LOCAL
    config.html_static_path = [*config.html_static_path, str(mathjax_static_dir())]
    config.nb_ipywidgets_js = {}   # no widget manager from a CDN: widgets are drawn statically (below)


_WIDGET_VIEW = re.compile(r'<script type="application/vnd\.jupyter\.widget-view\+json">(\{.*?\})</script>')
WIDGET_NOTE = ("Interactive widget: its controls need a running Python kernel, so open this chapter in "
               "Colab or Jupyter to use them. Shown here as it was first drawn.")


def _widget_html(model_id: str, state: dict, depth: int = 0) -> str:
    """What a saved widget showed, without a widget manager: its text and its output images."""
    model = state.get(model_id, {})
    fields = model.get("state", {})
    name = model.get("model_name", "")
    if depth > 20:
        return ""
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<div>{fields.get('value', '')}</div>"
    if name == "OutputModel":
        parts = []
        for output in fields.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                parts.append(f'<img alt="widget output" src="data:image/png;base64,{data["image/png"].strip()}">')
            elif "text/plain" in data or "text" in output:
                text = data.get("text/plain", output.get("text", ""))
                parts.append(f"<pre>{html.escape(''.join(text) if isinstance(text, list) else text)}</pre>")
        return "".join(parts)
    children = [c.removeprefix("IPY_MODEL_") for c in fields.get("children", [])]
    return "".join(_widget_html(child, state, depth + 1) for child in children)


def _static_widgets(body: str, state: dict) -> str:
    """Each saved widget view becomes a static figure of what it showed, with a note saying how to use it."""
    def replace(match):
        model_id = json.loads(match.group(1)).get("model_id", "")
        inner = _widget_html(model_id, state)
        return (f'<div class="pfcourse-static-widget"><p><em>{WIDGET_NOTE}</em></p>'
                f"{inner}</div>")
    return _WIDGET_VIEW.sub(replace, body)


def _html_page_context(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    state = {}
    for script in list(scripts or []):    # the saved widget state: read it, then drop it from the page
        attributes = getattr(script, "attributes", None) or {}
        if attributes.get("type") == "application/vnd.jupyter.widget-state+json":
            state = json.loads(attributes.get("body", "{}")).get("state", {})
            scripts.remove(script)
    if scripts:
        seen, unique = set(), []
        for script in scripts:
            attributes = getattr(script, "attributes", None) or {}  # the same script, at any priority
            key = (getattr(script, "filename", script) or "",
                   tuple(sorted((k, str(v)) for k, v in attributes.items())))
            if key not in seen:
                seen.add(key)
                unique.append(script)
        scripts[:] = unique
    if not context.get("default_mode"):  # pydata-sphinx-theme: "" is a console error on a first visit
        context["default_mode"] = "auto"
    body = context.get("body")
    if body and "font-awesome" in body:
        context["body"] = body = _FA4_CDN.sub("", body)
    if body and "widget-view+json" in body:
        context["body"] = _static_widgets(body, state)


def setup(app):
    app.setup_extension("sphinx.ext.mathjax")
    app.connect("config-inited", _config_inited)
    app.connect("html-page-context", _html_page_context, priority=900)  # after the others add scripts
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
