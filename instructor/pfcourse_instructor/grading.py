"""The autograder: a folder of submitted notebooks in, one CSV of scores per question out.

Three kinds of process, so that the verdict is out of the student's reach:

- the **grader** (:func:`grade_folder`, the ``grade`` command) finds the notebooks, recognises each
  one's assignment by its content (:func:`match_assignment`), starts one worker per submission,
  kills whatever is left of it, and writes the CSV atomically once every submission's processes
  are gone. It fails closed per submission, never for the class: whatever goes wrong reading
  (regular files only: :func:`read_submission_bytes`), matching, running or checking one
  submission is that submission's status and reason (:func:`_grade_one`), its row keyed by its
  path in the folder. It exits non-zero when a submission could not be matched or graded.
- a **worker** (:func:`grade_job`, a fresh process forked per submission by :mod:`.workers`)
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
import os
import signal
import stat
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import nbformat

from .assignments import PUBLIC_MARKER, QUESTION_HEADING, Assignment, assignment_sources, defined_functions, load_assignment
from .common import repository_root
from .runner import Outcome
from .sandbox import Limits, Sandbox, become_subreaper, kill_processes, require_sandbox, stragglers
from .workers import class_workers, run_worker

# What the checks import (coursework/*.md), and jupytext, which reads the assignment in each worker:
# imported once by the workers' zygote rather than by each worker (about 1.5 s of CPU per submission
# measured; pfcourse.data reads the digits without importing scikit-learn).
CHECK_MODULES = ("pfcourse.flows", "pfcourse.landscapes", "pfcourse.dal", "pfcourse.spectral",
                 "pfcourse.symbolic", "pfcourse.data", "pfcourse.models", "pfcourse.eos", "optax", "jupytext",
                 "jupytext.formats", "jupytext.myst")
# The workers' environment. Equinox's runtime errors (``error_if``, in pfcourse's DAL, flows and
# Krylov code) put a host callback into every program that has one, and JAX never stores such a
# program in its persistent cache: each worker compiled them again, about 1.2 s of CPU per
# submission of assignment 7 (measured). The checks are the instructor's code, run on values
# already checked by ``expect_*``; with ``EQX_ON_ERROR=nan`` an error there gives NaN instead,
# which every ``expect_*`` comparison refuses, so the question still fails closed. The students'
# sandboxes keep equinox's default (their errors are raised, with the message).
WORKER_ENV = {"EQX_ON_ERROR": "nan"}
FIELDS = ["submission", "assignment", "question", "score", "max_score", "status", "reason"]
MAX_NOTEBOOK_BYTES = 50 * 2**20
SETUP_TIMEOUT = 180.0       # seconds for the assignment's own setup cells (imports), whatever --cell-timeout
REFERENCE_CELL_TIMEOUT = 600.0  # seconds per cell of the reference solution's warm-up (_warm_jit_cache)
SKIPPED_FOLDERS = {".ipynb_checkpoints", "__MACOSX"}    # Jupyter's autosaves; macOS zips' resource forks
HIDDEN_RUN = 24      # characters: a run this long of a probe's code in a reason is hidden code, removed


@dataclass
class QuestionResult:
    submission: str      # the path relative to the submissions folder, odd characters escaped
    assignment: str
    question: str
    score: float
    max_score: float
    status: str          # passed | failed | not-answered | error | timeout | crashed | missing | not-graded
    reason: str = ""
    named_as: str = ""   # not in the CSV: the assignment the file name names, where content says another


class SubmissionError(ValueError):
    """A submission the grader cannot read or match. The message is written to the CSV as it is:
    it names what is wrong with the file, never quoting its content."""


# ---------------------------------------------------------------- reading one file, safely


def read_submission_bytes(path: str | Path, limit: int = MAX_NOTEBOOK_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``), refusing anything else.

    A symbolic link, named pipe, device, socket or folder called ``*.ipynb`` is refused by ``lstat``
    before it is opened, and the file is opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked again
    with ``fstat``: a pipe cannot hang the grader, ``/dev/zero`` cannot fill its memory, and a link
    cannot make it read (and quote in the CSV) a file elsewhere. Raises :class:`SubmissionError`.
    """
    try:
        before = os.lstat(path)
        if not stat.S_ISREG(before.st_mode):
            raise SubmissionError(f"{_file_kind(before.st_mode)}, not a regular file: only regular files "
                                  "are graded (copy the notebook itself into the folder)")
        flags = os.O_RDONLY
        for name in ("O_NOFOLLOW", "O_NONBLOCK", "O_CLOEXEC"):      # POSIX (lstat above guards elsewhere)
            flags |= getattr(os, name, 0)
        fd = os.open(path, flags)
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
                raise SubmissionError("the file was replaced while the grader opened it; grade it again")
            chunks, size = [], 0
            while size <= limit:
                chunk = os.read(fd, min(2**20, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
    except OSError as err:           # strerror only: str(err) would repeat the name
        raise SubmissionError(f"the file cannot be read: {err.strerror or type(err).__name__}") from None
    if size > limit:
        most = f"{limit // 2**20} MB" if limit >= 2**20 else f"{limit} bytes"
        raise SubmissionError(f"the file is larger than {most}, the most a notebook may have here")
    return b"".join(chunks)


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISDIR, "a folder"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")]
    return next((word for test, word in kinds if test(mode)), "a special file")


def parse_submission(data: bytes) -> nbformat.NotebookNode:
    """A notebook (as version 4) from a file's bytes, with every cell's ``source`` text and
    ``metadata`` a dict; else :class:`SubmissionError`, whose message quotes nothing of the file."""
    from nbformat.reader import NotJSONError, reads

    try:
        nb = nbformat.convert(reads(data.decode("utf-8-sig")), 4)    # no schema validation (Colab's files)
    except UnicodeDecodeError:
        raise SubmissionError("the file is not a readable notebook: not UTF-8 text") from None
    except NotJSONError as err:      # its message quotes the file: report the position only
        where = err.__cause__
        at = f" (line {where.lineno}, column {where.colno})" if hasattr(where, "lineno") else ""
        raise SubmissionError(f"the file is not a readable notebook: not JSON{at}") from None
    except Exception as err:         # nested too deeply, no nbformat version, not a dict, ...
        raise SubmissionError(f"the file is not a readable notebook ({type(err).__name__} "
                              "reading its JSON as a notebook)") from None
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        raise SubmissionError("the file is not a readable notebook: it has no list of cells")
    for number, cell in enumerate(cells, 1):
        source = cell.get("source", "") if isinstance(cell, dict) else None
        source = "".join(source) if isinstance(source, list) and all(isinstance(s, str) for s in source) else source
        if not isinstance(source, str) or not isinstance(cell.get("cell_type"), str):
            raise SubmissionError(f"the file is not a readable notebook: its cell {number} has no cell_type "
                                  "or no text as its source")
        cell["source"] = source
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"] = nbformat.NotebookNode()
    return nb


def read_submission(path: str | Path) -> nbformat.NotebookNode:
    """A submitted notebook, read safely (:func:`read_submission_bytes`, :func:`parse_submission`)."""
    return parse_submission(read_submission_bytes(path))


def find_submissions(folder: Path) -> tuple[list[Path], dict[Path, str]]:
    """Every ``*.ipynb`` under ``folder``, and the sub-folders that are not searched, with why.

    Links are not followed (a link named ``*.ipynb`` is listed, and refused when read, so it gets a
    row); Jupyter's checkpoints and macOS's ``__MACOSX`` are skipped. Sorted by their bytes' order.
    """
    found, skipped = [], {}

    def unreadable(err: OSError) -> None:
        skipped[Path(err.filename)] = f"the folder cannot be listed: {err.strerror or type(err).__name__}"

    for here, folders, files in os.walk(folder, onerror=unreadable, followlinks=False):
        for name in list(folders):
            path = Path(here, name)
            if name in SKIPPED_FOLDERS:
                folders.remove(name)
            elif path.is_symlink():        # os.walk lists a link to a folder among the folders
                folders.remove(name)
                if name.endswith(".ipynb"):
                    found.append(path)
                else:
                    skipped[path] = "a symbolic link to a folder: not followed (copy the folder in)"
        found += [Path(here, name) for name in files if name.endswith(".ipynb")]
    return sorted(found, key=os.fsencode), skipped


# ---------------------------------------------------------------- names, reasons: what the CSV says


def printable(text: str) -> str:
    """``text`` with what would garble a terminal, a CSV or its encoding as backslash escapes:
    undecodable bytes of a file name (``os.fsdecode``'s surrogates) as ``\\xNN``, control and
    format characters (newlines, NUL, right-to-left overrides) as ``\\n``, ``\\x00``, ``\\u202e``."""
    out = []
    for char in text:
        if 0xDC80 <= ord(char) <= 0xDCFF:
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            out.append(char if char.isprintable() else char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def submission_key(path: Path, folder: Path) -> str:
    """A submission's name in the CSV: its path relative to the submissions folder (``/``-separated),
    so that two students' ``03_principal_flow.ipynb`` are two rows; backslashes doubled, so that two
    files never get one name once :func:`printable` has escaped theirs."""
    return printable(path.relative_to(folder).as_posix().replace("\\", "\\\\"))


def hidden_runs(assignment: Assignment) -> frozenset[str]:
    """Every run of :data:`HIDDEN_RUN` characters of the assignment's probes, whitespace collapsed.

    The probes are the hidden code that reaches the student's process: an answer can find the one
    calling it and raise with its text, which would put it in the CSV (:func:`clean_reason`)."""
    runs = set()
    for q in assignment.questions:
        for test in q.hidden_tests:
            text = " ".join(test.probe.split())
            runs.update(text[i:i + HIDDEN_RUN] for i in range(len(text) - HIDDEN_RUN + 1))
    return frozenset(runs)


def clean_reason(reason: str, hidden: frozenset[str] = frozenset(), limit: int = 1000) -> str:
    """A reason as the CSV writes it: on one line, every run of a probe's code (``hidden``, from
    :func:`hidden_runs`) replaced by ``[hidden test code]``, escaped (:func:`printable`), cut at ``limit``."""
    text = " ".join(reason.split())
    covered = [False] * len(text)
    for i in range(len(text) - HIDDEN_RUN + 1):
        if text[i:i + HIDDEN_RUN] in hidden:
            covered[i:i + HIDDEN_RUN] = [True] * HIDDEN_RUN
    kept, previous = [], False
    for char, hide in zip(text, covered, strict=True):
        if not hide:
            kept.append(char)
        elif not previous:
            kept.append("[hidden test code]")
        previous = hide
    text = printable("".join(kept))
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------- which assignment, which cells


def _pfcourse_meta(cell) -> dict[str, str]:
    """The text values of a cell's ``pfcourse`` metadata that the grader reads (``question``, ``role``):
    a notebook may hold anything there (``"pfcourse": "x"`` is schema-valid)."""
    meta = cell.get("metadata", {})
    meta = meta.get("pfcourse", {}) if isinstance(meta, dict) else {}
    meta = meta if isinstance(meta, dict) else {}
    return {key: meta[key] for key in ("question", "role") if isinstance(meta.get(key), str)}


def match_assignment(nb: nbformat.NotebookNode, candidates: list[Assignment], name: str = "") -> Assignment:
    """The assignment of a notebook, by content: its cells' question ids, else its answer functions' names.

    The file name only breaks ties. Raises ``ValueError`` with the reason if none or several match.
    """
    ids = {_pfcourse_meta(c).get("question") for c in nb.cells} - {None}
    functions = {f for c in nb.cells if c.cell_type == "code" for f in defined_functions(c.source)}
    scores = []
    for assignment in candidates:
        by_id = len(ids & {q.label for q in assignment.questions})
        by_function = len(functions & {f for q in assignment.questions for f in q.functions})
        scores.append(((by_id, by_function, name.startswith(assignment.name)), assignment))
    scores.sort(key=lambda item: item[0], reverse=True)
    if not scores or scores[0][0][:2] == (0, 0):
        raise SubmissionError("no question id and no answer function of any assignment in this notebook")
    if len(scores) > 1 and scores[0][0] == scores[1][0]:
        raise SubmissionError(f"matches {scores[0][1].name} and {scores[1][1].name} equally; "
                              "grade it with --assignment")
    return scores[0][1]


def named_assignment(name: str, candidates: list[Assignment]) -> str:
    """The assignment a file name names (``Copy of 03_principal_flow (1).ipynb`` names
    ``03_principal_flow``; case, spaces and hyphens aside), or "" if it names none or several."""
    simple = "".join(c if c.isalnum() else "_" for c in name.lower())
    named = {a.name for a in candidates if a.name.lower() in simple}
    return named.pop() if len(named) == 1 else ""


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
        meta = _pfcourse_meta(cell)
        if cell.cell_type == "markdown":
            heading = QUESTION_HEADING.search(cell.source)
            if meta.get("question"):
                current = meta["question"]
            elif heading:            # int() refuses over 4,300 digits: "## Question 1111...1" is no question
                number = heading.group(1)
                current = labels.get(int(number) if len(number) < 10 else None, current)
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

    from . import expect
    from .wire import WireError, decode

    def alarm(signum, frame):
        raise TimeoutError(f"the check ran over {timeout:g} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    start = time.monotonic()
    try:
        namespace = {"__name__": "__hidden_test__", "np": np, "sp": sp, "jax": jax, "jnp": jnp,
                     **expect.namespace()}          # expect_close, ... (see coursework/README.md)
        namespace["probe"] = decode(probe_text)
        exec(compile(check, name, "exec"), namespace)
    except TimeoutError as err:
        return Outcome("timeout", "TimeoutError", f"{timeout:g}", str(err), time.monotonic() - start)
    except WireError as err:
        return Outcome("error", "ProbeError", f"the probe's value could not be read: {_message(err)}", "",
                       time.monotonic() - start)
    except Exception as err:         # RecursionError and MemoryError included: this question's error
        return Outcome("error", type(err).__name__, _message(err), "", time.monotonic() - start)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return Outcome("ok", seconds=time.monotonic() - start)


def _message(err: BaseException, limit: int = 300) -> str:
    """``str(err)`` cut at ``limit``, or a note if even that fails: the message of a check's error
    may hold the student's values, whose ``str`` can raise or run into the check's time limit."""
    try:
        text = str(err)
    except Exception:
        return f"({type(err).__name__} with a message that cannot be printed)"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _run_student(sandbox: Sandbox, assignment: Assignment, cells) -> tuple[dict, dict, dict]:
    """Setup, the student's cells, then every probe; return notes, crashes and the probes' outcomes."""
    for source in assignment.setup:          # the instructor's imports: a loaded machine's time, not a student's
        outcome = sandbox.run(source, timeout=max(sandbox.cell_timeout, SETUP_TIMEOUT))
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
                   limits: Limits | None = None, jit_cache: tuple[str, bool] | None = None,
                   notebook: nbformat.NotebookNode | None = None) -> list[QuestionResult]:
    """Grade one submitted notebook: student code in a sandbox, checks here (see the module's docstring).

    ``jit_cache``: (folder, writable) of a JAX compilation cache for the sandbox (see
    :func:`_warm_jit_cache`); ``notebook``: the notebook itself, then ``path`` only names it.
    """
    path = Path(path)

    def result(q, score, status, reason=""):
        return QuestionResult(path.name, assignment.name, q.label, score, q.points, status, reason[:1000])

    try:
        nb = read_submission(path) if notebook is None else notebook
    except (ValueError, OSError) as err:
        return [result(q, 0, "not-graded", str(err)) for q in assignment.questions]
    cells = _student_cells(nb, assignment)
    with Sandbox(nbformat.writes(nb).encode(), cell_timeout=cell_timeout, limits=limits or Limits(),
                 jit_cache=jit_cache) as sandbox:
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


def grade_job(job: dict) -> list[dict]:
    """Grade one job (in a worker, :mod:`.workers`): its rows as plain dicts."""
    become_subreaper()
    if job.get("jit_cache"):                        # the checks' programs: compiled once per class
        from pfcourse._cache import enable_compilation_cache

        enable_compilation_cache(Path(job["jit_cache"]) / "checks")
    assignment = load_assignment(job["assignment"], root=job["root"])
    student = (job["student_cache"], bool(job.get("reference"))) if job.get("student_cache") else None
    try:
        rows = grade_notebook(job["notebook"], assignment, cell_timeout=job["cell_timeout"],
                              limits=Limits(**job["limits"]), jit_cache=student,
                              notebook=reference_notebook(assignment) if job.get("reference") else None)
    finally:
        kill_processes([], os.getpid())
    return [asdict(r) for r in rows]


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


def reference_notebook(assignment: Assignment) -> nbformat.NotebookNode:
    """The assignment's own solution as a submission: every question's answer cells."""
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(source, metadata={"pfcourse": {"role": "answer", "question": q.label}})
        for q in assignment.questions for source in q.answers])


_WARM: dict[str, threading.Lock] = {}
WARM_UP_CPU: dict[str, float] = {}       # assignment -> CPU seconds of its reference's grading (the last class)
_WARM_LOCK = threading.Lock()


def _warm_jit_cache(assignment: Assignment, job: dict, timeout: float) -> str | None:
    """The folder of ``assignment``'s JAX compilation cache for the sandboxes, filled once per class.

    The first call grades the assignment's reference solution (:func:`reference_notebook`) in a
    sandbox that may write the folder; every submission's sandbox then reads it, read-only, so the
    programs a correct answer shares with the reference (a library call with the same shapes) are
    loaded instead of compiled. No submission writes it (one could plant programs for the next).
    """
    if not job.get("jit_cache"):
        return None
    folder = Path(job["jit_cache"]) / f"sandbox-{assignment.name}"
    with _WARM_LOCK:
        lock = _WARM.setdefault(str(folder), threading.Lock())
    with lock:
        if not folder.exists():
            folder.mkdir()
            os.chmod(folder, 0o777)          # written by the reference's sandbox, an unused user id
            warm = {**job, "notebook": "reference.ipynb", "assignment": str(assignment.path),
                    "student_cache": str(folder), "reference": True,     # trusted: compiling cold takes long
                    "cell_timeout": max(job["cell_timeout"], REFERENCE_CELL_TIMEOUT)}
            rows, problem = _run_worker(warm, timeout, WARM_UP_CPU, assignment.name)
            lost = [f"{r.question}: {r.status} {r.reason[:200]}" for r in rows or [] if r.score < r.max_score]
            print(f"reference solution of {assignment.name} (fills the compilation cache): "
                  f"{sum(r.score for r in rows or []):g}/{assignment.max_points:g}",
                  *([problem] if problem else []), *lost, sep="\n  ", flush=True)
    return str(folder)


def _run_worker(job: dict, timeout: float, cpu: dict | None = None,
                key: str = "") -> tuple[list[QuestionResult] | None, str]:
    """Grade ``job`` in a fresh worker (:func:`.workers.run_worker`): its rows, or None and why none;
    ``cpu[key]``: the worker's CPU seconds, its sandboxes' included."""
    answer, problem = run_worker(job, timeout)
    if answer and cpu is not None:
        cpu[key] = float(answer.get("cpu", 0.0))
    try:
        return ([QuestionResult(**row) for row in answer["rows"]], "") if answer else (None, problem)
    except (KeyError, TypeError):
        return None, "the grader failed on this submission: its worker's answer was malformed"


def _grade_in_worker(path: Path, assignment: Assignment, job: dict, timeout: float) -> list[QuestionResult]:
    """Grade ``path`` in a worker process of its own, its sandbox reading the assignment's warm cache."""
    cache = _warm_jit_cache(assignment, job, timeout)
    rows, problem = _run_worker({**job, "notebook": str(path), "assignment": str(assignment.path),
                                 "student_cache": cache}, timeout)
    if rows is None:
        return [QuestionResult(path.name, assignment.name, q.label, 0, q.points, "not-graded", problem[:1000])
                for q in assignment.questions]
    return rows


def check_output(out: Path) -> None:
    """Refuse an ``--out`` the CSV cannot be written to, before any grading (which may take an hour)."""
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder: name the CSV to write, e.g. {out / 'scores.csv'}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: the folder {out.parent} does not exist; create it "
                                "(mkdir -p) or write the CSV elsewhere")
    try:
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"):
            pass
    except OSError as err:
        raise PermissionError(f"--out {out}: cannot write in {out.parent} ({err.strerror}); "
                              "write the CSV elsewhere") from None


