"""The autograder: a folder of submitted notebooks in, one CSV of scores per question out.

Three kinds of process, so that the verdict is out of the student's reach:

- the **grader** (:func:`grade_folder`, the ``grade`` command) finds the notebooks, recognises each
  one's assignment by its content (:func:`match_assignment`), starts one worker per submission,
  kills whatever is left of it, and writes the CSV atomically once every submission's processes
  are gone. It exits non-zero when a submission could not be matched or graded.
- a **worker** (:func:`worker_main`, ``python -m pfcourse_instructor.grading``, its job on stdin)
  grades one submission (:func:`grade_notebook`): in the sandbox (:class:`~.sandbox.Sandbox`) the
  assignment's own setup cells run, then the student's cells (not its copies of setup or public
  checks), each under a time limit, then the probe of every hidden test. The sandbox is then
  killed, and the checks run in the worker on the probes' plain data (:func:`run_check`).
- the **student's process** (:mod:`.student`), in the sandbox: it never sees the hidden checks,
  only each probe's code, sent over a pipe when it is to run.

A question scores its points if every hidden test passes and zero otherwise, with a reason: the
first failing test's error, plus what went wrong in the question's own cells. Public tests are
hints for the student and do not score.

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

from .assignments import PUBLIC_MARKER, QUESTION_HEADING, Assignment, assignment_sources, defined_functions, load_assignment
from .common import repository_root
from .runner import Outcome
from .sandbox import Limits, Sandbox, become_subreaper, kill_processes, stragglers

FIELDS = ["submission", "assignment", "question", "score", "max_score", "status", "reason"]
MAX_NOTEBOOK_BYTES = 50 * 2**20


@dataclass
class QuestionResult:
    submission: str
    assignment: str
    question: str
    score: float
    max_score: float
    status: str          # passed | failed | not-answered | error | timeout | crashed | missing | not-graded
    reason: str = ""


# ---------------------------------------------------------------- which assignment, which cells


def read_submission(path: Path) -> nbformat.NotebookNode:
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"the file is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:     # not JSON, not a notebook
        raise ValueError(f"the file is not a readable notebook: {err}"[:300]) from None


def match_assignment(nb: nbformat.NotebookNode, candidates: list[Assignment], name: str = "") -> Assignment:
    """The assignment of a notebook, by content: its cells' question ids, else its answer functions' names.

    The file name only breaks ties. Raises ``ValueError`` with the reason if none or several match.
    """
    ids = {c.get("metadata", {}).get("pfcourse", {}).get("question") for c in nb.cells} - {None}
    functions = {f for c in nb.cells if c.cell_type == "code" for f in defined_functions(c.source)}
    scores = []
    for assignment in candidates:
        by_id = len(ids & {q.label for q in assignment.questions})
        by_function = len(functions & {f for q in assignment.questions for f in q.functions})
        scores.append(((by_id, by_function, name.startswith(assignment.name)), assignment))
    scores.sort(key=lambda item: item[0], reverse=True)
    if not scores or scores[0][0][:2] == (0, 0):
        raise ValueError("no question id and no answer function of any assignment in this notebook")
    if len(scores) > 1 and scores[0][0] == scores[1][0]:
        raise ValueError(f"matches {scores[0][1].name} and {scores[1][1].name} equally; grade it with --assignment")
    return scores[0][1]


def _student_cells(nb: nbformat.NotebookNode, assignment: Assignment) -> list[tuple[str | None, str]]:
    """The submission's code cells the grader runs, each with the question it belongs to.

    Questions are found from cell metadata; where a front end dropped it, from the ``## Question k``
    headings and from the answer functions a cell defines, so a notebook edited in any tool grades.
    """
    setup = {source.strip() for source in assignment.setup}
    labels = {q.number: q.label for q in assignment.questions}
    owner = {f: q.label for q in assignment.questions for f in q.functions}
    current: str | None = None
    out = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("pfcourse", {})
        meta = meta if isinstance(meta, dict) else {}
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
            defines = [owner[f] for f in defined_functions(source) if f in owner]
            out.append((meta.get("question") or (defines[0] if defines else current), source))
    return out


# ---------------------------------------------------------------- one submission (in a worker)


def run_check(check: str, probe_text: str, name: str, timeout: float) -> Outcome:
    """Run a hidden test's check on its probe, in a fresh namespace of this (the grader's) process."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import sympy as sp

    from .wire import WireError, decode

    def alarm(signum, frame):
        raise TimeoutError(f"the check ran over {timeout:g} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    start = time.monotonic()
    try:
        namespace = {"__name__": "__hidden_test__", "np": np, "sp": sp, "jax": jax, "jnp": jnp}
        namespace["probe"] = decode(probe_text)
        exec(compile(check, name, "exec"), namespace)
    except TimeoutError as err:
        return Outcome("timeout", "TimeoutError", f"{timeout:g}", str(err), time.monotonic() - start)
    except WireError as err:
        return Outcome("error", "ProbeError", f"the probe's value could not be read: {err}", "", time.monotonic() - start)
    except Exception as err:
        return Outcome("error", type(err).__name__, str(err), "", time.monotonic() - start)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return Outcome("ok", seconds=time.monotonic() - start)


def _run_student(sandbox: Sandbox, assignment: Assignment, cells) -> tuple[dict, dict, dict]:
    """Setup, the student's cells, then every probe; return notes, crashes and the probes' outcomes."""
    for source in assignment.setup:
        outcome = sandbox.run(source)
        if not outcome.ok:
            raise RuntimeError(f"the setup of {assignment.name} fails: {outcome.summary()}")
    notes: dict[str, list[str]] = {q.label: [] for q in assignment.questions}
    crashed_in: dict[str, str] = {}
    for number, (label, source) in enumerate(cells, 1):
        outcome = sandbox.run(source)
        if not outcome.ok and label in notes:
            notes[label].append(f"your cell {number}: {outcome.summary()}")
            if outcome.status in ("timeout", "crashed"):
                crashed_in[label] = outcome.status
    probes = {(q.label, n): sandbox.probe(test.probe, timeout=sandbox.cell_timeout)
              for q in assignment.questions for n, test in enumerate(q.hidden_tests, 1)}
    return notes, crashed_in, probes


def grade_notebook(path: str | Path, assignment: Assignment, *, cell_timeout: float = 120,
                   hide: list[Path] = (), limits: Limits | None = None,
                   namespaces: bool | None = None) -> list[QuestionResult]:
    """Grade one submitted notebook: student code in a sandbox, checks here (see the module's docstring)."""
    import pfcourse

    import pfcourse_instructor

    path = Path(path)

    def result(q, score, status, reason=""):
        return QuestionResult(path.name, assignment.name, q.label, score, q.points, status, reason[:1000])

    try:
        nb = read_submission(path)
    except (ValueError, OSError) as err:
        return [result(q, 0, "not-graded", str(err)) for q in assignment.questions]
    cells = _student_cells(nb, assignment)
    keep = [Path(sys.prefix), Path(sys.base_prefix), Path(pfcourse.__file__).parent,
            Path(pfcourse_instructor.__file__).parent]
    with tempfile.TemporaryDirectory(prefix="pfcourse-grade-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        os.chmod(tmp, 0o755)
        (work / "submission.ipynb").write_bytes(path.read_bytes())
        with Sandbox(work, hide=[*hide, assignment.path.parent], keep=keep, cell_timeout=cell_timeout,
                     limits=limits or Limits(), namespaces=namespaces) as sandbox:
            notes, crashed_in, probes = _run_student(sandbox, assignment, cells)
    answered = {label for label, _ in cells}
    results = []
    for q in assignment.questions:
        failure = None
        for number, test in enumerate(q.hidden_tests, 1):
            outcome, text = probes[(q.label, number)]
            if outcome.ok:
                outcome = run_check(test.check, text, f"<hidden test {number} of {q.label}>", cell_timeout)
                where = f"hidden test {number}"
            else:
                where = f"hidden test {number}, run in your notebook"
            if not outcome.ok:
                failure = (where, outcome)
                break
        if failure is None:
            results.append(result(q, q.points, "passed", "; ".join(notes[q.label])))
        else:
            results.append(result(q, 0, *_status(q.label, failure, notes, crashed_in, answered)))
    return results


def _status(label: str, failure: tuple[str, Outcome], notes, crashed_in, answered) -> tuple[str, str]:
    where, outcome = failure
    reasons = list(notes[label])
    if label not in answered:
        reasons.insert(0, "no answer cell for this question (deleted?)")
    reasons.append(f"{where}: {outcome.summary()}")
    if label not in answered:
        status = "missing"
    elif label in crashed_in:
        status = crashed_in[label]
    elif outcome.ename == "NotImplementedError" or "NotImplementedError(" in outcome.evalue:
        status = "not-answered"       # the stub raised, in the probe or as recorded in the probe
    elif outcome.status in ("timeout", "crashed"):
        status = outcome.status
    elif outcome.ename == "AssertionError":
        status = "failed"
    else:
        status = "error"
    return status, "; ".join(reasons)


def worker_main() -> int:
    """Grade the job read from stdin (JSON) and print its rows as JSON: run by :func:`grade_folder`."""
    become_subreaper()
    job = json.loads(sys.stdin.read())
    import jax

    jax.config.update("jax_enable_x64", True)      # as every assignment's setup; checks recompute in float64
    assignment = load_assignment(job["assignment"], root=job["root"])
    try:
        rows = grade_notebook(job["notebook"], assignment, cell_timeout=job["cell_timeout"],
                              hide=[Path(p) for p in job["hide"]], limits=Limits(**job["limits"]))
    finally:
        kill_processes([], os.getpid())
    sys.stdout.write(json.dumps([asdict(r) for r in rows]))
    return 0


# ---------------------------------------------------------------- a folder (the grader)


def load_candidates(root: Path, assignment: str | Path | list | None) -> list[Assignment]:
    """The assignments submissions may be: ``assignment`` (files or folders of them), else coursework/."""
    given = [] if assignment is None else assignment if isinstance(assignment, (list, tuple)) else [assignment]
    paths: list[Path] = []
    for item in given:
        item = Path(item).resolve()
        if item.is_dir():
            paths.extend(sorted(p for p in item.glob("*.md") if p.name[:1].isdigit()))
        elif item.exists():
            paths.append(item)
        elif (root / "coursework" / f"{item.stem}.md").exists():
            paths.append(root / "coursework" / f"{item.stem}.md")
        else:
            raise FileNotFoundError(f"no assignment {item}")
    return [load_assignment(p, root=root) for p in (paths or assignment_sources(root))]


def _hidden_folders(root: Path, folder: Path, out: Path, candidates: list[Assignment]) -> list[Path]:
    system = [Path(p) for p in ("/usr", "/lib", "/lib64", "/bin", "/etc", "/opt", "/proc", "/dev", "/sys")]
    wanted = [root, folder, out.parent, Path.home(), *(a.path.parent for a in candidates)]
    return sorted({p for p in wanted if p != Path("/") and not any(s == p or p in s.parents for s in system)})


def _grade_in_worker(path: Path, assignment: Assignment, job: dict, timeout: float) -> list[QuestionResult]:
    def not_graded(reason: str) -> list[QuestionResult]:
        return [QuestionResult(path.name, assignment.name, q.label, 0, q.points, "not-graded", reason[:1000])
                for q in assignment.questions]

    job = {**job, "notebook": str(path), "assignment": str(assignment.path)}
    proc = subprocess.Popen([sys.executable, "-m", "pfcourse_instructor.grading"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(json.dumps(job).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_processes([proc.pid], proc.pid)
        proc.kill()
        proc.communicate()
        return not_graded(f"the submission ran over the total time limit of {timeout:g} s")
    finally:
        kill_processes([proc.pid], proc.pid)
    try:
        return [QuestionResult(**row) for row in json.loads(out)]
    except (ValueError, TypeError):
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return not_graded(f"the grader failed on this submission: {tail[0][:300]}")


def grade_folder(folder: str | Path, out: str | Path, *, root: str | Path | None = None,
                 assignment: str | Path | list | None = None, cell_timeout: float = 120, timeout: float = 1800,
                 jobs: int = 1, limits: Limits | None = None) -> list[QuestionResult]:
    """Grade every ``*.ipynb`` in ``folder`` (each in its own worker and sandbox) and write the CSV ``out``.

    The CSV has one row per submission and question: ``submission, assignment, question, score,
    max_score, status, reason``; a submission that matches no assignment has one ``not-graded`` row.
    """
    root = repository_root(root)
    folder, out = Path(folder).resolve(), Path(out).resolve()
    submissions = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not submissions:
        raise FileNotFoundError(f"no .ipynb files in {folder}")
    candidates = load_candidates(root, assignment)
    become_subreaper()
    before = set(stragglers([], os.getpid()))
    job = {"root": str(root), "cell_timeout": cell_timeout, "limits": (limits or Limits()).__dict__,
           "hide": [str(p) for p in _hidden_folders(root, folder, out, candidates)]}

    def one(path: Path) -> list[QuestionResult]:
        start = time.monotonic()
        try:
            found = match_assignment(read_submission(path), candidates, path.name)
        except (ValueError, OSError) as err:
            return [QuestionResult(path.name, "?", "?", 0, 0, "not-graded", str(err))]
        rows = _grade_in_worker(path, found, job, timeout)
        print(f"graded {path.name} ({found.name}): {sum(r.score for r in rows):g}/{found.max_points:g} "
              f"in {time.monotonic() - start:.0f} s", flush=True)
        return rows

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = [row for rows in pool.map(one, submissions) for row in rows]
    left = [pid for pid in stragglers([], os.getpid()) if pid not in before]
    if left and kill_processes(left, os.getpid(), patience=10):
        raise RuntimeError(f"processes of the submissions survive: {left}; no CSV written")
    write_csv(rows, out)
    return rows


def write_csv(rows: list[QuestionResult], out: str | Path) -> None:
    """Write the CSV atomically: a temporary file in the same folder, renamed over ``out``."""
    out = Path(out)
    handle = tempfile.NamedTemporaryFile("w", dir=out.parent, prefix=f".{out.name}.", suffix=".tmp",
                                         newline="", delete=False)
    try:
        with handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:g}" if isinstance(v, float) else v) for k, v in asdict(row).items()})
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, out)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


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
    problems = [f"  {r.submission}: {r.reason}" for r in rows if r.status == "not-graded"]
    if problems:
        lines += ["not graded:", *dict.fromkeys(problems)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(worker_main())
