"""A hostile class: the grader's verdict must be out of the submissions' reach (issue 15).

One grading run (the real command line, from a relative folder, ``--jobs 2``, hidden tests in a
private folder passed with ``--assignment``) grades honest, wrong, crashing and looping submissions
of assignment 1 and one submission per attack; every test below reads the one CSV it wrote. Each
attack must end with the score an honest grader gives (zero where nothing was answered), a clear
status, every other submission graded as usual, the CSV intact and no process of it left alive.
The serialisation of probes is tested in this process.
"""
from __future__ import annotations

import copy
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
import sympy as sp

from pfcourse_instructor import myst
from pfcourse_instructor.assignments import load_assignment
from pfcourse_instructor.wire import WireError, decode, encode, rebuild_sympy

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "coursework" / "01_gradient_descent.md"
CELL_TIMEOUT = 10   # the looping attacks wait this long; assignment 1's honest cells take at most 0.7 s
                    # on two idle cores (timed with nbclient), so 10 s leaves a margin of 14x for a loaded machine
MARK = "pfcourse-attack"           # the name (comm) every process an attack starts takes
LABELS = [q.label for q in load_assignment(SOURCE, root=ROOT).questions]   # every question of assignment 1
NAME_ME = (f"import ctypes\nctypes.CDLL(None).prctl(15, ctypes.c_char_p(b'{MARK}'), 0, 0, 0)   # PR_SET_NAME\n")

STEAL = r'''
import ctypes, glob, os, pfcourse
def _hidden_tests():
    """Every file we can find that holds the hidden tests: via pfcourse, and the grader's arguments."""
    repo = os.path.dirname(os.path.dirname(pfcourse.__file__))
    ctypes.CDLL(None).umount2(repo.encode(), 2)                  # try to lift a mount hiding them
    paths = glob.glob(os.path.join(repo, "coursework", "*.md")) + glob.glob(os.path.join(repo, ".git", "*"))
    for pid in [str(os.getppid())] + os.listdir("/proc"):        # /proc/<ppid>/cmdline, then everyone's
        try:
            args = open(f"/proc/{pid}/cmdline").read().split("\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except (OSError, ValueError):
            continue
        for arg in args:
            for path in (arg, os.path.join(cwd, arg)):
                paths += glob.glob(os.path.join(path, "*.md")) if os.path.isdir(path) else [path]
    found = []
    for path in paths:
        try:
            text = open(path).read()
        except (OSError, UnicodeDecodeError):
            continue
        if "# ---- grader ----" in text:
            found.append(path)
    return found

def optimal_rate(mu, L):
    """Answers only if it could read the hidden tests (then it would know what they check)."""
    found = _hidden_tests()
    if not found:
        raise NotImplementedError("the hidden tests could not be read")
    return 2 / (mu + L), (L - mu) / (L + mu)
'''

DETACH = NAME_ME + r'''
import os, time
def _forge(out):
    if os.fork():
        return
    os.setsid()                                   # a new session ...
    if os.fork():
        os._exit(0)                               # ... and a double fork: re-parented, detached
    for _ in range(6000):                         # wait for the grader to write its CSV, then rewrite it
        if os.path.exists(out):
            time.sleep(0.5)
            try:
                open(out, "w").write("submission,assignment,question,score,max_score,status,reason\n"
                                     "detached.ipynb,01_gradient_descent,ex-gd-implement,1000,2,passed,FORGED\n")
            except OSError:
                pass
        time.sleep(0.1)
    os._exit(0)
_forge(OUT)
'''

FORK_LOOP = NAME_ME + "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"

# submission -> {question: (score is full?, status, a word of the reason)}; questions not listed pass
EXPECTED = {
    "honest": {},
    "Copy of 01_gradient_descent": {},                   # renamed, every bit of metadata stripped
    "wrong": {q: (False, "failed", "AssertionError") for q in LABELS},
    "crashing": {"ex-gd-period-two": (False, "crashed", "died")},
    "looping": {"ex-gd-matching-time": (False, "timeout", "time limit")},
    "exec-override": {q: (False, ("not-answered", "error"), "") for q in LABELS},
    "patched-numpy": {q: (False, "failed", "AssertionError") for q in LABELS},
    "read-hidden-tests": {q: (False, "not-answered", "NotImplementedError") for q in LABELS},
    "detached-rewrite": {},
    "fork-loop": {"ex-gd-matching-time": (False, "timeout", "time limit")},
    "memory-64gb": {"ex-gd-period-two": (False, "error", "MemoryError")},
    "deleted": {"ex-gd-optimal-rate": (False, "missing", "deleted")},  # its setup and answer cells deleted
}