def _not_graded(key: str, reason: str) -> list[QuestionResult]:
    """The one row of a submission that could not be read, matched or graded."""
    return [QuestionResult(key, "?", "?", 0, 0, "not-graded", clean_reason(reason))]


def _grade_one(path: Path, key: str, candidates: list[Assignment], grade) -> list[QuestionResult]:
    """One submission's rows (``key``: its name in the CSV), whatever goes wrong: reading, matching
    and grading it (``grade(path, assignment)``, the worker) become its status and reason, never an
    exception that stops the class. Reasons are cleaned of the probes' code (:func:`clean_reason`);
    a file name naming another assignment than the content is noted (``named_as``, the reason)."""
    start = time.monotonic()
    try:
        found = match_assignment(read_submission(path), candidates, path.name)
        graded = grade(path, found)
    except SubmissionError as err:
        return _not_graded(key, str(err))
    except Exception as err:         # a bug of the grader's on this file: its row, the class goes on
        return _not_graded(key, f"the grader failed on this submission ({type(err).__name__}); grade it "
                                "again alone, and report it if it fails again")
    named = named_assignment(path.name, candidates)
    named = "" if named == found.name else named
    note = f"the file name names {named}, the notebook is {found.name}: graded as {found.name}" if named else ""
    hidden = hidden_runs(found)
    rows = [replace(r, submission=key, named_as=named,
                    reason=clean_reason("; ".join(filter(None, [note, r.reason])), hidden))
            for r in graded]
    print(f"graded {key} ({found.name}): {sum(r.score for r in rows):g}/{found.max_points:g} "
          f"in {time.monotonic() - start:.0f} s", flush=True)
    return rows


