#!/usr/bin/env python3
"""The project's two commands, with nothing but Python 3.11 on the machine.

    python3 dev.py book    # set up .venv (pinned requirements.txt + pfcourse) and build the book
    python3 dev.py test    # set up the same .venv and run the test suite (which builds the book)

Any order, any number of times: each command re-executes only the chapters whose code changed.

    python3 dev.py test --quick   # the quick loop: the package's unit tests only, no book
                                  # build, chapter or notebook execution, browser or grading

Helpers for authors (not needed on a fresh machine):

    python3 dev.py check book/03_principal_flow.md   # lint one chapter, execute it top to bottom, no build
    python3 dev.py env                               # only set up .venv
    python3 dev.py notebooks                         # regenerate notebooks/ (Colab) from book/ and coursework/
    python3 dev.py book --all-solutions              # every exercise's solution (by default a graded one's is left out)
    python3 dev.py book --hide-solutions             # no exercise's solution
    python3 dev.py pdf                               # the whole book as one PDF (needs xelatex and latexmk)
    python3 dev.py gpu [--dry-run]                   # on an NVIDIA GPU machine: CUDA jax, chapter 6, the EoS
                                                     # player and benchmark on the GPU, one table (<= 8 min)

The book is built strictly (``-W -n --keep-going``: any warning or failing cell fails the build)
into ``_build/html``. Executed notebooks are cached in ``_build/.jupyter_cache``, so a rebuild after
editing one chapter's code re-executes that chapter alone, and a prose edit none. The build reads and
executes only the pages of ``_toc.yml``, whatever else lies in the checkout (``_config.yml``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".pfcourse-requirements.sha256"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"


def _requirements_hash() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "pyproject.toml", "instructor/pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_env() -> None:
    """Create .venv and install the pinned requirements, pfcourse and the instructor's tool
    (``instructor/``, :mod:`pfcourse_instructor`), both editable, once per change."""
    wanted = _requirements_hash()
    if PY.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    if not PY.exists():
        print(f"[dev] creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True, clear=True)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    print("[dev] installing requirements.txt (pinned) ...", flush=True)
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + ["-r", str(ROOT / "requirements.txt")], check=True)
    builds = [ROOT / "build", ROOT / "instructor" / "build"]
    existed = [b.exists() for b in builds]
    subprocess.run(pip + ["--no-deps", "-e", str(ROOT)], check=True)
    subprocess.run(pip + ["--no-deps", "-e", str(ROOT / "instructor")], check=True)   # the instructor's tool
    for build, did_exist in zip(builds, existed):
        if not did_exist:                      # setuptools may leave build/ behind: the commands leave nothing
            shutil.rmtree(build, ignore_errors=True)
    STAMP.write_text(wanted)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    env.pop("MPLBACKEND", None)  # the kernels must use the inline backend, or figures vanish from the book
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(_compilation_cache_env(env))
    return env


def _compilation_cache_env(env: dict[str, str]) -> dict[str, str]:
    """JAX's persistent compilation cache for every process the commands start (chapters, tests, the
    CLI): the folder of ``pfcourse._cache.compilation_cache_dir`` (``~/.cache/pfcourse/jax``, or
    ``$PFCOURSE_JAX_CACHE``; ``PFCOURSE_JAX_CACHE=off`` turns it off). JAX's key covers the program,
    the jax/jaxlib versions, the backend and ``XLA_FLAGS``, so the second backend never reads the
    first's programs. The grader's sandbox does not pass these variables to students' processes."""
    if env.get("PFCOURSE_JAX_CACHE") == "off" or "JAX_COMPILATION_CACHE_DIR" in env:
        return {}
    spec = importlib.util.spec_from_file_location("_pfcourse_cache", ROOT / "pfcourse" / "_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)                  # stdlib only at import: no jax needed here
    folder = module.compilation_cache_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        print(f"[dev] no JAX compilation cache: {folder} cannot be created ({err})", flush=True)
        return {}
    return {"JAX_COMPILATION_CACHE_DIR": str(folder), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.1",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
            # no XLA-side caches: their folder enters JAX's key, and a copied cache would never hit
            "JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES": module.XLA_CACHES}


def execute_chapters(second_backend: bool = False, report: Path | None = None, book: Path = ROOT) -> int:
    """Execute each chapter of ``book``'s _toc.yml not yet in its execution cache once, two at a time
    (tools/execute.py).

    With ``second_backend`` the chapters that train networks also run under a second floating-point
    backend (``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2``), checked but not cached for the book; a pass is
    recorded and repeated only when the chapter's code, the package or the machine changed. Prints a timing table.
    """
    cmd = [str(PY), str(ROOT / "tools" / "execute.py"), "--jobs", "2", "--root", str(book)]
    cmd += ["--second-backend"] if second_backend else []
    cmd += ["--report", str(report)] if report else []
    return subprocess.run(cmd, cwd=book, env=_env()).returncode


def jupyter_book_command(book: Path, *extra: str, strict: bool = True) -> list[str]:
    """The one Jupyter Book command line: build ``book`` (a folder with _config.yml and _toc.yml) into
    ``book/_build``; ``strict`` adds ``-W -n`` (a warning or a broken reference fails the build)."""
    return [str(BIN / "jupyter-book"), "build", str(book), "--path-output", str(book),
            "--config", str(book / "_config.yml"), "--toc", str(book / "_toc.yml"),
            *(["-W", "-n"] if strict else []), "--keep-going", *extra]


def build_book(extra: list[str] | None = None, log: Path | None = None, second_backend: bool = False,
               report: Path | None = None, book: Path = ROOT) -> int:
    """Execute the chapters (:func:`execute_chapters`), then build the book strictly into _build/html.

    Returns the exit code; the build's output also goes to ``log``, and the executions this call made
    to ``report`` (JSON; none when every chapter's code was cached). The build itself finds every
    chapter in the execution cache and only renders. ``book``: another book's folder (the tests'
    throw-away books), built the same way.
    """
    report = report or book / "_build" / "execution-report.json"
    report.unlink(missing_ok=True)
    code = execute_chapters(second_backend, report, book)
    results = json.loads(report.read_text()) if report.exists() else []
    if any(r["error"] and r["backend"] == "default" for r in results) or (code and not results):
        print("[dev] a chapter failed to execute (see above): the book was not built", flush=True)
        return code or 1
    cmd = jupyter_book_command(book, *(extra or []))
    print("[dev] " + " ".join(cmd), flush=True)
    if log is None:
        return subprocess.run(cmd, cwd=book, env=_env()).returncode or code
    with subprocess.Popen(cmd, cwd=book, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc, open(log, "w") as out:
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
    return proc.returncode or code


def check_chapter(path: str) -> int:
    """Lint one MyST chapter's directives and execute it top to bottom in a fresh kernel, no build
    (fast feedback while writing): ``python -m pfcourse_instructor check-chapter``."""
    cmd = [str(PY), "-m", "pfcourse_instructor", "check-chapter", str(Path(path).resolve())]
    return subprocess.run(cmd, cwd=ROOT, env=_env()).returncode


def build_pdf(extra: list[str] | None = None) -> int:
    """The whole book as one PDF, _build/latex/book.pdf (xelatex; reuses the execution cache)."""
    cmd = jupyter_book_command(ROOT, "--builder", "pdflatex", *(extra or []), strict=False)
    print("[dev] " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=_env()).returncode


def generate_notebooks(extra: list[str]) -> int:
    """Regenerate notebooks/ (chapter notebooks and student assignments) from their sources."""
    cmd = [str(PY), "-m", "pfcourse_instructor", "notebooks", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=_env()).returncode


def ensure_apt_package(package: str, found, needed_by: str) -> str | None:
    """The path ``found()`` returns; when it returns None, Debian's ``package`` is installed with
    apt-get if we are root, else a message says how. Returns the path, or None."""
    if found():
        return found()
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"[dev] installing {package} (apt-get) for {needed_by} ...", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env)
        if found():
            return found()
    print(f"[dev] {package} is missing, and {needed_by} needs it: install it "
          f"(Debian: `sudo apt-get install {package}`) and run the tests again", flush=True)
    return None


def ensure_chromium() -> str | None:
    """Headless Chromium for tests/book_browser.py (Debian's ``chromium``), see :func:`ensure_apt_package`."""
    return ensure_apt_package("chromium", lambda: shutil.which("chromium") or shutil.which("chromium-browser"),
                              "tests/book_browser.py")


#: The tests of ``python3 dev.py test --quick``: the package's unit tests, without a book build, the
#: chapters' or notebooks' executions, the browser, grading, or the lowest versions (markers: pyproject.toml
#: and tests/conftest.py, which marks whole test files by name).
QUICK_TESTS = "not book and not lowest and not grading and not slow"


def ensure_bwrap() -> str | None:
    """bubblewrap (``bwrap``), the grader's sandbox (instructor/pfcourse_instructor/sandbox.py), which
    raises a clear error without it; see :func:`ensure_apt_package`."""
    return ensure_apt_package("bubblewrap", lambda: shutil.which("bwrap"), "the grader's sandbox (and its tests)")


def run_tests(extra: list[str]) -> int:
    """pytest on two workers, a test file per worker at a time: one builds the book (tests/test_book.py),
    the other runs the rest. ``--quick`` in ``extra``: only :data:`QUICK_TESTS`."""
    quick = ["-m", QUICK_TESTS] if "--quick" in extra else []
    extra = [a for a in extra if a != "--quick"]
    parallel = [] if any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in extra) \
        else ["-n", "2", "--dist", "loadfile"]
    cmd = [str(PY), "-m", "pytest", *parallel, *quick, *extra]
    print("[dev] " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=_env()).returncode


