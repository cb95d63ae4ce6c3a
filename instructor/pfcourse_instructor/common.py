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
HIDE_SOLUTIONS_ENV = "PFCOURSE_HIDE_SOLUTIONS"

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


def hide_solutions_default() -> bool:
    """The build switch: ``PFCOURSE_HIDE_SOLUTIONS=1`` hides solutions in the book and notebooks."""
    return os.environ.get(HIDE_SOLUTIONS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


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
