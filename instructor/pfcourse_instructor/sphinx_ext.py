"""Sphinx extension of the book: Colab buttons that open ``notebooks/*.ipynb``, and hidden solutions.

- The launch button of sphinx-book-theme points Colab at the page's source, a MyST ``.md`` that
  Colab cannot open. This extension points it at the generated notebook
  ``notebooks/<chapter>.ipynb`` instead (and drops the button of a page that has none).
- Solutions: by default the book leaves out the solution of every exercise that an assignment of
  ``coursework/`` grades, and says so in its place; the other solutions are shown, folded
  (``PFCOURSE_SOLUTIONS=ungraded``). ``PFCOURSE_SOLUTIONS=all`` (``python3 dev.py book
  --all-solutions``) shows every solution, after the term; ``none`` (``--hide-solutions``, or
  ``PFCOURSE_HIDE_SOLUTIONS=1``) hides them all (:func:`.common.hidden_solutions`). The graded labels
  are a configuration value, so a change of the coursework re-reads the pages.
  sphinx-exercise's own ``hide_solutions`` removes ``{solution}`` blocks but, of the gated
  ``{solution-start}``/``{solution-end}`` form the chapters use for solutions with code, only the
  title: the text and code cells between stay. This extension removes them too.

Listed in ``_config.yml`` under ``sphinx.extra_extensions`` as ``pfcourse_instructor.sphinx_ext``.
Book: all chapters.
"""
from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from sphinx.transforms import SphinxTransform
from sphinx.util import logging

from .common import hidden_solutions

logger = logging.getLogger(__name__)


GRADED_NOTE = "The solution is not shown this term: this exercise is graded in the coursework."


def _choose_solutions(app, config) -> None:
    """Set what the build leaves out from ``PFCOURSE_SOLUTIONS`` and the coursework next to the book."""
    hidden = hidden_solutions(Path(app.srcdir))
    if hidden is True:
        config.hide_solutions = True
    config.pfcourse_hidden_solutions = [] if isinstance(hidden, bool) else sorted(hidden)


class hidden_solution_start(nodes.Element):
    """Where a gated solution began, when solutions are hidden (removed with what follows it)."""


def _solution_start_directive():
    from sphinx_exercise.directive import SolutionStartDirective

    class SolutionStartThatHides(SolutionStartDirective):
        """sphinx-exercise's ``solution-start``; with ``hide_solutions`` it leaves a marker, not nothing."""

        def run(self):
            result = super().run()          # registers the gated pair, so the structure checks still run
            if self.env.app.config.hide_solutions:
                return [hidden_solution_start()]
            return result

    return SolutionStartThatHides


class RemoveSolutions(SphinxTransform):
    """With ``hide_solutions``, remove each gated solution (its marker, its content and its end) and
    each plain one; else replace the solution of each graded exercise by :data:`GRADED_NOTE`."""

    default_priority = 20        # after sphinx-exercise's gated-structure check (1) and merge (10)

    def apply(self):
        from sphinx_exercise.nodes import solution_end_node, solution_node

        for marker in list(self.document.findall(hidden_solution_start)):
            parent = marker.parent
            start = parent.index(marker)
            end = next((i for i in range(start, len(parent.children))
                        if isinstance(parent.children[i], solution_end_node)), start)
            for child in parent.children[start:end + 1]:
                parent.remove(child)
        graded = set(self.config.pfcourse_hidden_solutions)
        for node in list(self.document.findall(solution_node)):
            if self.config.hide_solutions:
                node.parent.remove(node)
            elif node.get("target_label") in graded:      # plain, or gated and merged (priority 10)
                note = nodes.paragraph("", "", nodes.emphasis("", GRADED_NOTE), classes=["graded-solution"])
                node.parent.replace(node, note)       # not replace_self: it copies the ids and classes


def _colab_notebook(app, pagename, templatename, context, doctree) -> None:
    """Point the Colab launch button of a chapter at ``notebooks/<stem>.ipynb``."""
    notebook = Path(app.srcdir) / "notebooks" / f"{Path(pagename).name}.ipynb"
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        kept = []
        for button in group.get("buttons", []):
            if button.get("text") == "Colab":
                if not notebook.exists():
                    logger.info(f"[pfcourse] no {notebook.name} in notebooks/: no Colab button on {pagename}")
                    continue
                button["url"] = re.sub(r"/blob/([^/]+)/.*$", rf"/blob/\1/notebooks/{notebook.name}", button["url"])
            kept.append(button)
        group["buttons"] = kept


def setup(app):
    app.add_config_value("pfcourse_hidden_solutions", [], "env")
    app.connect("config-inited", _choose_solutions)
    app.add_node(hidden_solution_start)
    app.add_directive("solution-start", _solution_start_directive(), override=True)
    app.add_transform(RemoveSolutions)
    app.connect("html-page-context", _colab_notebook, priority=600)   # after sphinx-book-theme (501)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
