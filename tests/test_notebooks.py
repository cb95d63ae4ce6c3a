"""The Colab notebooks: in sync with their sources, installable without pinning, and executable.

Each chapter is executed once per test run, by the book build (``tools/execute.py``: a fresh kernel
in an empty folder, as in Colab). A chapter notebook is that chapter's code cells after an install
cell, so here it is checked structurally (same code cells, in order, install cell first) and its
install cell is run with pip recorded. What exists only as a notebook, the student versions of the
assignments, is executed top to bottom in a fresh, headless kernel in an empty directory: any error
fails, except ``NotImplementedError`` from the stubs. They run two at a time (the CI machine has two
cores); with pytest-xdist (``-n 2``) each worker runs its own.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest

from pfcourse_instructor import common, notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
IDS = [str(p.relative_to(ROOT / "notebooks")) for p in NOTEBOOKS]
ASSIGNMENTS = [p for p in NOTEBOOKS if p.parent.name == "assignments"]
CHAPTER_NOTEBOOKS = [p for p in NOTEBOOKS if p.parent.name == "notebooks"]
MYST_LEFTOVERS = re.compile(r"\{(eq|ref|cite(:[a-z]+)?|prf:ref|numref|doc|exercise|solution[\w-]*|prf:\w+)\}|^:::",
                            re.M)


def test_notebooks_are_in_sync_with_book_and_coursework():
    problems = notebooks.check_sync(ROOT, solutions="ungraded")
    assert not problems, ("run `python3 dev.py notebooks` (python -m pfcourse_instructor notebooks):\n  "
                          + "\n  ".join(problems))


def test_every_chapter_has_a_notebook():
    chapters = {p.stem for p in notebooks.chapter_sources(ROOT)}
    assert chapters, "no chapters found in book/"
    assert chapters <= {p.stem for p in NOTEBOOKS if p.parent.name == "notebooks"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_cell_installs_pfcourse_without_pinning(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code" and first.metadata.get("pfcourse", {}).get("role") == "install"
    assert common.PACKAGE_SPEC in first.source and '"-c"' in first.source
    for name in ("jax", "jaxlib", "numpy", "matplotlib", "ipywidgets"):
        assert f"'{name}'" in first.source, f"{name} is not held at its installed version"
    assert "GPU" in first.source, "the notebook says whether it found a GPU"


def test_package_requirements_are_lower_bounds_only():
    """What the install cell installs may not pin or cap anything Colab ships (nor may the instructor's tool)."""
    for pyproject in (ROOT / "pyproject.toml", ROOT / "instructor" / "pyproject.toml"):
        deps = re.search(r"dependencies = \[(.*?)\]", pyproject.read_text(), re.S).group(1)
        for requirement in re.findall(r'"([^"]+)"', deps):
            assert not re.search(r"==|<|~=|!=", requirement), f"{pyproject}: {requirement} is not a lower bound"


def test_install_cell_holds_the_installed_versions(tmp_path):
    """Run the install cell as Colab would (pfcourse absent) with pip replaced by a recorder."""
    source = common.install_cell_source()
    recorder = tmp_path / "pip_args.json"
    fake = (
        "import importlib.util, subprocess, sys, json\n"
        "real_find_spec = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'pfcourse' else real_find_spec(name, *a)\n"
        "def record(cmd, check):\n"
        "    constraints = open(cmd[cmd.index('-c') + 1]).read().split()\n"
        f"    json.dump({{'cmd': cmd, 'constraints': constraints}}, open({str(recorder)!r}, 'w'))\n"
        "subprocess.run = record\n")
    run = subprocess.run([sys.executable, "-c", fake + source], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "jax" in run.stdout and ("GPU" in run.stdout or "CPU" in run.stdout)
    got = json.loads(recorder.read_text())
    assert got["cmd"][-1] == common.PACKAGE_SPEC
    for name in ("jax", "jaxlib", "numpy", "matplotlib", "ipywidgets"):
        assert f"{name}=={version(name)}" in got["constraints"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_markdown_has_no_myst_left_for_colab(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            leftover = MYST_LEFTOVERS.search(cell.source)
            assert not leftover, f"MyST syntax {leftover.group(0)!r} left in: {cell.source[:200]}"
            assert not re.search(r"^\$\$[ \t]*\(", cell.source, re.M), "an equation label was not converted"


def test_the_execution_gate_allows_only_stub_errors(tmp_path):
    stub = nbformat.v4.new_notebook(metadata={"pfcourse": {"assignment": "toy"}})
    stub.cells = [nbformat.v4.new_code_cell("def f():\n    raise NotImplementedError('write me')"),
                  nbformat.v4.new_code_cell("f()")]
    nbformat.write(stub, tmp_path / "stub.ipynb")
    assert notebooks.execute(tmp_path / "stub.ipynb", cell_timeout=60) == []
    broken = nbformat.v4.new_notebook(metadata={"pfcourse": {"assignment": "toy"}})
    broken.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("x / 0")]
    nbformat.write(broken, tmp_path / "broken.ipynb")
    problems = notebooks.execute(tmp_path / "broken.ipynb", cell_timeout=60)
    assert len(problems) == 1 and "ZeroDivisionError" in problems[0]
    chapter = nbformat.v4.new_notebook()               # chapters may not raise even NotImplementedError
    chapter.cells = stub.cells
    nbformat.write(chapter, tmp_path / "chapter.ipynb")
    assert len(notebooks.execute(tmp_path / "chapter.ipynb", cell_timeout=60)) == 1


_POOL = ThreadPoolExecutor(max_workers=2)
_RUNS: dict[Path, Future] = {}
_LOCK = threading.Lock()


def _execution(path: Path) -> Future:
    """Start executing every assignment, two at a time, the first time one is asked for."""
    with _LOCK:
        if not _RUNS:
            order = [path] + [p for p in ASSIGNMENTS if p != path]
            if os.environ.get("PYTEST_XDIST_WORKER"):      # each xdist worker runs only its own
                order = [path]
            for p in order:
                _RUNS[p] = _POOL.submit(notebooks.execute, p)
        if path not in _RUNS:
            _RUNS[path] = _POOL.submit(notebooks.execute, path)
        return _RUNS[path]


@pytest.mark.parametrize("path", ASSIGNMENTS, ids=lambda p: p.name)
def test_assignment_executes_top_to_bottom_in_a_fresh_kernel(path):
    problems = _execution(path).result()
    assert not problems, "\n".join(problems)


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names a code cell binds, names it reads), generously (any scope); IPython magics skipped."""
    import ast

    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
    return bound, read


@pytest.mark.parametrize("path", CHAPTER_NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_notebook_runs_the_chapters_code(path):
    """The install cell, then the chapter's code cells in order, less the code of the solutions the
    term leaves out (graded exercises'): executing the chapter (the book build does, in an empty
    folder as in Colab) executes the notebook's code, and no cell it keeps reads a name that only a
    left-out cell defines."""
    import jupytext
    from pfcourse_instructor import myst

    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert nb.cells[0].cell_type == "code" and nb.cells[0].source == common.install_cell_source()
    chapter = jupytext.read(ROOT / "book" / f"{path.stem}.md")
    ctx = myst.PageContext(myst.build_index(ROOT), f"book/{path.stem}")
    kept = [c for c, _ in myst.convert_cells(chapter.cells, ctx, hide_solutions=common.graded_labels(ROOT))
            if c.cell_type == "code"]
    assert code[1:] == [c.source for c in kept], \
        f"{path.name}: its code cells differ from book/{path.stem}.md: run `python3 dev.py notebooks`"
    everything = [c for c in chapter.cells if c.cell_type == "code"]
    left_out = [c.source for c in everything if not any(c is k for k in kept)]
    assert all(role == "solution" for c, role in myst.convert_cells(chapter.cells, ctx)
               if c.cell_type == "code" and c.source in left_out), "only solution code is left out"
    only_there = set().union(*[_names(s)[0] for s in left_out]) - set().union(*[_names(c.source)[0] for c in kept])
    first = next((i for i, c in enumerate(everything) if c.source in left_out), len(everything))
    needed = {name for c in everything[first:] if any(c is k for k in kept) for name in _names(c.source)[1]}
    assert not needed & only_there, f"{path.name}: kept cells read {sorted(needed & only_there)}, defined only " \
        "in a graded solution the term leaves out: define them in the cell that reads them"


def test_colab_button_opens_the_generated_notebook(tmp_path):
    """Build a two-page book with the real _config.yml: its Colab link points at notebooks/page.ipynb."""
    import minibook

    cell = "```{code-cell} ipython3\n1 + 1\n```\n"
    book = minibook.make(tmp_path, {name: f"# {name}\n\n{cell}" for name in ("page", "other")})
    (book / "notebooks").mkdir()
    nbformat.write(nbformat.v4.new_notebook(), book / "notebooks" / "page.ipynb")   # 'other' has none
    result = minibook.build(book)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    page = (book / "_build" / "html" / "book" / "page.html").read_text()
    links = re.findall(r'https://colab\.research\.google\.com/[^"\']+', page)
    assert links == ["https://colab.research.google.com/github/pfcourse/pfcourse/blob/main/notebooks/page.ipynb"]
    other = (book / "_build" / "html" / "book" / "other.html").read_text()
    assert "colab.research.google.com" not in other, "no Colab button where there is no notebook"


@pytest.mark.parametrize("chapter", notebooks.chapter_sources(ROOT), ids=lambda p: p.stem)
def test_hiding_solutions_removes_them_from_the_chapter_notebook(chapter):
    from pfcourse_instructor import common, myst

    index = myst.build_index(ROOT)
    shown = notebooks.chapter_notebook(chapter, index)
    hidden = notebooks.chapter_notebook(chapter, index, hide_solutions=True)
    graded = common.graded_labels(ROOT)
    term = notebooks.chapter_notebook(chapter, index, hide_solutions=graded)

    def solutions(nb):
        return [c for c in nb.cells if c.metadata.get("pfcourse", {}).get("role") == "solution"
                or "**Solution to Exercise" in c.source]

    def numbers(nb):             # the exercises whose solutions a notebook shows, by number
        return {m for c in solutions(nb) for m in re.findall(r"\*\*Solution to Exercise ([\d.]+)", c.source)}

    assert solutions(shown), "the chapter notebook shows the solutions by default"
    assert not solutions(hidden)
    exercises = sum(c.source.count("**Exercise") for c in hidden.cells if c.cell_type == "markdown")
    assert exercises == len(myst.exercise_labels(chapter)), "the exercises themselves stay"
    labels = myst.exercise_labels(chapter)
    expected = {index.targets[label].number for label in labels if label not in graded}
    assert numbers(term) == expected, "the term's notebook shows exactly the ungraded exercises' solutions"