def _with(nb, label: str, source: str):
    """``nb`` with the answer cell of ``label`` replaced by ``source``."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        meta = cell.metadata.get("pfcourse", {})
        if meta.get("role") == "answer" and meta.get("question") == label:
            cell.source = source
    return nb


def _answer(label: str) -> str:
    return "\n".join(load_assignment(SOURCE, root=ROOT).question(label).answers)


def _submissions(out: Path) -> dict[str, nbformat.NotebookNode]:
    assignment = load_assignment(SOURCE, root=ROOT)
    index = myst.build_index(ROOT)
    solution = assignment.student_notebook(index, solutions=True)
    student = assignment.student_notebook(index)
    stripped = copy.deepcopy(solution)
    stripped.metadata = {}
    for cell in stripped.cells:
        cell.metadata = {}
    wrong = solution
    for q in assignment.questions:
        wrong = _with(wrong, q.label, "\n".join(q.wrong_answers))
    patch = ("import numpy, sympy\nnumpy.allclose = lambda *a, **k: True\nnumpy.max = lambda *a, **k: 0.0\n"
             "sympy.simplify = lambda *a, **k: 0\nimport builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n")
    steal = _with(student, "ex-gd-optimal-rate", STEAL)
    exec_override = copy.deepcopy(student)
    exec_override.cells.append(nbformat.v4.new_code_cell(
        "exec = lambda *a, **k: None\nimport builtins\nbuiltins.exec = lambda *a, **k: None"))
    detached = copy.deepcopy(solution)
    detached.cells.append(nbformat.v4.new_code_cell(DETACH.replace("OUT", repr(str(out)))))
    patched = copy.deepcopy(wrong)
    patched.cells.append(nbformat.v4.new_code_cell(patch))
    deleted = copy.deepcopy(solution)
    deleted.cells = [c for c in deleted.cells if c.metadata.get("pfcourse", {}).get("role") != "setup"
                     and c.metadata.get("pfcourse", {}).get("question") != "ex-gd-optimal-rate"]
    return {
        "honest": solution,
        "deleted": deleted,
        "Copy of 01_gradient_descent": stripped,
        "wrong": wrong,
        "crashing": _with(solution, "ex-gd-period-two", _answer("ex-gd-period-two") + "\nimport os\nos._exit(1)\n"),
        "looping": _with(solution, "ex-gd-matching-time", _answer("ex-gd-matching-time") + (
            "\nwhile True:                       # ignores the grader's interrupt\n    try:\n"
            "        while True:\n            pass\n    except BaseException:\n        pass\n")),
        "exec-override": exec_override,
        "patched-numpy": patched,
        "read-hidden-tests": steal,
        "detached-rewrite": detached,
        "fork-loop": _with(solution, "ex-gd-matching-time", _answer("ex-gd-matching-time") + "\nimport os\n" + FORK_LOOP),
        "memory-64gb": _with(solution, "ex-gd-period-two", _answer("ex-gd-period-two").replace(
            '    """', "    big = np.ones(8 * 1024 ** 3)     # 64 GB\n    \"\"\"", 1)),
    }


