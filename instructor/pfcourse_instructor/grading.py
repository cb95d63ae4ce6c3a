"""The autograder: a folder of submitted notebooks in, one CSV of scores per question out.

How one submission is graded (:func:`grade_notebook`):

1. A fresh kernel runs the assignment's own setup cells (so a student who edited or deleted them
   is graded on the real setup), then every code cell of the submission in order, except its
   install cell, its copies of the setup cells and its public-check cells. Each cell has a time
   limit: a cell that runs past it is interrupted, and if the kernel does not recover, or the code
   crashes the kernel, the kernel is restarted and the cells that had succeeded are replayed
   (:class:`~.runner.KernelSession`). The other questions go on.
2. For each question, its public and hidden tests, read from the instructor source (never from the
   submission), run in a copy of the notebook's namespace, each with the same time limit.
3. A question scores its points if every test passes and zero otherwise, with a reason:
   the first failing test's error, plus what went wrong in the question's own cells (an error, a
   time limit, a crash, a missing answer cell).

Each submission is graded in its own process with an overall time limit (:func:`grade_folder`), so
nothing a submission does stops the others from being graded.

Book: none (tooling for the coursework).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat

from .assignments import PUBLIC_MARKER, QUESTION_HEADING, Assignment, load_assignment
from .common import repository_root
from .runner import KernelSession, Outcome

FIELDS = ["submission", "assignment", "question", "score", "max_score", "status", "reason"]


@dataclass
class QuestionResult:
    submission: str
    assignment: str
    question: str
    score: float
    max_score: float
    status: str          # passed | failed | not-answered | error | timeout | crashed | missing | not-graded
    reason: str = ""


def _test_code(source: str, name: str) -> str:
    """Run a test in a copy of the user namespace, so tests cannot change the student's state."""
    return ("__pfcourse_namespace = dict(globals())\n"
            f"exec(compile({source!r}, {name!r}, 'exec'), __pfcourse_namespace)\n"
            "del __pfcourse_namespace")


def _student_cells(nb: nbformat.NotebookNode, assignment: Assignment):
    """The submission's code cells the grader runs, each with the question it belongs to.

    Questions are found from cell metadata and, where a front end dropped it, from the
    ``## Question k`` headings, so a notebook edited in any tool can be graded.
    """
    setup = {source.strip() for source in assignment.setup}
    labels = {q.number: q.label for q in assignment.questions}
    current: str | None = None
    out = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("pfcourse", {})
        if cell.cell_type == "markdown":
            heading = QUESTION_HEADING.search(cell.source)
            if meta.get("question"):
                current = meta["question"]
            elif heading:
                current = labels.get(int(heading.group(1)), current)
            continue
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        source = cell.source
        skip = (meta.get("role") in ("install", "setup", "public-tests")
                or source.lstrip().startswith(PUBLIC_MARKER)          # metadata dropped by the editor
                or ("pip" in source and "pfcourse @ git+" in source)
                or source.strip() in setup)
        if not skip:
            out.append((meta.get("question") or current, source))
    return out


def grade_notebook(path: str | Path, assignment: Assignment, *, cell_timeout: float = 120) -> list[QuestionResult]:
    """Grade one submitted notebook (in this process; :func:`grade_folder` isolates each one)."""
    path = Path(path)
    name = path.name

    def result(q, score, status, reason=""):
        return QuestionResult(name, assignment.name, q.label, score, q.points, status, reason)

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:     # not JSON, not a notebook
        return [result(q, 0, "not-graded", f"the file is not a readable notebook: {err}"[:300])
                for q in assignment.questions]
    cells = _student_cells(nb, assignment)
    notes: dict[str, list[str]] = {q.label: [] for q in assignment.questions}
    crashed_in: dict[str, str] = {}
    with KernelSession(cell_timeout=cell_timeout) as kernel:
        for source in assignment.setup:
            outcome = kernel.run(source)
            if not outcome.ok:
                raise RuntimeError(f"the setup of {assignment.name} fails: {outcome.summary()}")
        for number, (label, source) in enumerate(cells, 1):
            outcome = kernel.run(source)
            if outcome.ok or label not in notes:
                continue
            notes[label].append(f"your cell {number}: {outcome.summary()}")
            if outcome.status in ("timeout", "crashed"):
                crashed_in[label] = outcome.status
        answered = {label for label, _ in cells}
        results = []
        for q in assignment.questions:
            tests = [("public", n, s) for n, s in enumerate(q.public_tests, 1)] + \
                [("hidden", n, s) for n, s in enumerate(q.hidden_tests, 1)]
            failure: tuple[str, Outcome] | None = None
            for kind, number, source in tests:
                outcome = kernel.run(_test_code(source, f"<{kind} test {number} of {q.label}>"), remember=False)
                if not outcome.ok:
                    failure = (f"{kind} test {number}", outcome)
                    break
            if failure is None:
                results.append(result(q, q.points, "passed", "; ".join(notes[q.label])))
                continue
            which, outcome = failure
            reasons = list(notes[q.label])
            if q.label not in answered:
                reasons.insert(0, "no answer cell for this question (deleted?)")
            reasons.append(f"{which}: {outcome.summary()}")
            if q.label not in answered:
                status = "missing"
            elif q.label in crashed_in:
                status = crashed_in[q.label]
            elif outcome.ename == "NotImplementedError":
                status = "not-answered"
            elif outcome.status in ("timeout", "crashed"):
                status = outcome.status
            elif outcome.ename == "AssertionError":
                status = "failed"
            else:
                status = "error"
            results.append(result(q, 0, status, "; ".join(reasons)))
    return results


