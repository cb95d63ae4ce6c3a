"""Execute the book's chapters once each, two at a time, into the cache Jupyter Book reads.

    .venv/bin/python tools/execute.py [--jobs 2] [--second-backend] [--report FILE] [--root FOLDER]
                                      [book/NN_name.md ...]

Jupyter Book 1 (``execute_notebooks: cache``) executes a chapter only when its code is not in
``_build/.jupyter_cache``. This script fills that cache first, in parallel, so the build that follows
only renders; a chapter whose code is already cached is not executed again. Each chapter runs in a
fresh kernel in an empty temporary folder, as in Colab, so the executed chapter also proves that its
notebook (``notebooks/NN_name.ipynb``, the same code cells after an install cell) runs there.

``--second-backend`` also executes every chapter that trains a network (``NETWORK_CHAPTERS``) under a
second floating-point backend, ``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2``: XLA's CPU code then uses other
instructions, so float32 rounds differently, as it does on another reader's processor. Those runs are
checked (any failing assertion fails them), never cached for the book (it shows the default backend).
A pass is recorded (:func:`second_backend_key`: ``_build/second-backend/NAME.json``) under a hash of
everything its outcome depends on here: the chapter's code, the package's source, the pinned
requirements, the backend's flags and this machine's processor. A chapter whose record matches is not
run under the second backend again (what passed, with the same code on the same machine, passes
again); any change to one of them runs it again.

Prints one line per chapter and backend (seconds, outcome); exits 1 when any execution failed, with
the failing cell's traceback. ``--report`` writes the same as JSON: the list of executions this run
made (empty when every chapter was cached), which is what the tests count, never a log.

``--root`` names another book (a folder with ``_config.yml`` and ``_toc.yml``; the tests' throw-away
books): its chapters and its execution cache (``execute.cache`` of its ``_config.yml``). Each cache entry
this script writes says so (``executed_by`` in its data), so a test can tell an execution of this
script from one of the build (myst-nb writes only ``execution_seconds``).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXECUTED_BY = "tools/execute.py"          # in the data of every cache entry this script writes
NETWORK_CHAPTERS = ("06_edge_of_stability", "07_dal", "08_central_flow", "a1_pf_along_a_run")
BACKENDS = {"default": {}, "sse4.2": {"XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2"}}
# Seconds each chapter took in `python3 dev.py book` on a fresh clone (2-core machine, 2026-12-07, 11bdd74;
# appendix A as measured alone after it gained the corrected flow): the longest start first, so two
# workers finish together.
EXPECTED_SECONDS = {"08_central_flow": 249, "07_dal": 231, "06_edge_of_stability": 218,
                    "a2_pf_off_quadratics": 195, "a1_pf_along_a_run": 185, "05_beyond_quadratics": 105,
                    "04_stability": 62, "03_principal_flow": 42,
                    "02_backward_error_analysis": 21}
TIMEOUT = 1200


def second_backend_key(path: Path, backend: str = "sse4.2", root: Path = ROOT) -> str:
    """The hash a second-backend pass of chapter ``path`` is recorded under: its code cells, every file
    of ``root``'s ``pfcourse/`` package (``*.py``), ``requirements.txt`` and ``pyproject.toml``, the
    backend's flags and this machine's processor (model name and core count)."""
    import hashlib
    import platform

    import jupytext

    digest = hashlib.sha256()
    def add(text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        digest.update(len(data).to_bytes(8, "little") + data)
    for cell in jupytext.read(path).cells:
        if cell.cell_type == "code":
            add(cell.source)
    for file in sorted((root / "pfcourse").rglob("*.py")):
        add(str(file.relative_to(root)))
        add(file.read_bytes())
    for name in ("requirements.txt", "pyproject.toml"):
        add((root / name).read_bytes() if (root / name).exists() else b"")
    add(json.dumps(BACKENDS[backend], sort_keys=True))
    cpuinfo = Path("/proc/cpuinfo")
    models = cpuinfo.read_text().split("model name")[1:2] if cpuinfo.exists() else []
    add(f"{platform.machine()} {platform.processor()} {models} {os.cpu_count()}")
    return digest.hexdigest()


def _record_path(path: Path, root: Path) -> Path:
    return root / "_build" / "second-backend" / f"{path.stem}.json"


def second_backend_passed(path: Path, backend: str = "sse4.2", root: Path = ROOT) -> dict | None:
    """The record of chapter ``path``'s pass under ``backend`` if it matches the chapter, package and
    machine as they are now (:func:`second_backend_key`), else None."""
    try:
        record = json.loads(_record_path(path, root).read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("key") == second_backend_key(path, backend, root) else None


def _record_pass(path: Path, result: dict, key: str, root: Path) -> None:
    """Record ``result``, a pass of ``path`` under the second backend, under ``key`` (taken before it ran)."""
    target = _record_path(path, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"key": key,
                                  "backend": result["backend"], "seconds": result["seconds"],
                                  "passed": time.strftime("%Y-%m-%d %H:%M:%S")}))


def cache_folder(root: Path = ROOT) -> Path:
    """The execution cache of the book in ``root``: ``execute.cache`` of its ``_config.yml``, the
    folder the build (myst-nb's cache mode) reads, relative to ``root``."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text())
    return root / config["execute"]["cache"]


def toc_chapters(root: Path = ROOT) -> list[Path]:
    """The chapters listed in ``_toc.yml`` (root page included) that have code cells."""
    import jupytext

    lines = (root / "_toc.yml").read_text().splitlines()
    names = [line.split(":", 1)[1].strip() for line in lines if line.strip().startswith(("root:", "- file:"))]
    paths = [root / f"{name}.md" for name in names]
    return [p for p in paths if any(c.cell_type == "code" for c in jupytext.read(p).cells)]


def _execute(path: str, backend: str) -> dict:
    """Run one chapter in a fresh kernel (in a worker process); return its outcome and executed notebook."""
    import jupytext
    import nbclient
    import nbformat

    nb = jupytext.read(path)
    env = {**os.environ, **BACKENDS[backend]}
    start = time.perf_counter()
    error = None
    with tempfile.TemporaryDirectory(prefix="pfcourse-chapter-") as cwd:
        client = nbclient.NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3", allow_errors=False,
                                         record_timing=False,   # cell metadata is part of the cache key
                                         resources={"metadata": {"path": cwd}})
        try:
            client.execute(env=env)
        except Exception as exc:  # CellExecutionError, CellTimeoutError, DeadKernelError
            error = f"{type(exc).__name__}: {exc}"
    return {"chapter": Path(path).stem, "backend": backend, "seconds": round(time.perf_counter() - start, 1),
            "error": error, "notebook": None if error else nbformat.writes(nb)}


