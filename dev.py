#!/usr/bin/env python3
"""The project's two commands, with nothing but Python 3.11 on the machine.

    python3 dev.py book    # set up .venv (pinned requirements.txt + pfcourse) and build the book
    python3 dev.py test    # set up the same .venv and run the test suite (which builds the book)

Helpers for authors (not needed on a fresh machine):

    python3 dev.py check book/03_principal_flow.md   # execute one chapter top to bottom, no build
    python3 dev.py env                               # only set up .venv
    python3 dev.py notebooks                         # regenerate notebooks/ (Colab) from book/ and coursework/
    python3 dev.py book --hide-solutions             # the book without exercise solutions (a term that assigns them)
    python3 dev.py pdf                               # the whole book as one PDF (needs xelatex and latexmk)

The book is built strictly (``-W -n --keep-going``: any warning or failing cell fails the build)
into ``_build/html``. Executed notebooks are cached in ``_build/.jupyter_cache``, so a rebuild after
editing one chapter re-executes that chapter alone.
"""
from __future__ import annotations

import hashlib
import os
import re
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
    for name in ("requirements.txt", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_env() -> None:
    """Create .venv and install the pinned requirements and pfcourse (editable), once per change."""
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
    subprocess.run(pip + ["--no-deps", "-e", str(ROOT)], check=True)
    STAMP.write_text(wanted)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    env.pop("MPLBACKEND", None)  # the kernels must use the inline backend, or figures vanish from the book
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def build_book(extra: list[str] | None = None, log: Path | None = None) -> int:
    """Build the whole book strictly into _build/html; return the exit code (output also to ``log``)."""
    cmd = [str(BIN / "jupyter-book"), "build", str(ROOT), "--path-output", str(ROOT),
           "--config", str(ROOT / "_config.yml"), "--toc", str(ROOT / "_toc.yml"),
           "-W", "-n", "--keep-going", *(extra or [])]
    print("[dev] " + " ".join(cmd), flush=True)
    if log is None:
        return subprocess.run(cmd, cwd=ROOT, env=_env()).returncode
    with subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc, open(log, "w") as out:
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
    return proc.returncode


def lint_chapter(path: Path) -> list[str]:
    """Problems the strict build would report that executing alone would not catch.

    A ``{code-cell}`` nested inside a ``{solution}`` or ``{exercise}`` directive is not executed
    and fails the build; sphinx-exercise's gated form takes code cells between its two halves:
    ``:::{solution-start} label`` / ``:class: dropdown`` / ``:::`` ... cells ... ``:::{solution-end}`` / ``:::``.
    """
    problems, stack = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        opening = re.match(r"^(:{3,}|`{3,})\{([\w-]+)\}", stripped)
        if opening:
            fence, name = opening.groups()
            if name == "code-cell" and any(n in ("solution", "exercise") for _, n in stack):
                problems.append(
                    f"{path}:{number}: a code-cell nested in a {{{stack[-1][1]}}} directive is not executed "
                    "and fails the strict build; use the gated form {solution-start}/{solution-end} "
                    "(or {exercise-start}/{exercise-end}) with the code cells between them.")
            if name != "code-cell":
                stack.append((fence, name))
            continue
        if stack and re.fullmatch(re.escape(stack[-1][0][0]) + "{%d,}" % len(stack[-1][0]), stripped):
            stack.pop()
    return problems


def check_chapter(path: str) -> int:
    """Execute one MyST chapter top to bottom in a fresh kernel (fast feedback while writing)."""
    problems = lint_chapter(Path(path))
    if problems:
        print("\n".join(problems))
        return 1
    code = (
        "import sys, jupytext, nbclient\n"
        "nb = jupytext.read(sys.argv[1])\n"
        "nbclient.NotebookClient(nb, timeout=1800, kernel_name='python3',"
        " resources={'metadata': {'path': sys.argv[2]}}).execute()\n"
        "print('[dev] executed', sys.argv[1], 'without errors')\n"
    )
    target = Path(path).resolve()
    return subprocess.run([str(PY), "-c", code, str(target), str(target.parent)],
                          cwd=ROOT, env=_env()).returncode


def build_pdf(extra: list[str] | None = None) -> int:
    """The whole book as one PDF, _build/latex/book.pdf (xelatex; reuses the execution cache)."""
    cmd = [str(BIN / "jupyter-book"), "build", str(ROOT), "--path-output", str(ROOT),
           "--config", str(ROOT / "_config.yml"), "--toc", str(ROOT / "_toc.yml"),
           "--builder", "pdflatex", "--keep-going", *(extra or [])]
    print("[dev] " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=_env()).returncode


def generate_notebooks(extra: list[str]) -> int:
    """Regenerate notebooks/ (chapter notebooks and student assignments) from their sources."""
    cmd = [str(PY), "-m", "pfcourse.coursework", "notebooks", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=_env()).returncode


def run_tests(extra: list[str]) -> int:
    cmd = [str(PY), "-m", "pytest", *extra]
    print("[dev] " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=_env()).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"book", "test", "check", "env", "notebooks", "pdf"}:
        print(__doc__)
        return 2
    ensure_env()
    what, rest = argv[0], argv[1:]
    if what == "book":
        if "--hide-solutions" in rest:       # read by pfcourse.coursework.sphinx_ext
            rest = [a for a in rest if a != "--hide-solutions"]
            os.environ["PFCOURSE_HIDE_SOLUTIONS"] = "1"
        return build_book(rest)
    if what == "notebooks":
        return generate_notebooks(rest)
    if what == "pdf":
        return build_pdf(rest)
    if what == "test":
        return run_tests(rest)
    if what == "check":
        if not rest:
            print("usage: python3 dev.py check book/CHAPTER.md")
            return 2
        return max(check_chapter(p) for p in rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
