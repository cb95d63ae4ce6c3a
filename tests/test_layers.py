"""The layers of the code: what students install ships the science only, and nothing imports upward.

* ``pfcourse`` (the library, installed in Colab) imports nothing of the instructor's tool
  ``pfcourse_instructor`` (``instructor/``, a second distribution) nor of what that tool needs
  (nbformat, nbclient, jupytext, Sphinx): checked on ``sys.modules`` after importing every module of
  pfcourse in a fresh interpreter, and on the source of every module (imports inside functions too).
* Inside pfcourse, the core (flows, spectral, krylov, symbolic, landscapes, stability, models, data,
  training) imports no experiment (eos, dal, dal_sgd, dal_matched, central_flow, one_step, pf_run,
  edge_toy) and no
  presentation (plots, widgets, the CLI), and the experiments import no presentation.
* Neither package has an import cycle between its modules (a package's ``__init__`` re-exporting
  its submodules is not one).
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"pfcourse": ROOT / "pfcourse", "pfcourse_instructor": ROOT / "instructor" / "pfcourse_instructor"}
TOOLING = ("pfcourse_instructor", "nbformat", "nbclient", "jupytext", "sphinx")
CORE = {"flows", "spectral", "krylov", "symbolic", "landscapes", "stability", "models", "data", "training",
        "_checks"}
EXPERIMENTS = {"eos", "dal", "central_flow", "one_step", "edge_toy", "dal_sgd", "dal_matched", "pf_run"}
PRESENTATION = {"plots", "widgets", "__main__", "_cache", "glue"}


def modules(package: str) -> dict[str, Path]:
    """``{dotted name: file}`` of every module of ``package`` (a package is named by its ``__init__``)."""
    base = PACKAGES[package]
    out = {}
    for path in sorted(base.rglob("*.py")):
        parts = [package, *path.relative_to(base).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports, anywhere in its source (relative imports resolved; ``from P import m``
    is an import of the submodule ``P.m`` where there is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(anchor + ([node.module] if node.module else []))
            else:
                source = node.module
            subs = {f"{source}.{alias.name}" for alias in node.names} & known
            found |= subs or {source}
    return found


def _top(target: str, package: str) -> str | None:
    """The first component under ``package`` of a module name (``pfcourse.widgets.explorer`` -> widgets)."""
    parts = target.split(".")
    return parts[1] if parts[0] == package and len(parts) > 1 else None


def test_importing_all_of_pfcourse_loads_no_instructor_tooling():
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import pfcourse\n"
        "names = [m.name for m in pkgutil.walk_packages(pfcourse.__path__, 'pfcourse.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {TOOLING!r})\n"
        "print(json.dumps({'imported': names, 'tooling': bad}))\n")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg"}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert "pfcourse.flows" in result["imported"] and "pfcourse.widgets.explorer" in result["imported"]
    assert not any(name.startswith("pfcourse.coursework") for name in result["imported"]), \
        "pfcourse.coursework is gone: the instructor's tool is instructor/pfcourse_instructor"
    assert not result["tooling"], f"importing pfcourse loaded the instructor's tooling: {result['tooling']}"


@pytest.mark.parametrize("name", sorted(modules("pfcourse")))
def test_pfcourse_module_imports_no_tooling_and_nothing_above_its_layer(name):
    known = set(modules("pfcourse"))
    imported = imports(name, modules("pfcourse")[name], known)
    tooling = sorted(m for m in imported if m.split(".")[0] in TOOLING or m.startswith("pfcourse.coursework"))
    assert not tooling, f"{name} imports the instructor's tooling: {tooling}"
    layer = _top(name, "pfcourse")
    above = PRESENTATION | EXPERIMENTS if layer in CORE else PRESENTATION if layer in EXPERIMENTS else set()
    upward = sorted(m for m in imported if _top(m, "pfcourse") in above)
    assert not upward, f"{name} imports upward: {upward}"


def test_every_pfcourse_module_has_a_layer():
    """A new module is placed in CORE, EXPERIMENTS or PRESENTATION above, so the check above covers it."""
    layers = CORE | EXPERIMENTS | PRESENTATION
    unplaced = sorted(name for name in modules("pfcourse") if _top(name, "pfcourse") not in layers | {None})
    assert not unplaced, f"modules in no layer (add them to CORE, EXPERIMENTS or PRESENTATION): {unplaced}"


def _cycles(package: str) -> list[list[str]]:
    """Groups of modules that import each other, directly or not (strongly connected components).

    The edges out of a package's ``__init__`` are left out: re-exporting its submodules is no cycle."""
    mods = modules(package)
    known = set(mods)
    graph = {name: set() if path.name == "__init__.py" else
             {m for m in imports(name, path, known) if m in known and m != name}
             for name, path in mods.items()}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    reachable = {name: reach(name) for name in graph}
    groups = {frozenset({a} | {b for b in reachable[a] if a in reachable[b]}) for a in graph}
    return sorted(sorted(g) for g in groups if len(g) > 1)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_has_no_import_cycle(package):
    cycles = _cycles(package)
    assert not cycles, f"modules of {package} that import each other: " + "; ".join(", ".join(c) for c in cycles)
