"""The Colab notebooks: one ``notebooks/NN_name.ipynb`` per chapter, generated from ``book/NN_name.md``.

Every MyST chapter of ``book/`` (a page with a Jupyter kernel in its front matter) becomes a real
``.ipynb`` whose first cell installs pfcourse and reports the device (:mod:`.common`), followed by
the chapter's cells with their MyST converted to Markdown that Colab renders (:mod:`.myst`). The
student versions of the assignments (:mod:`.assignments`) go to ``notebooks/assignments/``.
:func:`generate` writes them all; :func:`check_sync` says which committed files differ from what the
sources generate (CI runs it).

Book: all chapters; the launch button of each chapter opens its notebook in Colab.
"""
from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import nbformat

from . import assignments, myst
from .common import GENERATED_BY, hidden_solutions, install_cell_source, new_notebook, repository_root


def chapter_sources(root: Path) -> list[Path]:
    """The MyST chapters of ``book/``: Markdown files whose front matter names a kernel."""
    import jupytext

    chapters = []
    for path in sorted((root / "book").glob("*.md")):
        text = path.read_text()
        if not text.startswith("---"):
            continue
        metadata = jupytext.read(path).metadata
        if "kernelspec" in metadata:
            chapters.append(path)
    return chapters


def _cell_id(prefix: str, number: int) -> str:
    return f"{prefix}-{number:03d}"


def _hidden_code_metadata(metadata: dict) -> dict:
    """Collapse a code cell's input in JupyterLab (``source_hidden``) and in Colab (form view)."""
    return {**metadata, "jupyter": {"source_hidden": True}, "cellView": "form"}


def chapter_notebook(path: Path, index: myst.BookIndex, *, hide_solutions: bool | Collection[str] = False,
                     assignment: Path | None = None) -> nbformat.NotebookNode:
    """The Colab notebook of one chapter (install cell first; MyST converted; outputs empty), without
    the solutions ``hide_solutions`` names (:func:`.myst.hides`)."""
    import jupytext

    stem, page = path.stem, f"book/{path.stem}"
    source = jupytext.read(path)
    ctx = myst.PageContext(index, page)
    cells = [nbformat.v4.new_code_cell(install_cell_source(),
                                       metadata={"pfcourse": {"role": "install"}})]
    converted = myst.convert_cells(source.cells, ctx, hide_solutions=hide_solutions)
    header = (f"*This notebook is generated from `book/{path.name}` by `{GENERATED_BY}`; "
              f"read it in the book at <{index.base_url}{page}.html>.*")
    first_markdown = True
    exercises_noted = False
    for cell, role in converted:
        metadata = dict(cell.get("metadata", {}))
        metadata.pop("jupytext", None)
        if cell.cell_type == "markdown":
            text = cell.source
            if first_markdown:
                text = text + "\n\n" + header
                first_markdown = False
            if assignment is not None and not exercises_noted and "**Exercise" in text:
                link = index.colab_url(f"notebooks/assignments/{stem}.ipynb")
                note = (f"> **Graded version.** These exercises are also an assignment with public "
                        f"checks and an autograder: [open it in Colab]({link})."
                        + (" The solutions of the graded ones are not shown this term."
                           if hide_solutions is not False else ""))
                text = text.replace("**Exercise", note + "\n\n**Exercise", 1)
                exercises_noted = True
            new = nbformat.v4.new_markdown_cell(text, metadata=metadata)
        elif cell.cell_type == "code":
            tags = metadata.get("tags", [])
            if role == "solution":
                metadata = _hidden_code_metadata(metadata)
                metadata["pfcourse"] = {"role": "solution"}
            elif "hide-input" in tags or "hide-cell" in tags:
                metadata = _hidden_code_metadata(metadata)
            new = nbformat.v4.new_code_cell(cell.source, metadata=metadata)
        else:
            new = nbformat.v4.new_raw_cell(cell.source, metadata=metadata)
        cells.append(new)
    for number, cell in enumerate(cells):
        cell["id"] = _cell_id(stem, number)
    return new_notebook(cells, {"pfcourse": {"source": f"book/{path.name}",
                                             "generated_by": GENERATED_BY}})