def _attack_processes() -> list[int]:
    alive = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and open(f"/proc/{entry}/comm").read().strip() == MARK:
                alive.append(int(entry))
        except OSError:
            pass
    return alive


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every submission with one run of the command line, from a relative folder."""
    base = tmp_path_factory.mktemp("class")
    (base / "subs").mkdir()
    (base / "private").mkdir()
    shutil.copy(SOURCE, base / "private" / SOURCE.name)            # the instructor's private hidden tests
    out = base / "scores.csv"
    for name, nb in _submissions(out).items():
        nb = copy.deepcopy(nb)
        if name.startswith("Copy of"):
            nb.metadata = {}
        nbformat.write(nb, base / "subs" / f"{name}.ipynb")
    (base / "subs" / "not-a-notebook.ipynb").write_text("{ this is not JSON")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('hello')")]),
                   base / "subs" / "unrelated.ipynb")
    cmd = [sys.executable, "-m", "pfcourse_instructor", "--root", str(ROOT), "grade", "subs", "--out", "scores.csv",
           "--assignment", "private", "--jobs", "2", "--cell-timeout", str(CELL_TIMEOUT), "--timeout", "400",
           "--processes", "256"]
    start = time.monotonic()
    run = subprocess.run(cmd, cwd=base, capture_output=True, text=True, timeout=1200)
    seconds = time.monotonic() - start
    print(run.stdout[-5000:], run.stderr[-3000:])
    time.sleep(2.0)                    # time for a detached process, had one survived, to rewrite the CSV
    rows = list(csv.DictReader(out.open()))
    return {"run": run, "rows": rows, "seconds": seconds, "alive": _attack_processes(), "base": base,
            "by": {(r["submission"].removesuffix(".ipynb"), r["question"]): r for r in rows}}


def test_the_command_lists_what_it_could_not_grade_and_exits_non_zero(graded):
    run, by = graded["run"], graded["by"]
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "2 submission(s) could not be graded" in run.stdout
    assert by[("not-a-notebook", "?")]["status"] == "not-graded" and "not a readable notebook" in by[("not-a-notebook", "?")]["reason"]
    assert by[("unrelated", "?")]["status"] == "not-graded" and "no question id" in by[("unrelated", "?")]["reason"]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_submission_gets_its_true_score_and_a_clear_status(graded, name):
    rows = {q: r for (sub, q), r in graded["by"].items() if sub == name}
    assert sorted(rows) == sorted(LABELS), f"{name}: expected the {len(LABELS)} questions of assignment 1, got {rows}"
    for question, row in rows.items():
        full, status, word = EXPECTED[name].get(question, (True, "passed", ""))
        assert row["assignment"] == "01_gradient_descent", row
        if full:
            assert row["status"] == "passed" and row["score"] == row["max_score"], (question, row)
        else:
            statuses = status if isinstance(status, tuple) else (status,)
            assert float(row["score"]) == 0 and row["status"] in statuses, (question, row)
            assert word in row["reason"] and row["reason"], (question, row)


def test_no_process_of_a_submission_outlives_the_grader_and_the_csv_is_its_own(graded):
    assert not graded["alive"], f"processes started by submissions still alive: {graded['alive']}"
    assert all("FORGED" not in r["reason"] and float(r["score"]) <= float(r["max_score"]) for r in graded["rows"])
    assert [r for r in graded["rows"] if r["submission"] == "detached-rewrite.ipynb"]
    assert not list(graded["base"].glob("*.tmp")), "the CSV is written by a rename, no temporary file is left"


def test_memory_and_process_limits_left_the_grader_time_for_everyone(graded):
    """The fork loop and the 64 GB allocation cost their own question only, within the time limits."""
    assert graded["seconds"] < 900, f"grading took {graded['seconds']:.0f} s"
    honest = [r for (sub, _), r in graded["by"].items() if sub == "honest"]
    assert honest and all(r["status"] == "passed" for r in honest)


# ---------------------------------------------------------------- the wire, in this process


def test_probe_values_cross_as_plain_data_and_come_back_equal():
    mu, L, x = sp.Symbol("mu", positive=True), sp.Symbol("L", positive=True), sp.Symbol("x")
    k = sp.Symbol("k", integer=True, nonnegative=True)
    value = {"expr": 2 / (mu + L), "piecewise": sp.piecewise_fold(sp.summation(-x**k / (k + 1), (k, 0, sp.oo))),
             "undefined": sp.Function("f")(x).diff(x), "matrix": sp.Matrix([[1, sp.pi], [sp.oo, sp.I]]),
             "array": np.arange(6.0).reshape(2, 3) + 1j, "ints": np.arange(3), "mixed": (1, 2.5, None, True, "s"),
             "scalars": [np.float64(3.0), np.int64(2), 1 + 2j], "nested": {"a": [{"b": np.ones(2)}]}}
    back = decode(encode(value))
    for key in ("expr", "piecewise", "undefined", "matrix", "mixed", "scalars"):
        assert back[key] == value[key], key
    assert back["array"].dtype == np.complex128 and np.array_equal(back["array"], value["array"])
    assert back["ints"].dtype == value["ints"].dtype and np.array_equal(back["nested"]["a"][0]["b"], np.ones(2))


@pytest.mark.parametrize("text", [
    'Poly("__import__(\'os\').system(\'true\')")',      # a string a constructor would sympify
    '__import__("os")', 'Symbol("x").subs', 'Integer(2).__class__', "Lambda(x, y)",
    'Symbol("x", real="yes")', "(lambda: 1)()", "Symbol('x') + Symbol('y')",
])
def test_a_hostile_srepr_is_refused_not_evaluated(text):
    with pytest.raises(WireError):
        rebuild_sympy(text)


@pytest.mark.parametrize("raw", [
    '{"__dict__": {"a": {"__ndarray__": {"dtype": "|O", "shape": [1], "data": ""}}}}',
    '{"__dict__": {"a": {"__ndarray__": {"dtype": "<f8", "shape": [1000000], "data": "AAAAAAAAAAA="}}}}',
    '{"__dict__": {"a": {"__pickle__": "gASV"}}}', '[1, 2]',
])
def test_a_malformed_probe_is_refused(raw):
    with pytest.raises(WireError):
        decode(raw)


def test_values_that_are_not_plain_data_do_not_leave_the_students_process():
    with pytest.raises(WireError, match="cannot be sent"):
        encode({"f": lambda: 1})
    with pytest.raises(WireError, match="numbers only"):
        encode({"a": np.array([object()])})
