"""One chapter, checked while writing it: lint its directives, then execute it top to bottom.

:func:`lint_chapter` finds what the strict book build would reject but executing the chapter alone
would not: a ``{code-cell}`` nested in a ``{solution}`` or ``{exercise}`` directive (not executed,
and an error in the build). :func:`check_chapter` lints, then runs every cell in a fresh kernel
(nbclient), in the chapter's folder, with no book build: a quick answer to "does it still run?".
``python3 dev.py check book/NN_name.md`` calls it (``python -m pfcourse_instructor check-chapter``).

Book: all chapters.
"""
from __future__ import annotations

import re
from pathlib import Path

OPENING = re.compile(r"^(:{3,}|`{3,})\{([\w-]+)\}")


def lint_chapter(path: str | Path) -> list[str]:
    """Problems the strict build would report that executing alone would not catch (empty = none).

    A ``{code-cell}`` nested inside a ``{solution}`` or ``{exercise}`` directive is not executed
    and fails the build; sphinx-exercise's gated form takes code cells between its two halves:
    ``:::{solution-start} label`` / ``:class: dropdown`` / ``:::`` ... cells ... ``:::{solution-end}`` / ``:::``.
    """
    path = Path(path)
    problems, stack = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        opening = OPENING.match(stripped)
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


def check_chapter(path: str | Path, *, timeout: float = 1800, lint_only: bool = False) -> list[str]:
    """Lint one MyST chapter, then execute it top to bottom in a fresh kernel; its problems (empty = ok).

    The kernel runs in the chapter's folder (as the book build runs it); ``timeout`` is per cell.
    Execution stops at the first failing cell, whose traceback is the problem reported.
    """
    path = Path(path).resolve()
    problems = lint_chapter(path)
    if problems or lint_only:
        return problems
    import jupytext
    import nbclient

    nb = jupytext.read(path)
    client = nbclient.NotebookClient(nb, timeout=int(timeout), kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except Exception as err:          # CellExecutionError, CellTimeoutError, DeadKernelError
        return [f"{path}: {type(err).__name__}: {err}"]
    return []
