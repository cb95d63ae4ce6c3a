"""One bad file never stops the class; every row names its submission (issue 25).

The grader's side of each attack is tested in this process: reading and matching a submission,
its rows, the CSV and the summary, with the worker replaced by one that gives full marks (or
fails) without a sandbox. One run of the real command line (``--jobs 2``) then grades a class
that mixes honest submissions with the attacks that need a worker: same file names in two
students' folders, a non-UTF-8 file name, odd metadata and a 5,000-term expression, an answer
under another assignment's file name, an answer that raises with the probe's code, a named pipe
and a link to ``/dev/zero``.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from pfcourse_instructor import grading, myst
from pfcourse_instructor.__main__ import main
from pfcourse_instructor.assignments import load_assignment
from pfcourse_instructor.grading import (QuestionResult, SubmissionError, clean_reason, find_submissions,
                                         grade_folder, hidden_runs, match_assignment, parse_submission,
                                         printable, read_submission, read_submission_bytes, submission_key,
                                         summary_table)

ROOT = Path(__file__).resolve().parents[1]
GD, PF = "01_gradient_descent", "03_principal_flow"
SECRET = "root:$6$saltsalt$SECRETHASH"          # a file's content that must never reach a reason
GD_ASSIGNMENT = load_assignment(ROOT / "coursework" / f"{GD}.md", root=ROOT)
GD_QUESTIONS = len(GD_ASSIGNMENT.questions)                    # every row a full submission gets
LONG_SUM = "y = " + " + ".join(["1"] * 5000)     # RecursionError when parsed (Python's AST depth limit)
LEAK = '''
def optimal_rate(mu, L):
    """Raises with the source of the hidden probe calling it (found in the runner's frames)."""
    import sys
    frame = sys._getframe()
    while frame is not None:
        for value in list(frame.f_locals.values()):
            if isinstance(value, str) and "probe" in value and "optimal_rate(" in value:
                raise ValueError(value)
        frame = frame.f_back
    raise ValueError("the probe's code was not found")
'''


@pytest.fixture(scope="module")
def assignments():
    return {name: load_assignment(ROOT / "coursework" / f"{name}.md", root=ROOT) for name in (GD, PF)}


@pytest.fixture(scope="module")
def solution(assignments):
    """Assignment 1's solution notebook, as a student hands it in."""
    return assignments[GD].student_notebook(myst.build_index(ROOT), solutions=True)


def _odd_metadata(nb):
    """``nb`` with every cell's ``pfcourse`` metadata a string: schema-valid, no question id left."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        cell.metadata["pfcourse"] = "x"
    return nb


def _with_cell(nb, source: str):
    nb = copy.deepcopy(nb)
    nb.cells.append(nbformat.v4.new_code_cell(source))
    return nb


# ---------------------------------------------------------------- reading one file


def test_only_regular_files_are_read_and_nothing_of_a_file_is_quoted(tmp_path, solution):
    honest = tmp_path / "honest.ipynb"
    nbformat.write(solution, honest)
    secret = tmp_path / "shadow"
    secret.write_text(SECRET + "\n")
    os.mkfifo(tmp_path / "pipe.ipynb")                        # would block an open() without O_NONBLOCK
    (tmp_path / "zero.ipynb").symlink_to("/dev/zero")          # would fill the memory
    (tmp_path / "shadow.ipynb").symlink_to(secret)
    (tmp_path / "honest-link.ipynb").symlink_to(honest)        # a link even to a notebook is refused
    (tmp_path / "folder.ipynb").mkdir()
    (tmp_path / "text.ipynb").write_text(SECRET)
    (tmp_path / "latin1.ipynb").write_bytes(b'{"cells": "caf\xe9"}')
    expected = {"pipe": "a named pipe", "zero": "a symbolic link", "shadow": "a symbolic link",
                "honest-link": "a symbolic link", "folder": "a folder", "text": "not JSON (line 1, column 1)",
                "latin1": "not UTF-8"}
    for name, words in expected.items():
        with pytest.raises(SubmissionError) as err:
            read_submission(tmp_path / f"{name}.ipynb")
        assert words in str(err.value) and "SECRET" not in str(err.value), (name, str(err.value))
    assert read_submission(honest).cells == solution.cells
    with pytest.raises(SubmissionError, match="larger than 1000 bytes"):
        read_submission_bytes(honest, limit=1000)               # at most `limit` bytes are read


@pytest.mark.parametrize("raw, words", [
    ({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"source": "x", "metadata": {}}]},
     "cell 1 has no cell_type or no text"),
    ({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code", "source": 5}]},
     "not a readable notebook (ValidationError"),
    ({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "raw", "source": "",
                                                                     "metadata": 5}]},
     "not a readable notebook (ValidationError"),
    ({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "raw", "source": ["a", 1]}]},
     "not a readable notebook (TypeError"),
    ({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": {}}, "not a readable notebook"),
    ({"nbformat": 9, "cells": []}, "not a readable notebook (NBFormatError"),
    ([1, 2], "not a readable notebook"),
])
def test_a_json_file_that_is_no_notebook_is_refused_with_why(raw, words):
    with pytest.raises(SubmissionError) as err:
        parse_submission(json.dumps(raw).encode())
    assert words in str(err.value), str(err.value)


def test_a_deeply_nested_json_file_is_refused_not_a_crash():
    with pytest.raises(SubmissionError, match="RecursionError"):
        parse_submission(b"[" * 100_000 + b"]" * 100_000)


def test_odd_metadata_and_huge_expressions_still_match_and_give_the_answer_cells(assignments, solution):
    """``"pfcourse": "x"`` (schema-valid), an unhashable question id, a 5,000-term sum and a
    5,000-digit question number: matched by the answer functions, every answer cell found."""
    nb = _with_cell(_odd_metadata(solution), LONG_SUM)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("## Question " + "1" * 5000))
    raw = json.loads(nbformat.writes(nb))
    raw["cells"][2]["metadata"] = {"pfcourse": {"question": ["ex-gd-implement"], "role": {}}}
    nb = parse_submission(json.dumps(raw).encode())
    assert match_assignment(nb, list(assignments.values()), "odd.ipynb").name == GD
    cells = grading._student_cells(nb, assignments[GD])
    answered = {label for label, _ in cells}
    assert answered >= {q.label for q in assignments[GD].questions}, answered
    # an appended cell belongs to the question above it, the last one
    assert (next(label for label, source in cells if source == LONG_SUM)) == assignments[GD].questions[-1].label


# ---------------------------------------------------------------- names and reasons


def test_names_with_undecodable_bytes_or_control_characters_are_escaped_and_stay_distinct(tmp_path):
    folder = tmp_path
    names = [os.fsdecode(b"\xe9l\xe8ve.ipynb"), "a\nb.ipynb", "\u202egnp.ipynb", "x\\xe9l\\xe8ve.ipynb", "Zoë.ipynb"]
    keys = [submission_key(folder / "student00" / name, folder) for name in names]
    assert keys[0] == "student00/\\xe9l\\xe8ve.ipynb" and keys[1] == "student00/a\\nb.ipynb"
    assert keys[2] == "student00/\\u202egnp.ipynb" and keys[4] == "student00/Zoë.ipynb"
    assert len(set(keys)) == len(keys) and all(k.isprintable() for k in keys)
    assert printable("\udcff\x00") == "\\xff\\x00"


def test_a_reason_never_quotes_a_probe_but_keeps_the_checks_messages(assignments):
    probe = assignments[GD].questions[0].hidden_tests[0].probe
    check = assignments[GD].questions[0].hidden_tests[0].check
    reason = f"hidden test 1, run in your notebook: ValueError: {probe}"
    cleaned = clean_reason(reason, hidden_runs(assignments[GD]))
    assert "[hidden test code]" in cleaned and cleaned.startswith("hidden test 1, run in your notebook: ValueError:")
    longest = max((line.strip() for line in probe.splitlines()), key=len)
    assert longest[:grading.HIDDEN_RUN] not in cleaned, cleaned
    message = "hidden test 1: AssertionError: the rate is not 2/(mu+L)"   # what a check says stays
    assert clean_reason(message, hidden_runs(assignments[GD])) == message
    assert "# ---- grader ----" not in check                  # the check never reaches the student


# ---------------------------------------------------------------- a class, the worker replaced


def _full_marks(path, assignment):
    """A worker that gives full marks without a sandbox; it fails on the notebooks named `bug`."""
    if "bug" in path.name:
        raise RuntimeError("a bug of the grader's")
    return [QuestionResult(path.name, assignment.name, q.label, q.points, q.points, "passed",
                           "a reason quoting " + q.hidden_tests[0].probe) for q in assignment.questions]


@pytest.fixture
def fake_class(tmp_path, solution, monkeypatch):
    """A class with every attack on the grader's side, graded with the worker replaced."""
    subs = tmp_path / "subs"
    secret = tmp_path / "solutions" / "01_gradient_descent.ipynb"
    secret.parent.mkdir()
    nbformat.write(solution, secret)
    for n in range(3):                                          # an LMS download: same name, one folder each
        (subs / f"student{n:02d}").mkdir(parents=True)
        nbformat.write(solution, subs / f"student{n:02d}" / f"{GD}.ipynb")
    nbformat.write(_odd_metadata(solution), subs / "odd-metadata.ipynb")
    nbformat.write(_with_cell(solution, LONG_SUM), subs / "long-sum.ipynb")
    nbformat.write(solution, subs / os.fsdecode(b"\xe9l\xe8ve.ipynb"))
    nbformat.write(solution, subs / f"{PF}.ipynb")              # assignment 1 under assignment 3's name
    nbformat.write(solution, subs / "bug.ipynb")
    os.mkfifo(subs / "pipe.ipynb")
    (subs / "zero.ipynb").symlink_to("/dev/zero")
    (subs / "solution-link.ipynb").symlink_to(secret)          # a link to a solution elsewhere
    (subs / "linked-folder").symlink_to(secret.parent)
    (subs / "shadow.ipynb").write_text(SECRET)
    calls = []

    def worker(path, assignment, job, timeout):
        calls.append(path.name)
        return _full_marks(path, assignment)

    monkeypatch.setattr(grading, "_grade_in_worker", worker)
    monkeypatch.setattr(grading, "require_sandbox", lambda: None, raising=False)   # no sandbox is started
    return subs, calls


def test_every_attack_gets_its_own_row_and_the_csv_is_written_for_everyone(fake_class, tmp_path):
    subs, calls = fake_class
    rows = grade_folder(subs, tmp_path / "scores.csv", root=ROOT, jobs=2)
    written = list(csv.DictReader((tmp_path / "scores.csv").open(encoding="utf-8")))
    assert len(written) == len(rows)
    by = {}
    for row in written:
        by.setdefault(row["submission"], []).append(row)
    full = [f"student{n:02d}/{GD}.ipynb" for n in range(3)] + [
        "odd-metadata.ipynb", "long-sum.ipynb", "\\xe9l\\xe8ve.ipynb", f"{PF}.ipynb"]
    for name in full:
        assert len(by[name]) == GD_QUESTIONS, (name, by.get(name))
        assert all(r["status"] == "passed" and r["score"] == r["max_score"] for r in by[name]), by[name]
    refused = {"pipe.ipynb": "a named pipe", "zero.ipynb": "a symbolic link", "solution-link.ipynb": "a symbolic link",
               "shadow.ipynb": "not JSON", "linked-folder": "not followed", "bug.ipynb": "RuntimeError"}
    for name, words in refused.items():
        assert [r["status"] for r in by[name]] == ["not-graded"] and words in by[name][0]["reason"], by[name]
    assert sorted(by) == sorted(full + list(refused))
    assert all(SECRET not in r["reason"] and "probe =" not in r["reason"] for r in written)
    assert all("[hidden test code]" in r["reason"] for r in written if r["status"] == "passed")
    assert sorted(calls) == sorted([f"{GD}.ipynb"] * 3 + ["odd-metadata.ipynb", "long-sum.ipynb",
                                    os.fsdecode(b"\xe9l\xe8ve.ipynb"), f"{PF}.ipynb", "bug.ipynb"])


def test_the_summary_has_one_line_per_submission_and_flags_a_misnamed_one(fake_class, tmp_path):
    subs, _ = fake_class
    rows = grade_folder(subs, tmp_path / "scores.csv", root=ROOT)
    misnamed = [r for r in rows if r.submission == f"{PF}.ipynb"]
    assert all(r.assignment == GD and r.named_as == PF and r.score == r.max_score for r in misnamed)
    assert all(r.reason.startswith(f"the file name names {PF}, the notebook is {GD}") for r in misnamed)
    assert not [r for r in rows if r.named_as and r.submission != f"{PF}.ipynb"]
    table = summary_table(rows)
    lines = table.splitlines()
    for n in range(3):
        assert sum(line.startswith(f"student{n:02d}/{GD}.ipynb ") for line in lines) == 1, table
    assert any(line.startswith(f"{PF}.ipynb ") and line.endswith(f"{GD_ASSIGNMENT.max_points:g}/{GD_ASSIGNMENT.max_points:g} *") for line in lines), table
    assert f"  {PF}.ipynb: the file name names {PF}; graded as {GD}" in table
    table.encode("utf-8")                                       # printable: no lone surrogate left


def test_the_out_folder_is_checked_before_any_grading(fake_class, tmp_path, capsys):
    subs, calls = fake_class
    with pytest.raises(FileNotFoundError, match="does not exist; create it"):
        grade_folder(subs, tmp_path / "missing" / "scores.csv", root=ROOT)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        grade_folder(subs, tmp_path, root=ROOT)
    assert main(["--root", str(ROOT), "grade", str(subs), "--out", str(tmp_path / "missing" / "s.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not calls, "nothing is graded when the CSV cannot be written"


def test_links_to_folders_are_not_followed(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.ipynb").write_text("{}")
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "elsewhere").symlink_to(tmp_path / "real")
    (tmp_path / "class" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "class" / ".ipynb_checkpoints" / "b-checkpoint.ipynb").write_text("{}")
    found, skipped = find_submissions(tmp_path / "class")
    assert found == [] and list(skipped) == [tmp_path / "class" / "elsewhere"]


# ---------------------------------------------------------------- the real command line


@pytest.fixture(scope="module")
def graded(tmp_path_factory, solution):
    """One run of ``grade --jobs 2`` on honest and hostile submissions of assignment 1."""
    base = tmp_path_factory.mktemp("class")
    subs = base / "subs"
    for n in range(2):
        (subs / f"student{n:02d}").mkdir(parents=True)
        nbformat.write(solution, subs / f"student{n:02d}" / f"{GD}.ipynb")
    nbformat.write(solution, subs / os.fsdecode(b"\xe9l\xe8ve.ipynb"))
    nbformat.write(_with_cell(_odd_metadata(solution), LONG_SUM), subs / "odd-metadata-long-sum.ipynb")
    nbformat.write(solution, subs / f"{PF}.ipynb")
    nbformat.write(_with_cell(solution, LEAK), subs / "leak.ipynb")     # redefines the answer
    os.mkfifo(subs / "pipe.ipynb")
    (subs / "zero.ipynb").symlink_to("/dev/zero")
    cmd = [sys.executable, "-m", "pfcourse_instructor", "--root", str(ROOT), "grade", "subs", "--out", "scores.csv",
           "--jobs", "2", "--cell-timeout", "60", "--timeout", "600"]
    run = subprocess.run(cmd, cwd=base, capture_output=True, text=True, timeout=1200)
    print(run.stdout[-5000:], run.stderr[-3000:])
    rows = list(csv.DictReader((base / "scores.csv").open(encoding="utf-8")))
    by = {}
    for row in rows:
        by.setdefault(row["submission"], {})[row["question"]] = row
    return run, by


def test_the_command_grades_everyone_and_gives_each_attack_its_status(graded):
    run, by = graded
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    for name in [f"student00/{GD}.ipynb", f"student01/{GD}.ipynb", "\\xe9l\\xe8ve.ipynb",
                 "odd-metadata-long-sum.ipynb", f"{PF}.ipynb"]:
        assert len(by[name]) == GD_QUESTIONS and all(r["status"] == "passed" and r["score"] == r["max_score"]
                                          for r in by[name].values()), (name, by.get(name))
    assert "the file name names 03_principal_flow" in by[f"{PF}.ipynb"]["ex-gd-optimal-rate"]["reason"]
    assert by["pipe.ipynb"]["?"]["status"] == "not-graded" and "named pipe" in by["pipe.ipynb"]["?"]["reason"]
    assert by["zero.ipynb"]["?"]["status"] == "not-graded" and "symbolic link" in by["zero.ipynb"]["?"]["reason"]
    assert "2 submission(s) could not be graded" in run.stdout and "1 submission(s) graded as another" in run.stdout
    assert sum(line.startswith("student0") for line in run.stdout.splitlines()) == 2, run.stdout


def test_an_answer_raising_with_the_probes_code_scores_zero_without_quoting_it(graded, assignments):
    _, by = graded
    row = by["leak.ipynb"]["ex-gd-optimal-rate"]
    assert float(row["score"]) == 0 and row["status"] == "error", row
    probe = assignments[GD].question("ex-gd-optimal-rate").hidden_tests[0].probe
    assert "ValueError" in row["reason"] and "[hidden test code]" in row["reason"], row
    for line in probe.splitlines():
        assert len(line.strip()) < grading.HIDDEN_RUN or line.strip() not in row["reason"], (line, row)
    assert all(r["status"] == "passed" for q, r in by["leak.ipynb"].items() if q != "ex-gd-optimal-rate")


def test_no_two_threads_parse_a_cell_at_once(monkeypatch):
    """CPython 3.11 counts the AST builder's recursion in one place for all threads; a CI run of the
    test above graded ``long-sum.ipynb`` "not-graded (SystemError)" when two --jobs threads parsed at
    once. Every parse of a cell holds one lock: a parse that waits while another runs proves it."""
    import ast
    import threading
    import time

    from pfcourse_instructor import assignments

    inside, overlaps, real_parse = [0], [], ast.parse

    def slow_parse(source, *args, **kwargs):
        inside[0] += 1
        overlaps.append(inside[0])
        time.sleep(0.01)                      # long enough for the other thread to try to enter
        inside[0] -= 1
        return real_parse(source, *args, **kwargs)

    monkeypatch.setattr(ast, "parse", slow_parse)
    threads = [threading.Thread(target=lambda: [assignments.defined_functions(s) for s in
                                                ["def f():\n    pass\n", LONG_SUM] * 5]) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(overlaps) == 30 and max(overlaps) == 1, overlaps
