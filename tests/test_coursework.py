"""Coursework: exercises in every chapter, assignments, student versions and the autograder.

The grading tests run the real command line (``python -m pfcourse_instructor grade``) once, on a
folder with, for every assignment, its solution (full marks), its wrong answers (the ``wrong-answer``
cells in place of the answers, public checks run as ordinary cells: they pass, and the questions
lose their points), and the untouched student version of assignment 1 (zero, not answered). Attacks on the grader,
and crashing, looping and renamed submissions, are in ``test_grader_attacks.py``.
"""
from __future__ import annotations

import copy
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from pfcourse_instructor import assignments, chapter_check, common, myst, notebooks
from pfcourse_instructor.assignments import AssignmentError, load_assignment, solution_lines, stub_solution
from pfcourse_instructor.runner import KernelSession

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = notebooks.chapter_sources(ROOT)
SOURCES = assignments.assignment_sources(ROOT)
PENDING = [line.split("#")[0].strip() for line in (ROOT / "coursework" / "pending.txt").read_text().splitlines()
           if line.split("#")[0].strip()]
CELL_TIMEOUT = 120          # generous: a loaded 2-core machine runs the experiments several times slower


# ---------------------------------------------------------------- exercises in the chapters


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_ends_with_3_to_6_exercises_each_with_a_solution(chapter):
    labels = myst.exercise_labels(chapter)
    assert 3 <= len(labels) <= 6, f"{chapter.name} has {len(labels)} exercises; the course asks for 3-6"
    assert all(labels), f"{chapter.name}: every exercise needs a :label:"
    missing = set(labels) - set(myst.solution_labels(chapter))
    assert not missing, f"{chapter.name}: exercises without a solution: {sorted(missing)}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_an_assignment_or_is_listed_as_pending(chapter):
    has = (ROOT / "coursework" / chapter.name).exists()
    assert has or chapter.stem in PENDING, (
        f"{chapter.name} has no assignment: write coursework/{chapter.name} or list it in coursework/pending.txt")
    assert not (has and chapter.stem in PENDING), f"{chapter.stem} has an assignment: remove it from pending.txt"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_passes_the_directive_lint(chapter):
    assert not chapter_check.lint_chapter(chapter)