def grade_folder(folder: str | Path, out: str | Path, *, root: str | Path | None = None,
                 assignment: str | Path | list | None = None, cell_timeout: float = 120, timeout: float = 1800,
                 jobs: int = 1, limits: Limits | None = None) -> list[QuestionResult]:
    """Grade every ``*.ipynb`` in ``folder`` (each in its own worker and sandbox) and write the CSV ``out``.

    The CSV has one row per submission and question: ``submission`` (its path relative to
    ``folder``), ``assignment, question, score, max_score, status, reason``. A submission that
    cannot be read or matched has one ``not-graded`` row saying why, as has a sub-folder that cannot
    be searched; an error of the grader's on one submission is that submission's row (see
    :func:`_grade_one`). ``out``'s folder is checked before any grading.
    """
    root = repository_root(root)
    folder, out = Path(folder).resolve(), Path(out).resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of submissions")
    check_output(out)
    submissions, skipped = find_submissions(folder)
    if not submissions:
        raise FileNotFoundError(f"no .ipynb files in {folder}")
    candidates = load_candidates(root, assignment)
    become_subreaper()
    before = set(stragglers([], os.getpid()))
    require_sandbox()             # bwrap missing or unable to run here: one clear error, before any grading
    job = {"root": str(root), "cell_timeout": cell_timeout, "limits": (limits or Limits()).__dict__}

    def one(path: Path) -> list[QuestionResult]:
        return _grade_one(path, submission_key(path, folder), candidates,
                          lambda p, found: _grade_in_worker(p, found, job, timeout))

    with class_workers(f"{__name__}:grade_job", CHECK_MODULES, WORKER_ENV) as cache, ThreadPoolExecutor(max(1, jobs)) as pool:
        job["jit_cache"] = cache            # compiled programs shared by the class (_warm_jit_cache), then removed
        rows = [row for rows in pool.map(one, submissions) for row in rows]
    rows += [row for path, why in skipped.items() for row in _not_graded(submission_key(path, folder), why)]
    left = [pid for pid in stragglers([], os.getpid()) if pid not in before]
    if left and kill_processes(left, os.getpid(), patience=10):
        raise RuntimeError(f"processes of the submissions survive: {left}; no CSV written")
    write_csv(rows, out)
    return rows