def _untracked() -> set[str]:
    """Files git does not track and does not ignore (none when this is not a git checkout)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return set()
    return {line[3:] for line in out.splitlines() if line.startswith("??")}


def _left_behind(before: set[str]) -> int:
    """The README's commands leave nothing untracked: 1 (and the list) if this run did."""
    new = sorted(_untracked() - before)
    if new:
        print("[dev] this command left untracked files behind (ignore or remove them in dev.py):\n  "
              + "\n  ".join(new), flush=True)
    return 1 if new else 0


def gpu(args: list[str]) -> int:
    """The GPU path (benchmarks/gpu_check.py): install the CUDA build of the pinned jax into .venv, then
    chapter 6, the EoS player's GPU setting and the EoS benchmark's gpu-full on the GPU; one table, ~8 min.
    ``--dry-run``: the same on the CPU at tiny sizes, no install, no download (about a minute)."""
    cmd = [str(PY), str(ROOT / "benchmarks" / "gpu_check.py"), *args]
    print("[dev] " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=_env()).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"book", "test", "check", "env", "notebooks", "pdf", "gpu"}:
        print(__doc__)
        return 2
    before = _untracked()
    ensure_env()
    what, rest = argv[0], argv[1:]
    if what == "book":
        for flag, mode in (("--hide-solutions", "none"), ("--all-solutions", "all")):
            if flag in rest:                 # PFCOURSE_SOLUTIONS, read by pfcourse_instructor.sphinx_ext
                rest = [a for a in rest if a != flag]
                os.environ["PFCOURSE_SOLUTIONS"] = mode
        return build_book(rest) or _left_behind(before)
    if what == "gpu":
        return gpu(rest)
    if what == "notebooks":
        return generate_notebooks(rest)
    if what == "pdf":
        return build_pdf(rest)
    if what == "test":
        ensure_bwrap()                       # the grader's sandbox, which fails clearly without it
        if "--quick" not in rest:
            ensure_chromium()                # for tests/book_browser.py, which fails clearly without it
        return run_tests(rest) or _left_behind(before)
    if what == "check":
        if not rest:
            print("usage: python3 dev.py check book/CHAPTER.md")
            return 2
        return max(check_chapter(p) for p in rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