def test_directive_lint_flags_a_code_cell_nested_in_a_solution(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(":::{exercise}\n:label: ex-one\n\nDo it.\n:::\n\n"
                    "::::{solution} ex-one\n:class: dropdown\n\n```{code-cell} ipython3\nprint(1)\n```\n::::\n\n"
                    ":::{solution-start} ex-one\n:::\n\n```{code-cell} ipython3\nprint(2)\n```\n\n"
                    ":::{solution-end}\n:::\n")
    problems = chapter_check.lint_chapter(page)
    assert len(problems) == 1 and f"{page}:10:" in problems[0] and "{solution}" in problems[0], problems
    assert chapter_check.check_chapter(page) == problems         # a lint problem: not executed


# ---------------------------------------------------------------- assignment sources


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_assignment_source_is_valid_and_its_questions_are_chapter_exercises(source):
    assignment = load_assignment(source, root=ROOT)
    labels = myst.exercise_labels(assignment.chapter)
    for q in assignment.questions:
        assert q.label in labels
        assert q.answers and q.public_tests and q.hidden_tests
    assert assignment.max_points > 0


def test_stub_keeps_the_signature_and_raises_when_called():
    source = ('def area(r):\n    """Area of a disc."""\n    # BEGIN SOLUTION\n    import math\n'
              '    return math.pi * r ** 2\n    # END SOLUTION\n')
    stub = stub_solution(source, 3)
    assert "math.pi" not in stub and "BEGIN SOLUTION" not in stub
    assert stub.startswith('def area(r):\n    """Area of a disc."""')
    namespace = {}
    exec(stub, namespace)                      # the cell runs ...
    with pytest.raises(NotImplementedError, match="Question 3"):
        namespace["area"](1.0)                 # ... and the function raises when called
    assert solution_lines(source) == ["import math", "return math.pi * r ** 2"]


def _toy_repository(tmp_path: Path, assignment_body: str) -> Path:
    (tmp_path / "book").mkdir()
    (tmp_path / "coursework").mkdir()
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    shutil.copytree(ROOT / "tools", tmp_path / "tools", dirs_exist_ok=True)  # its local_extensions
    (tmp_path / "book" / "01_toy.md").write_text(
        "# Toy\n\n:::{exercise}\n:label: ex-toy\n\nCompute the area of a disc.\n:::\n")
    header = ("---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
              "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n")
    path = tmp_path / "coursework" / "01_toy.md"
    path.write_text(header + assignment_body)
    return path


GOOD_QUESTION = ('+++ {"question": "ex-toy"}\n\nWrite `area(r)`.\n\n```{code-cell} ipython3\n:tags: [answer]\n'
                 'def area(r):\n    # BEGIN SOLUTION\n    return 3.14159 * r ** 2\n    # END SOLUTION\n```\n\n'
                 '```{code-cell} ipython3\n:tags: [public-tests]\nassert area(0) == 0\n```\n\n'
                 '```{code-cell} ipython3\n:tags: [hidden-tests]\nprobe = {"one": area(1)}\n# ---- grader ----\n'
                 'expect_close(probe["one"], 3.14159, atol=1e-9)\n```\n')


@pytest.mark.parametrize("body, message", [
    (GOOD_QUESTION.replace(":tags: [answer]\n", ""), "exactly one of the tags"),
    (GOOD_QUESTION.replace("    # BEGIN SOLUTION", "# BEGIN SOLUTION"), "inside a function"),
    (GOOD_QUESTION.replace("    # END SOLUTION\n", ""), "matching"),
    (GOOD_QUESTION.replace('"ex-toy"', '"ex-nope"'), "not an exercise"),
    (GOOD_QUESTION.replace(":tags: [hidden-tests]", ":tags: [public-tests]"), "no hidden-tests"),
    (GOOD_QUESTION.replace("# ---- grader ----\n", ""), "exactly one line"),
    (GOOD_QUESTION.replace('probe = {"one": area(1)}', 'assert area(1) > 0\nprobe = {}'), "an assert above"),
    (GOOD_QUESTION.replace('probe = {"one": area(1)}', 'result = {"one": area(1)}'), "must bind `probe`"),
    (GOOD_QUESTION + '\n```{code-cell} ipython3\n:tags: [wrong-answer]\ndef perimeter(r):\n    return r\n```\n',
     "same functions"),
])
def test_malformed_assignments_are_refused_with_what_to_fix(tmp_path, body, message):
    path = _toy_repository(tmp_path, "# Toy assignment\n\n" + body)
    with pytest.raises(AssignmentError, match=message):
        load_assignment(path, root=tmp_path)


def test_toy_assignment_is_valid(tmp_path):
    path = _toy_repository(tmp_path, "# Toy assignment\n\n" + GOOD_QUESTION)
    assignment = load_assignment(path, root=tmp_path)
    assert [q.label for q in assignment.questions] == ["ex-toy"]


# ---------------------------------------------------------------- student versions


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_student_notebook_contains_no_solution_code(source):
    assignment = load_assignment(source, root=ROOT)
    student = (ROOT / "notebooks" / "assignments" / f"{source.stem}.ipynb").read_text()
    nb = nbformat.reads(student, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    # lines that also occur outside the solutions (setup, signatures, tests) are not secrets
    public = "\n".join([*assignment.setup, *(stub_solution(s, 0) for q in assignment.questions for s in q.answers),
                        *(t for q in assignment.questions for t in q.public_tests)])
    secrets = [line for q in assignment.questions for s in q.answers for line in solution_lines(s)
               if line not in public]
    assert secrets, "the answers of this assignment have no solution lines to hide"
    leaked = [line for line in secrets if line in code]
    assert not leaked, f"solution code in the student notebook: {leaked}"
    hidden = [line.strip() for q in assignment.questions for t in q.hidden_tests
              for line in (t.probe + "\n" + t.check + "\n" + "\n".join(q.wrong_answers)).splitlines()
              if len(line.strip()) > 20 and line.strip() not in public]
    assert not [line for line in hidden if line in code], "hidden tests or wrong answers in the student notebook"
    assert "BEGIN SOLUTION" not in student and "hidden-tests" not in student and "---- grader ----" not in student
    answers = [c for c in nb.cells if c.metadata.get("pfcourse", {}).get("role") == "answer"]
    assert len(answers) == sum(len(q.answers) for q in assignment.questions)
    assert all("raise NotImplementedError" in c.source for c in answers)


# ---------------------------------------------------------------- the kernel under the grader


def test_kernel_session_recovers_from_a_loop_and_a_crash_and_keeps_the_state():
    with KernelSession(cell_timeout=3) as kernel:   # the loops wait this long; the other cells take milliseconds
        assert kernel.run("x = 41").ok
        loop = kernel.run("while True:\n    pass")
        assert loop.status == "timeout"
        assert kernel.restarts == 0, "an interruptible loop needs no restart"
        stubborn = kernel.run("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass")
        assert stubborn.status == "timeout" and kernel.restarts == 1
        crash = kernel.run("import os\nos._exit(3)")
        assert crash.status == "crashed" and kernel.restarts == 2
        after = kernel.run("print(x + 1)")
        assert after.ok and after.stdout().strip() == "42", "the state is replayed after a restart"
        error = kernel.run("1 / 0")
        assert error.status == "error" and error.ename == "ZeroDivisionError"


# ---------------------------------------------------------------- grading


def _wrong_submission(assignment, solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The solution with every answer that has a ``wrong-answer`` cell replaced by it, and the public
    checks turned into ordinary cells, so the grader runs them and notes any that fails."""
    nb = copy.deepcopy(solution)
    public = {q.label: list(q.public_tests) for q in assignment.questions}
    for cell in nb.cells:
        meta = cell.metadata.get("pfcourse", {})
        q = assignment.question(meta["question"]) if meta.get("question") else None
        if q is not None and meta.get("role") == "answer" and q.wrong_answers:
            cell.source = "\n".join(q.wrong_answers)
        elif q is not None and meta.get("role") == "public-tests":
            cell.source = public[q.label].pop(0)
            cell.metadata = {"pfcourse": {"question": q.label}}
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade, with one run of the command line, every assignment's solution and its wrong answers,
    and the untouched student version of the first."""
    folder = tmp_path_factory.mktemp("submissions")
    index = myst.build_index(ROOT)
    for source in SOURCES:
        assignment = load_assignment(source, root=ROOT)
        solution = assignment.student_notebook(index, solutions=True)
        nbformat.write(solution, folder / f"{source.stem}-solution.ipynb")
        nbformat.write(_wrong_submission(assignment, solution), folder / f"{source.stem}-wrong.ipynb")
        if source == SOURCES[0]:     # the stubs of the others raise too (test_student_notebook_contains_no_solution_code)
            nbformat.write(assignment.student_notebook(index), folder / f"{source.stem}-student.ipynb")
    out = folder / "scores.csv"
    cmd = [sys.executable, "-m", "pfcourse_instructor", "grade", str(folder), "--out", str(out),
           "--jobs", "2", "--cell-timeout", str(CELL_TIMEOUT)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(run.stdout)
    rows = list(csv.DictReader(out.open()))
    return {(r["submission"].removesuffix(".ipynb"), r["question"]): r for r in rows}


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_solution_scores_full_marks(graded, source):
    rows = {q: r for (sub, q), r in graded.items() if sub == f"{source.stem}-solution"}
    assert rows, "the solution was not graded"
    failed = {q: r["reason"] for q, r in rows.items() if r["status"] != "passed" or r["score"] != r["max_score"]}
    assert not failed, failed


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_wrong_answers_pass_the_public_checks_and_fail_a_hidden_test(graded, source):
    assignment = load_assignment(source, root=ROOT)
    wrong = {q.label for q in assignment.questions if q.wrong_answers}
    assert wrong, f"{source.name} has no wrong-answer cell (coursework/README.md, 'Wrong answers')"
    rows = {q: r for (sub, q), r in graded.items() if sub == f"{source.stem}-wrong"}
    assert sorted(rows) == sorted(q.label for q in assignment.questions), rows
    for label, row in rows.items():
        assert "your cell" not in row["reason"], f"{label}: a wrong answer or a public check fails: {row['reason']}"
        if label in wrong:
            assert float(row["score"]) == 0 and row["status"] == "failed", (label, row)
        else:
            assert row["status"] == "passed", (label, row)
    total = sum(float(r["score"]) for r in rows.values())
    assert total < assignment.max_points


@pytest.mark.parametrize("source", SOURCES[:1], ids=lambda p: p.stem)
def test_student_version_scores_zero_not_answered(graded, source):
    rows = {q: r for (sub, q), r in graded.items() if sub == f"{source.stem}-student"}
    assert rows and all(r["status"] == "not-answered" and float(r["score"]) == 0 for r in rows.values()), rows