def find_assignment(path: Path, root: Path, assignment: str | Path | None) -> Assignment:
    """The assignment of a submission: given, else from its metadata, else from its file name."""
    if assignment is not None:
        candidate = Path(assignment)
        if not candidate.exists():
            candidate = root / "coursework" / f"{Path(str(assignment)).stem}.md"
        return load_assignment(candidate, root=root)
    try:
        meta = json.loads(path.read_text()).get("metadata", {}).get("pfcourse", {})
        if meta.get("assignment"):
            return load_assignment(root / "coursework" / f"{meta['assignment']}.md", root=root)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        pass
    for source in sorted((root / "coursework").glob("*.md")):
        if path.name.startswith(source.stem):
            return load_assignment(source, root=root)
    raise ValueError(f"cannot tell which assignment {path.name} is: pass --assignment coursework/NN_name.md")


def _grade_in_subprocess(path: Path, root: Path, assignment: Assignment, cell_timeout: float,
                         timeout: float) -> list[QuestionResult]:
    with tempfile.TemporaryDirectory(prefix="pfcourse-grade-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "pfcourse_instructor", "--root", str(root), "grade-one", str(path),
               "--out", str(out), "--assignment", str(assignment.path), "--cell-timeout", str(cell_timeout)]
        proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, text=True)
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)      # the grader and its kernel
            proc.communicate()
            return [QuestionResult(path.name, assignment.name, q.label, 0, q.points, "not-graded",
                                   f"the submission ran over the total time limit of {timeout:g} s")
                    for q in assignment.questions]
        if proc.returncode != 0 or not out.exists():
            tail = (log or "").strip().splitlines()[-1:] or ["no output"]
            return [QuestionResult(path.name, assignment.name, q.label, 0, q.points, "not-graded",
                                   f"the grader failed on this submission: {tail[0][:300]}")
                    for q in assignment.questions]
        return [QuestionResult(**row) for row in json.loads(out.read_text())]


def grade_folder(folder: str | Path, out: str | Path, *, root: str | Path | None = None,
                 assignment: str | Path | None = None, cell_timeout: float = 120, timeout: float = 1800,
                 jobs: int = 1) -> list[QuestionResult]:
    """Grade every ``*.ipynb`` in ``folder`` (each in its own process) and write the CSV ``out``.

    The CSV has one row per submission and question: ``submission, assignment, question, score,
    max_score, status, reason``.
    """
    root = repository_root(root)
    folder = Path(folder)
    submissions = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not submissions:
        raise FileNotFoundError(f"no .ipynb files in {folder}")

    def one(path: Path) -> list[QuestionResult]:
        try:
            found = find_assignment(path, root, assignment)
        except Exception as err:
            return [QuestionResult(path.name, "?", "?", 0, 0, "not-graded", str(err))]
        return _grade_in_subprocess(path, root, found, cell_timeout, timeout)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = [row for rows in pool.map(one, submissions) for row in rows]
    write_csv(rows, out)
    return rows


def write_csv(rows: list[QuestionResult], out: str | Path) -> None:
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:g}" if isinstance(v, float) else v) for k, v in asdict(row).items()})


def summary_table(rows: list[QuestionResult]) -> str:
    """A plain-text table: one line per submission, one column per question, and the total."""
    questions = list(dict.fromkeys(r.question for r in rows))
    by_sub: dict[str, dict[str, QuestionResult]] = {}
    for r in rows:
        by_sub.setdefault(r.submission, {})[r.question] = r
    width = max([len(s) for s in by_sub] + [10])
    lines = [f"{'submission':<{width}}  " + "  ".join(f"{q[:18]:>18}" for q in questions) + "   total"]
    for sub, got in by_sub.items():
        cells = [f"{got[q].score:g}/{got[q].max_score:g}" if q in got else "-" for q in questions]
        total = sum(r.score for r in got.values())
        best = sum(r.max_score for r in got.values())
        lines.append(f"{sub:<{width}}  " + "  ".join(f"{c:>18}" for c in cells) + f"   {total:g}/{best:g}")
    return "\n".join(lines)


def grade_one_to_json(path: str | Path, assignment: str | Path, out: str | Path, *,
                      root: str | Path | None = None, cell_timeout: float = 120) -> None:
    """Worker for :func:`grade_folder`: grade one notebook, write its rows as JSON."""
    found = load_assignment(assignment, root=root)
    start = time.monotonic()
    rows = grade_notebook(path, found, cell_timeout=cell_timeout)
    Path(out).write_text(json.dumps([asdict(r) for r in rows]))
    print(f"graded {Path(path).name} in {time.monotonic() - start:.1f} s", file=sys.stderr)
