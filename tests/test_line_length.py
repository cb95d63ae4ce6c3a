"""Every line of a code cell in book/*.md and coursework/*.md is at most 80 characters (issue 26).

Why: at a 1280-pixel window the book's text column shows about 77 characters of code, and a longer
line is cut or needs a scrollbar; the Colab notebooks and the assignments are generated from these
files, so they inherit the same lines. Prose, equations and plain ```` ``` ```` fences are not code
cells and are not checked here (the browser test measures rendered widths, outputs and equations
included).

The cells are read with jupytext, the reader the notebook generator uses
(``pfcourse_instructor.notebooks``), so a cell's options (``:tags: [...]``) are metadata, not code.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 80
SOURCES = sorted((ROOT / "book").glob("*.md")) + sorted((ROOT / "coursework").glob("*.md"))


def long_code_lines(text: str, limit: int = LIMIT) -> list[tuple[int, str]]:
    """(length, line) of every code-cell line longer than ``limit`` in a MyST notebook's text."""
    notebook = jupytext.reads(text, fmt="myst")
    return [(len(line), line)
            for cell in notebook.cells if cell.cell_type == "code"
            for line in cell.source.splitlines() if len(line) > limit]


def _where(text: str, line: str) -> int:
    """The 1-based line number of ``line`` in ``text`` (its first occurrence), for the message."""
    return text.splitlines().index(line) + 1


def test_the_check_catches_a_planted_long_line():
    """Only the code-cell line of 81 characters is reported: not the one of exactly 80, not long
    prose, not a long line in a plain ```python fence, and not the cell's option line."""
    long_code = "x = " + "1 + " * 19 + "1"                     # 81 characters
    fits = "# " + "=" * 78                                     # 80: allowed
    prose = "A sentence of prose that is far longer than eighty characters. " * 3
    plain_fence = "y = '" + "a" * 100 + "'"
    text = (f"# Title\n\n{prose}\n\n```python\n{plain_fence}\n```\n\n"
            f"```{{code-cell}} ipython3\n:tags: [hide-input]\n{fits}\n{long_code}\nz = 1\n```\n")
    assert len(long_code) == 81 and len(fits) == 80
    assert long_code_lines(text) == [(81, long_code)]
    assert long_code_lines(text, limit=79) == [(80, fits), (81, long_code)]
    assert _where(text, long_code) == text.splitlines().index(long_code) + 1


def test_the_sources_exist():
    """The parametrised check below has files to read (a moved folder would otherwise pass it)."""
    assert len([p for p in SOURCES if p.parent.name == "book"]) >= 8
    assert len([p for p in SOURCES if p.parent.name == "coursework"]) >= 8


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_code_cell_lines_fit_the_column(path):
    """No code-cell line is longer than 80 characters (wrap it: break a call over lines, split a
    string, move a comment above the statement)."""
    text = path.read_text()
    found = long_code_lines(text)
    name = path.relative_to(ROOT)
    report = "\n".join(f"  {name}:{_where(text, line)}: {n} characters: {line.strip()[:60]}"
                       for n, line in found)
    if found:
        pytest.fail(f"{len(found)} code-cell lines longer than {LIMIT} characters; wrap them:\n{report}")
