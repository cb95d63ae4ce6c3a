"""What the generated notebooks share: the repository's layout, the install cell, an empty notebook.

Imported by :mod:`.notebooks` (chapter notebooks), :mod:`.assignments` (student versions),
:mod:`.grading` and :mod:`.sphinx_ext`; imports nothing of this package, so none of them imports
another to reach these.

Book: all chapters (the first cell of every notebook in ``notebooks/``).
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat

GENERATED_BY = "python -m pfcourse_instructor notebooks"
PACKAGE_SPEC = "pfcourse @ git+https://github.com/pfcourse/pfcourse"
HELD = ("jax", "jaxlib", "numpy", "matplotlib", "ipywidgets")
HIDE_SOLUTIONS_ENV = "PFCOURSE_HIDE_SOLUTIONS"     # "1": every solution hidden (same as SOLUTIONS_ENV=none)
SOLUTIONS_ENV = "PFCOURSE_SOLUTIONS"
#: What each value of ``PFCOURSE_SOLUTIONS`` shows (:func:`solutions_mode`); the first is the default.
SOLUTION_MODES = {
    "ungraded": "the solutions of the exercises no assignment grades; a graded exercise's is left out (a term)",
    "all": "every solution (after the term, or for self-study)",
    "none": "no solution",
}

INSTALL_CELL = '''\
# Run this cell first. It installs pfcourse from its repository (skipped if it is already
# installed) and keeps the jax, jaxlib, numpy, matplotlib and ipywidgets you already have: their
# installed versions are held fixed for pip, so nothing is pinned, upgraded or downgraded.
import importlib.metadata, importlib.util, os, subprocess, sys, tempfile

if importlib.util.find_spec("pfcourse") is None:
    held = []
    for name in {held!r}:
        try:
            held.append(f"{{name}}=={{importlib.metadata.version(name)}}")
        except importlib.metadata.PackageNotFoundError:
            pass
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write("\\n".join(held))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", constraints.name,
                    {spec!r}], check=True)
    os.unlink(constraints.name)
    importlib.invalidate_caches()

import jax
gpus = [d for d in jax.devices() if d.platform == "gpu"]
print(f"jax {{jax.__version__}} on", f"GPU: {{gpus[0].device_kind}}" if gpus else
      "CPU (no GPU found): the chapter picks its small configuration")
'''


def install_cell_source() -> str:
    """Source of the first cell of every generated notebook."""
    return INSTALL_CELL.format(held=HELD, spec=PACKAGE_SPEC)


def solutions_mode() -> str:
    """The build switch, ``PFCOURSE_SOLUTIONS``: ``ungraded`` (the default), ``all`` or ``none``
    (:data:`SOLUTION_MODES`); ``PFCOURSE_HIDE_SOLUTIONS=1`` means ``none``."""
    if os.environ.get(HIDE_SOLUTIONS_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return "none"
    mode = os.environ.get(SOLUTIONS_ENV, "").strip().lower() or "ungraded"
    if mode not in SOLUTION_MODES:
        raise ValueError(f"{SOLUTIONS_ENV}={mode!r}: use one of " + ", ".join(SOLUTION_MODES)
                         + " (or leave it unset for ungraded).")
    return mode


def graded_labels(root: Path) -> frozenset[str]:
    """The labels of the chapter exercises that an assignment of ``root/coursework/`` grades (its
    questions' ``{"question": label}`` metadata)."""
    import jupytext

    labels = set()
    for path in sorted((root / "coursework").glob("*.md")):
        if path.name.lower() == "readme.md":
            continue
        labels.update(cell.metadata["question"] for cell in jupytext.read(path).cells
                      if isinstance(cell.metadata.get("question"), str))
    return frozenset(labels)


def hidden_solutions(root: Path, mode: str | None = None) -> bool | frozenset[str]:
    """What the book and the chapter notebooks leave out in ``mode`` (default :func:`solutions_mode`):
    ``True`` (every solution), ``False`` (none) or the graded exercises' labels."""
    mode = solutions_mode() if mode is None else mode
    if mode not in SOLUTION_MODES:
        raise ValueError(f"solutions mode {mode!r}: use one of {', '.join(SOLUTION_MODES)}.")
    if mode == "ungraded":
        return graded_labels(root)
    return mode == "none"


def repository_root(root: str | Path | None = None) -> Path:
    """The repository checkout (default: the current directory), checked to have ``book/``."""
    path = Path(root or Path.cwd()).resolve()
    if not (path / "book").is_dir() or not (path / "_config.yml").exists():
        raise FileNotFoundError(f"{path} is not the pfcourse repository (no book/ or _config.yml): "
                                "run from the repository root or pass --root.")
    return path


def new_notebook(cells, metadata: dict) -> nbformat.NotebookNode:
    """A notebook of ``cells`` with the Python 3 kernel, Colab's metadata and ``metadata`` added."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
        **metadata,
    }
    nb.cells = cells
    return nb
