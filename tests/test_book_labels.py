"""Every label the book, the coursework, the tests and the package cite exists in the book.

The strict Sphinx build catches a broken ``{eq}`` or ``{ref}`` inside book/, but not a label named
in a test's docstring ("eq-igr: ..."), a code comment, a coursework file or a package docstring. This
test collects the labels the chapters define,

* ``(name)=`` targets, ``:label: name`` options of directives, and ``$$ ... $$ (name)`` equations,

and fails on any citation of a label that is not among them:

* in book/*.md and coursework/*.md: MyST roles (``{eq}`name```, ``{ref}`text <name>```, ...),
  ``solution-start``/``solution-end`` arguments, coursework ``"question"`` metadata, and any bare
  ``eq-...`` token (code comments, strings);
* in tests/*.py, pfcourse/**/*.py and instructor/pfcourse_instructor/*.py: ``eq-...`` tokens, and
  tokens with another prefix the book uses (``ch-``, ``ex-``, ``thm-``, ...), in comments and
  docstrings only. ``eq-bea-*`` (a pattern) must match at least one label.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = sorted((ROOT / "book").glob("*.md"))
COURSEWORK = sorted((ROOT / "coursework").glob("*.md"))
PYTHON = [p for p in sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "pfcourse").rglob("*.py"))
          + sorted((ROOT / "instructor" / "pfcourse_instructor").rglob("*.py"))
          if p.name != Path(__file__).name]          # this file names missing labels on purpose

NAME = r"[A-Za-z0-9][A-Za-z0-9_.:-]*[A-Za-z0-9]"
TARGET = re.compile(rf"^\(({NAME})\)=\s*$", re.M)
LABEL_OPTION = re.compile(rf"^\s*:label:\s*({NAME})\s*$", re.M)
EQUATION = re.compile(rf"^\$\$\s*\(({NAME})\)\s*$", re.M)

# {eq}`x`, {ref}`x`, {ref}`text <x>`, {numref}`x`, {prf:ref}`x`, {doc}` is a path, not a label
ROLE = re.compile(r"\{(eq|ref|numref|prf:ref|download)\}`([^`]*)`")
SOLUTION = re.compile(rf"^:::+\{{solution-(?:start|end)\}}\s+({NAME})", re.M)
QUESTION = re.compile(rf'"question"\s*:\s*"({NAME})"')
EQ_TOKEN = re.compile(r"(?<![A-Za-z0-9_/.-])(eq-[a-z0-9]+(?:-[a-z0-9]+)*)(-?\*)?")


def defined_labels() -> dict[str, Path]:
    labels: dict[str, Path] = {}
    for path in BOOK:
        text = path.read_text()
        for pattern in (TARGET, LABEL_OPTION, EQUATION):
            for match in pattern.finditer(text):
                name = match.group(1)
                assert name not in labels, f"label {name!r} defined in {path.name} and {labels[name].name}"
                labels[name] = path
    return labels


def role_target(role: str, content: str) -> str | None:
    if role == "download":
        return None
    explicit = re.search(r"<([^<>]+)>\s*$", content)
    return (explicit.group(1) if explicit else content).strip()


def markdown_citations(path: Path) -> list[tuple[str, int, bool]]:
    """(label, line, is_pattern) for every citation in a MyST file."""
    text = path.read_text()
    line_of = lambda pos: text.count("\n", 0, pos) + 1
    found = []
    for match in ROLE.finditer(text):
        target = role_target(match.group(1), match.group(2))
        if target:
            found.append((target, line_of(match.start()), False))
    for pattern in (SOLUTION, QUESTION):
        found += [(m.group(1), line_of(m.start()), False) for m in pattern.finditer(text)]
    for match in EQ_TOKEN.finditer(text):
        found.append((match.group(1), line_of(match.start()), bool(match.group(2))))
    return found


def comments_and_docstrings(path: Path) -> list[tuple[str, int]]:
    """The comments and docstrings of a Python file, each with its first line number."""
    source = path.read_text()
    pieces = [(tok.string, tok.start[0]) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
              if tok.type == tokenize.COMMENT]
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                pieces.append((body[0].value.value, body[0].lineno))
    return pieces


def python_citations(path: Path, prefixes: set[str]) -> list[tuple[str, int, bool]]:
    token = re.compile(r"(?<![A-Za-z0-9_/.-])((?:%s)-[a-z0-9]+(?:-[a-z0-9]+)*)(-?\*)?"
                       % "|".join(sorted(map(re.escape, prefixes))))
    found = []
    for text, line in comments_and_docstrings(path):
        for match in token.finditer(text):
            found.append((match.group(1), line + text.count("\n", 0, match.start()), bool(match.group(2))))
    return found


def undefined(citations, labels, where: Path) -> list[str]:
    bad = []
    for name, line, is_pattern in citations:
        ok = any(label.startswith(name) for label in labels) if is_pattern else name in labels
        if not ok:
            shown = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where.name
            bad.append(f"{shown}:{line}: {name}{'*' if is_pattern else ''}")
    return bad


def test_the_book_defines_labels_of_every_kind():
    labels = defined_labels()
    assert {"ch-pf", "sec-central-integrating", "thm-pf-exact", "ex-dal-derive", "eq-pf", "eq-bea-igr"} <= set(labels)
    assert sum(name.startswith("eq-") for name in labels) > 50


def test_every_cited_label_exists():
    labels = defined_labels()
    prefixes = {name.split("-", 1)[0] for name in labels if "-" in name}
    bad = []
    for path in BOOK + COURSEWORK:
        bad += undefined(markdown_citations(path), labels, path)
    for path in PYTHON:
        bad += undefined(python_citations(path, prefixes), labels, path)
    assert not bad, "citations of labels that the book does not define:\n" + "\n".join(bad)


def test_the_checker_sees_what_it_must(tmp_path):
    """The collectors find a cited label in each place a citation can hide, and flag a missing one."""
    import textwrap

    md = textwrap.dedent("""\
        See {eq}`eq-a`, {ref}`the text <ch-b>`, {prf:ref}`thm-c` and eq-d in a comment.

        :::{solution-start} ex-e
        :::
        +++ {"question": "ex-f", "points": 1}
        """)
    tmp = tmp_path / "probe.md"
    tmp.write_text(md)
    assert [c[0] for c in markdown_citations(tmp)] == ["eq-a", "ch-b", "thm-c", "ex-e", "ex-f", "eq-a", "eq-d"]
    py = '"""Module: eq-x holds."""\n\ndef f():\n    """eq-bea-* and ch-y."""\n    return "eq-z"  # see thm-w\n'
    tmp = tmp_path / "probe.py"
    tmp.write_text(py)
    found = python_citations(tmp, {"eq", "ch", "thm"})
    assert sorted(c[0] for c in found) == ["ch-y", "eq-bea", "eq-x", "thm-w"]   # not the string "eq-z"
    assert undefined(found, {"eq-x", "eq-bea-igr", "thm-w"}, tmp) == ["probe.py:4: ch-y"]
    assert undefined(found, {"eq-x", "eq-other", "thm-w", "ch-y"}, tmp) == ["probe.py:4: eq-bea*"]