def dumps(nb: nbformat.NotebookNode) -> str:
    """Canonical text of a generated notebook (what is committed and compared)."""
    nbformat.validate(nb)
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files(root: str | Path | None = None, *, solutions: str | None = None) -> dict[Path, str]:
    """Every file of ``notebooks/`` as the sources generate it: ``{path: text}``; the chapters show the
    solutions of ``solutions`` (:data:`.common.SOLUTION_MODES`; default ``PFCOURSE_SOLUTIONS``, else
    ``ungraded``: a graded exercise's solution is left out)."""
    root = repository_root(root)
    hide_solutions = hidden_solutions(root, solutions)
    index = myst.build_index(root)
    files: dict[Path, str] = {}
    sources = {p.stem: p for p in assignments.assignment_sources(root)}
    for path in chapter_sources(root):
        nb = chapter_notebook(path, index, hide_solutions=hide_solutions, assignment=sources.get(path.stem))
        files[root / "notebooks" / f"{path.stem}.ipynb"] = dumps(nb)
    for stem, path in sources.items():
        assignment = assignments.load_assignment(path, root=root)
        files[root / "notebooks" / "assignments" / f"{stem}.ipynb"] = dumps(assignment.student_notebook(index))
    return files


def generate(root: str | Path | None = None, *, solutions: str | None = None) -> list[Path]:
    """Write ``notebooks/`` from the sources; remove generated notebooks whose source is gone."""
    root = repository_root(root)
    files = expected_files(root, solutions=solutions)
    written = []
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    for stale in _generated_on_disk(root):
        if stale not in files:
            stale.unlink()
            written.append(stale)
    return written


def _generated_on_disk(root: Path) -> list[Path]:
    out = []
    for path in sorted((root / "notebooks").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        try:
            meta = json.loads(path.read_text()).get("metadata", {})
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if "pfcourse" in meta:
            out.append(path)
    return out


def check_sync(root: str | Path | None = None, *, solutions: str | None = None) -> list[str]:
    """Problems: notebooks missing, stale or orphaned with respect to their sources (empty = in sync)."""
    root = repository_root(root)
    files = expected_files(root, solutions=solutions)
    problems = []
    for path, text in files.items():
        rel = path.relative_to(root)
        if not path.exists():
            problems.append(f"{rel} is missing")
        elif path.read_text() != text:
            problems.append(f"{rel} is out of date with its source")
    for path in _generated_on_disk(root):
        if path not in files:
            problems.append(f"{path.relative_to(root)} has no source any more")
    return problems


def execute(path: str | Path, *, cell_timeout: float = 900, allow_not_implemented: bool | None = None,
            cwd: str | None = None) -> list[str]:
    """Execute a notebook top to bottom in a fresh kernel, headless; return its problems (empty = ok).

    The kernel has no front end: widgets build and render to widget-view outputs as in the book
    build, and nobody moves them. ``NotImplementedError`` from a student stub is allowed in the
    student versions of the assignments (default: when the notebook's metadata names an assignment);
    any other error, a time-out or a crash is a problem. The kernel runs in an empty directory, as in
    Colab, so a notebook that needs files of the repository fails here too.
    """
    from .runner import run_notebook

    nb = nbformat.read(str(path), as_version=4)
    if allow_not_implemented is None:
        allow_not_implemented = "assignment" in nb.metadata.get("pfcourse", {})
    problems = []
    for number, outcome in run_notebook(nb, cell_timeout=cell_timeout, cwd=cwd):
        if outcome.ok or (allow_not_implemented and outcome.ename == "NotImplementedError"):
            continue
        detail = outcome.traceback.strip().splitlines()[-12:] if outcome.traceback else []
        problems.append(f"{Path(path).name}, cell {number}: {outcome.summary()}" +
                        ("\n    " + "\n    ".join(detail) if detail else ""))
    return problems