def write_csv(rows: list[QuestionResult], out: str | Path) -> None:
    """Write the CSV atomically: a temporary file in the same folder, renamed over ``out``.

    UTF-8 whatever the locale; every text escaped (:func:`printable`), so that a name or reason
    holding undecodable bytes or control characters cannot stop the writing."""
    out = Path(out)
    handle = tempfile.NamedTemporaryFile("w", dir=out.parent, prefix=f".{out.name}.", suffix=".tmp",
                                         newline="", encoding="utf-8", delete=False)
    try:
        with handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(v) for k, v in asdict(row).items() if k in FIELDS})
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, out)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _csv_value(value):
    return f"{value:g}" if isinstance(value, float) else printable(value) if isinstance(value, str) else value


def summary_table(rows: list[QuestionResult]) -> str:
    """A plain-text table: one line per submission (its path in the folder), one column per
    question, and the total; then the submissions not graded, and those whose file name names
    another assignment than their content (marked ``*``), each with why."""
    questions = list(dict.fromkeys(r.question for r in rows))
    by_sub: dict[str, dict[str, QuestionResult]] = {}
    for r in rows:
        by_sub.setdefault(printable(r.submission), {})[r.question] = r
    width = max([len(s) for s in by_sub] + [10])
    lines = [f"{'submission':<{width}}  " + "  ".join(f"{q[:18]:>18}" for q in questions) + "   total"]
    for sub, got in by_sub.items():
        cells = [f"{got[q].score:g}/{got[q].max_score:g}" if q in got else "-" for q in questions]
        total = sum(r.score for r in got.values())
        best = sum(r.max_score for r in got.values())
        flag = " *" if any(r.named_as for r in got.values()) else ""
        lines.append(f"{sub:<{width}}  " + "  ".join(f"{c:>18}" for c in cells) + f"   {total:g}/{best:g}{flag}")
    problems = [f"  {printable(r.submission)}: {printable(r.reason)}" for r in rows if r.status == "not-graded"]
    if problems:
        lines += ["not graded:", *dict.fromkeys(problems)]
    renamed = [f"  {printable(r.submission)}: the file name names {r.named_as}; graded as {r.assignment}, "
               "the assignment its content is" for r in rows if r.named_as]
    if renamed:
        lines += ["* graded as another assignment than its file name names:", *dict.fromkeys(renamed)]
    return "\n".join(lines)