def _cache(path: Path, notebook: str, seconds: float, folder: Path) -> str | None:
    """Store an executed chapter where myst-nb's cache mode looks it up (by the hash of its code).

    Returns None, or why the entry does not match the chapter as it is now (the build would execute
    it again): its file was edited while it ran, or execution changed cell metadata."""
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    import jupytext

    executed = nbformat.reads(notebook, as_version=4)
    cache = get_cache(folder)
    cache.cache_notebook_bundle(CacheBundleIn(executed, str(path),
                                              data={"execution_seconds": seconds, "executed_by": EXECUTED_BY}),
                                check_validity=False, overwrite=True)
    now = jupytext.read(path)
    try:                                 # the build looks the chapter up by the hash of its source
        cache.match_cache_notebook(now)
        return None
    except KeyError:
        def code(nb):
            return [c.source for c in nb.cells if c.cell_type == "code"]
        if code(executed) != code(now):
            return f"{path.name} was edited while it was executed: run the command again to execute it as it is now"
        return (f"{path.name} was executed but its cache entry does not match its source, so the book "
                "build would execute it again: did execution change cell metadata?")


def cached(chapters: list[Path], folder: Path | None = None) -> dict[Path, object]:
    """Each chapter's entry in the execution cache (a jupyter-cache ``NbCacheRecord``: ``pk``,
    ``created``, ``data``), looked up as the build looks it up, by the hash of its code; None for a
    chapter whose code is not cached. ``folder``: the cache (default: this book's)."""
    import jupytext
    from jupyter_cache import get_cache

    cache = get_cache(folder or cache_folder())
    out = {}
    for path in chapters:
        try:
            out[path] = cache.match_cache_notebook(jupytext.read(path))
        except KeyError:
            out[path] = None
    return out


def pending(chapters: list[Path], folder: Path | None = None) -> list[Path]:
    """The chapters whose code is not in the execution cache yet."""
    return [path for path, record in cached(chapters, folder).items() if record is None]


def plan(chapters: list[Path], second_backend: bool, folder: Path | None = None,
         root: Path = ROOT) -> list[tuple[Path, str]]:
    """(chapter, backend) jobs, longest first; the second backend for the network chapters only, those
    without a matching record of a pass (:func:`second_backend_passed`)."""
    jobs = [(p, "default") for p in pending(chapters, folder)]
    if second_backend:
        jobs += [(p, "sse4.2") for p in chapters
                 if p.stem in NETWORK_CHAPTERS and not second_backend_passed(p, "sse4.2", root)]
    return sorted(jobs, key=lambda job: -EXPECTED_SECONDS.get(job[0].stem, 10))


def run(chapters: list[Path], *, jobs: int = 2, second_backend: bool = False,
        folder: Path | None = None, root: Path = ROOT) -> list[dict]:
    """Execute what ``plan`` lists, ``jobs`` at a time; cache the default backend's results in
    ``folder`` (default: this book's execution cache); record the second backend's passes."""
    folder = folder or cache_folder()
    work = plan(chapters, second_backend, folder, root)
    by_stem = {p.stem: p for p in chapters}
    keys = {p.stem: second_backend_key(p, b, root) for p, b in work if b != "default"}  # the code that runs
    for path in chapters if second_backend else []:   # plan left it out: its recorded pass matches
        if path.stem in NETWORK_CHAPTERS and path.stem not in keys:
            print(f"[execute] {path.stem:<28} sse4.2   passed before with this code, package and processor: "
                  "not run again", flush=True)
    results = []
    if not work:
        return results
    print(f"[execute] {len(work)} chapter runs, {jobs} at a time: "
          + ", ".join(f"{p.stem} ({b})" for p, b in work), flush=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(_execute, str(p), b) for p, b in work]
        for future in futures:
            result = future.result()
            if result["backend"] == "default" and result["error"] is None:
                result["error"] = _cache(by_stem[result["chapter"]], result["notebook"], result["seconds"], folder)
            elif result["error"] is None:
                _record_pass(by_stem[result["chapter"]], result, keys[result["chapter"]], root)
            result.pop("notebook")
            status = "ok" if result["error"] is None else "FAILED"
            print(f"[execute] {result['chapter']:<28} {result['backend']:<8} {result['seconds']:7.1f} s  {status}",
                  flush=True)
            results.append(result)
    return results


def summary(results: list[dict]) -> str:
    """The timing table, then every failure in full."""
    lines = ["", "chapter execution (seconds):", f"  {'chapter':<28} {'backend':<8} {'seconds':>8}  outcome"]
    for r in sorted(results, key=lambda r: (r["chapter"], r["backend"])):
        lines.append(f"  {r['chapter']:<28} {r['backend']:<8} {r['seconds']:8.1f}  "
                     + ("ok" if r["error"] is None else "FAILED"))
    for r in results:
        if r["error"]:
            lines += ["", f"=== {r['chapter']} failed under the {r['backend']} backend "
                          f"({BACKENDS[r['backend']] or 'XLA defaults'}) ===", r["error"][-6000:]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", type=Path, help="default: every chapter of _toc.yml")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--second-backend", action="store_true")
    parser.add_argument("--report", type=Path)
    parser.add_argument("--root", type=Path, default=ROOT, help="the book's folder (default: this repository)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    root = args.root.resolve()
    if not (root / "_toc.yml").is_file() or not (root / "_config.yml").is_file():
        parser.error(f"--root {root} holds no book: it needs _config.yml and _toc.yml")
    chapters = [p.resolve() for p in args.chapters] or toc_chapters(root)
    missing = [str(p) for p in chapters if not p.exists()]
    if missing:
        parser.error(f"no such chapter: {', '.join(missing)}")
    results = run(chapters, jobs=args.jobs, second_backend=args.second_backend, folder=cache_folder(root),
                  root=root)
    if results:
        print(summary(results), flush=True)
    else:
        print("[execute] every chapter is in the execution cache: nothing to execute", flush=True)
    if args.report:                             # written even when empty: it says what ran this time
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(results, indent=1))
    return 1 if any(r["error"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
