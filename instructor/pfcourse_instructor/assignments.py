"""Assignments: one instructor source per chapter, from which the student notebook and the tests come.

An assignment is ``coursework/NN_name.md``, a MyST notebook that belongs to the chapter
``book/NN_name.md``. Its cells say what they are:

- a Markdown cell with metadata ``{"question": "<exercise label>", "points": P}`` (MyST:
  ``+++ {"question": "ex-gd-implement", "points": 2}``) opens a question. The exercise's statement is
  taken from the chapter, so book and assignment never disagree; the cell's own text adds the
  contract (the function to write);
- code cells tagged ``setup`` (imports, shared data), ``answer`` (the instructor's solution, with the
  solution between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` inside a function), ``public-tests``
  (checks the student sees and runs), ``hidden-tests`` (checks only the grader runs: a *probe* part
  that runs in the student's process and binds ``probe``, plain data, then, after the line
  ``# ---- grader ----``, a *check* part that runs in the grader's process on ``probe``, reading it
  only through the helpers of :mod:`.expect` and comparing it with a reference of its own: the
  rules of :func:`check_rules`, enforced here) and
  ``wrong-answer`` (a plausible wrong replacement of the answer cell that passes the public checks
  and must fail a hidden test; only the tests use it);
- other Markdown cells are kept as they are.

The student version replaces every solution by ``raise NotImplementedError(...)`` (the function's
signature and docstring stay) and drops the hidden tests. The grader
(:mod:`.grading`) reads the tests from the same source.

Book: all chapters (``notebooks/assignments/NN_name.ipynb``).
"""
from __future__ import annotations

import ast
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import expect, myst
from .common import GENERATED_BY, install_cell_source, new_notebook, repository_root

ROLES = ("setup", "answer", "public-tests", "hidden-tests", "wrong-answer")
GRADER_LINE = "# ---- grader ----"
BEGIN = re.compile(r"^(\s*)#\s*BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*#\s*END SOLUTION\s*$")
QUESTION_HEADING = re.compile(r"^## Question (\d+)\b", re.M)
PUBLIC_MARKER = "# Public checks for Question"


class AssignmentError(ValueError):
    """An assignment source that does not follow the format (the message says what to change)."""


@dataclass
class HiddenTest:
    """One hidden test: ``probe`` runs in the student's process, ``check`` in the grader's."""

    probe: str
    check: str


@dataclass
class Question:
    label: str
    number: int
    points: float
    prompt: str = ""
    answers: list[str] = field(default_factory=list)
    public_tests: list[str] = field(default_factory=list)
    hidden_tests: list[HiddenTest] = field(default_factory=list)
    wrong_answers: list[str] = field(default_factory=list)

    @property
    def functions(self) -> list[str]:
        """Names of the functions the answer cells define (how a submission is matched without metadata)."""
        return [name for source in self.answers for name in defined_functions(source)]

    def stubs(self) -> list[str]:
        return [stub_solution(source, self.number) for source in self.answers]


@dataclass
class Assignment:
    name: str
    path: Path
    chapter: Path
    title: str
    cells: list[tuple[str, object]]          # ("markdown", text) | (role, source) | ("question", Question)
    questions: list[Question]

    @property
    def setup(self) -> list[str]:
        return [source for role, source in self.cells if role == "setup"]

    @property
    def max_points(self) -> float:
        return sum(q.points for q in self.questions)

    def question(self, label: str) -> Question:
        for q in self.questions:
            if q.label == label:
                return q
        raise KeyError(label)

    def student_notebook(self, index: myst.BookIndex, *, solutions: bool = False) -> nbformat.NotebookNode:
        """The notebook students open (``solutions=True``: the same with the instructor's answers)."""
        ctx = myst.PageContext(index, f"coursework/{self.name}")
        chapter_ctx = myst.PageContext(index, f"book/{self.chapter.stem}")
        cells = [nbformat.v4.new_code_cell(install_cell_source(), metadata={"pfcourse": {"role": "install"}})]
        locked = {"editable": False, "deletable": False}
        current: Question | None = None
        for role, payload in self.cells:
            if role == "markdown":
                cells.append(nbformat.v4.new_markdown_cell(myst.convert_markdown(payload, ctx)))
            elif role == "question":
                current = payload
                target = index.targets.get(current.label)
                exercise = f"Exercise {target.number}" if target else current.label
                statement = myst.exercise_statement(self.chapter, current.label, chapter_ctx)
                points = f"{current.points:g} point" + ("" if current.points == 1 else "s")
                text = "\n\n".join(part for part in [
                    f"## Question {current.number} · {exercise} ({points})",
                    "\n".join(myst.quote(statement.splitlines())),
                    myst.convert_markdown(current.prompt, ctx)] if part.strip())
                cells.append(nbformat.v4.new_markdown_cell(text, metadata={"pfcourse": {
                    "role": "question", "question": current.label, "points": current.points}}))
            elif role == "setup":
                cells.append(nbformat.v4.new_code_cell(
                    payload, metadata={**locked, "pfcourse": {"role": "setup"}}))
            elif role == "answer":
                source = payload if solutions else stub_solution(payload, current.number)
                cells.append(nbformat.v4.new_code_cell(
                    source, metadata={"pfcourse": {"role": "answer", "question": current.label}}))
            elif role == "public-tests":
                cells.append(nbformat.v4.new_code_cell(
                    public_check_source(payload, current), metadata={
                        **locked, "pfcourse": {"role": "public-tests", "question": current.label}}))
        cells.append(nbformat.v4.new_markdown_cell(
            "## Handing in\n\nRun every cell from the top (*Runtime → Restart and run all* in Colab), "
            "then download the notebook (*File → Download → Download .ipynb*) and hand in that file. "
            "The grader runs your notebook in a fresh kernel with a time limit per cell, then the "
            "public checks above and hidden tests; each question scores all or nothing, and a question "
            "whose cell crashes or runs too long scores zero without affecting the others."))
        prefix = f"{self.name}-{'solution' if solutions else 'student'}"
        for number, cell in enumerate(cells):
            cell["id"] = f"{prefix}-{number:03d}"
        return new_notebook(cells, {"pfcourse": {
            "assignment": self.name, "source": f"coursework/{self.path.name}",
            "generated_by": GENERATED_BY}})


# CPython 3.11 keeps the AST builder's recursion count in one place for all threads: two threads
# parsing at once (the grader's --jobs) can make a parse fail with "SystemError: AST constructor
# recursion depth mismatch", most often beside one that hits the depth limit (1 + 1 + ... 5,000 terms).
# Every parse of a submission's cell therefore holds this lock.
_PARSE_LOCK = threading.Lock()


def defined_functions(source: str) -> list[str]:
    """Top-level ``def`` names of a code cell (empty if it does not parse)."""
    try:
        with _PARSE_LOCK:
            tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):   # e.g. 1 + 1 + ... 5,000 terms
        return []
    return [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def split_hidden_test(source: str, where: str) -> HiddenTest:
    """Split a hidden-tests cell at its ``# ---- grader ----`` line; check both parts (see the README)."""
    lines = source.splitlines()
    marks = [n for n, line in enumerate(lines) if line.rstrip() == GRADER_LINE]
    if len(marks) != 1:
        raise AssignmentError(f"{where}: a hidden-tests cell needs exactly one line `{GRADER_LINE}` between "
                              "its probe (student's process, binds `probe`) and its check (grader's process).")
    probe, check = "\n".join(lines[:marks[0]]), "\n".join(lines[marks[0] + 1:])
    try:
        probe_tree, _ = ast.parse(probe), ast.parse(check)
    except SyntaxError as err:
        raise AssignmentError(f"{where}: the hidden test does not parse: {err}") from None
    if any(isinstance(node, ast.Assert) for node in ast.walk(probe_tree)):
        raise AssignmentError(f"{where}: an assert above `{GRADER_LINE}` would run in the student's process; "
                              "record the value in `probe` and assert below the line.")
    binds = any(isinstance(node, ast.Name) and node.id == "probe" and isinstance(node.ctx, ast.Store)
                for node in ast.walk(probe_tree))
    if not binds:
        raise AssignmentError(f"{where}: the probe part (above `{GRADER_LINE}`) must bind `probe`, a dict of plain data.")
    problem = check_rules(check)
    if problem:
        raise AssignmentError(f"{where}: the check (below `{GRADER_LINE}`) {problem} "
                              "(coursework/README.md, 'Hidden tests').")
    return HiddenTest(probe=probe, check=check)


def check_rules(check: str) -> str | None:
    """What makes a check unable to fail closed, or ``None``: the rules of coursework/README.md.

    1. ``probe`` is read only as ``probe["key"]``, the first argument of an ``expect_...`` helper
       (:mod:`.expect`), which checks the value's type, shape, length and finiteness first;
    2. at least one comparison (``expect_close``, ``expect_equal``, ``expect_sympy``) takes a probe
       value, ``probe["key"]`` itself, and a reference that does not depend on the probe: its
       ``want`` mentions no name bound, anywhere in the check, from anything that mentions
       ``probe`` (a flow-insensitive taint: conservative, never fooled by the order of lines);
    3. every ``zip(...)`` passes ``strict=True``, and no ``expect_...`` or ``zip`` is redefined.
    """
    tree = ast.parse(check)
    helpers = (*expect.COMPARISONS, *expect.VALIDATORS)
    reads = {id(call.args[0]) for call in _calls(tree, helpers) if call.args and _is_probe_read(call.args[0])}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "probe":
            parent = getattr(node, "parent", None)
            if not (isinstance(parent, ast.Subscript) and id(parent) in reads):
                return (f"uses `probe` on its line {node.lineno} other than as `expect_...(probe[\"key\"], ...)`: "
                        "read every probe value through a helper that checks its type and shape")
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)) and _reserved(node.id) \
                or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _reserved(node.name):
            return f"redefines `{getattr(node, 'id', getattr(node, 'name', ''))}` on its line {node.lineno}"
    for call in _calls(tree, ("zip",)):
        if not any(k.arg == "strict" and isinstance(k.value, ast.Constant) and k.value.value is True
                   for k in call.keywords):
            return f"calls `zip` without `strict=True` on its line {call.lineno} (a short list would skip the test)"
    tainted = _tainted_names(tree)
    for call in _calls(tree, expect.COMPARISONS):
        want = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "want"), None)
        if call.args and _is_probe_read(call.args[0]) and want is not None and not _mentions(want, tainted):
            return None
    return ("compares no probe value with a reference of its own: call `expect_close`, `expect_equal` or "
            "`expect_sympy` with `probe[\"key\"]` and a `want` computed without the probe")


def _reserved(name: str) -> bool:
    return name == "zip" or name.startswith("expect_")


def _is_probe_read(node) -> bool:
    return (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "probe"
            and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str))


def _calls(tree, names) -> list[ast.Call]:
    """Calls of the plain names ``names`` in ``tree`` (every node also gets its ``parent``)."""
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child.parent = node
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names]


def _mentions(node, names: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node))


def _bound_names(target) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def _pairs(target, value, iterating: bool = False):
    """(names, expression they are bound from) for ``target = value`` (or ``for target in value``),
    element by element where the code shows it: ``a, b = x, y``; ``for a, b in zip(x, y)``;
    ``for n, a in enumerate(x)``; else every name of ``target`` from all of ``value``."""
    if isinstance(target, (ast.Tuple, ast.List)) and not any(isinstance(e, ast.Starred) for e in target.elts):
        parts, n = None, len(target.elts)
        if not iterating and isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == n:
            parts = value.elts
        elif iterating and isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
            if value.func.id == "zip" and len(value.args) == n:
                parts = value.args
            elif value.func.id == "enumerate" and len(value.args) == 1 and n == 2:
                parts = [ast.Constant(0), value.args[0]]
        if parts is not None:
            for t, v in zip(target.elts, parts, strict=True):
                yield from _pairs(t, v)
            return
    yield _bound_names(target), value


def _tainted_names(tree) -> set[str]:
    """Names bound (anywhere) from an expression that mentions ``probe`` or another such name."""
    bindings = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            bindings += [pair for target in node.targets for pair in _pairs(target, node.value)]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            bindings += list(_pairs(node.target, node.value))
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            bindings += list(_pairs(node.target, node.iter, iterating=True))
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            bindings += list(_pairs(node.optional_vars, node.context_expr))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bindings.append(({node.name}, node))
    tainted, grew = {"probe"}, True
    while grew:
        grew = False
        for names, value in bindings:
            if not names <= tainted and _mentions(value, tainted):
                tainted |= names
                grew = True
    return tainted


def public_check_source(code: str, question: Question) -> str:
    return (f"{PUBLIC_MARKER} {question.number} ({question.label}): run this cell to test your answer.\n"
            f"{code.rstrip()}\n"
            f"print(\"Question {question.number}: the public checks pass (the grader also runs hidden tests).\")")


def stub_solution(source: str, number: int) -> str:
    """Replace each ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block by a stub that raises."""
    out, inside = [], False
    for line in source.splitlines():
        begin = BEGIN.match(line)
        if begin:
            indent = begin.group(1)
            out.append(f"{indent}# YOUR CODE HERE (replace the next line)")
            out.append(f"{indent}raise NotImplementedError(\"Question {number}: write your answer here\")")
            inside = True
        elif END.match(line):
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def solution_lines(source: str) -> list[str]:
    """The stripped code lines between the solution markers of an answer cell."""
    lines, inside = [], False
    for line in source.splitlines():
        if BEGIN.match(line):
            inside = True
        elif END.match(line):
            inside = False
        elif inside and line.strip() and not line.strip().startswith("#"):
            lines.append(line.strip())
    return lines


def assignment_sources(root: str | Path | None = None) -> list[Path]:
    """``coursework/NN_name.md`` files (one per chapter that has an assignment)."""
    root = repository_root(root)
    return sorted(p for p in (root / "coursework").glob("*.md") if re.match(r"^\d+_", p.name))


def load_assignment(path: str | Path, root: str | Path | None = None) -> Assignment:
    """Parse and validate an assignment source; raise :class:`AssignmentError` with what to fix."""
    import jupytext

    path = Path(path).resolve()
    root = repository_root(root) if root is not None else _root_of(path)
    chapter = root / "book" / f"{path.stem}.md"
    if not chapter.exists():
        raise AssignmentError(f"{path}: no chapter book/{path.stem}.md; an assignment is named after its chapter.")
    nb = jupytext.read(path)
    labels = myst.exercise_labels(chapter)
    cells: list[tuple[str, object]] = []
    questions: list[Question] = []
    title = ""
    current: Question | None = None
    for number, cell in enumerate(nb.cells):
        where = f"{path.name}, cell {number}"
        if cell.cell_type == "markdown":
            label = cell.metadata.get("question")
            if label is None:
                if current is not None:
                    raise AssignmentError(f"{where}: Markdown between the cells of question {current.label}; "
                                          "put it in the question's own cell.")
                cells.append(("markdown", cell.source))
                heading = re.search(r"^# (.+)$", cell.source, re.M)
                title = title or (heading.group(1).strip() if heading else "")
                continue
            if label not in labels:
                raise AssignmentError(f"{where}: question {label!r} is not an exercise of {chapter.name} "
                                      f"(its exercises: {', '.join(labels) or 'none'}).")
            if any(q.label == label for q in questions):
                raise AssignmentError(f"{where}: question {label!r} appears twice.")
            current = Question(label=label, number=len(questions) + 1,
                               points=float(cell.metadata.get("points", 1)), prompt=cell.source)
            questions.append(current)
            cells.append(("question", current))
            continue
        if cell.cell_type != "code":
            continue
        roles = [t for t in cell.metadata.get("tags", []) if t in ROLES]
        if len(roles) != 1:
            raise AssignmentError(f"{where}: a code cell needs exactly one of the tags {ROLES} "
                                  f"(MyST: `:tags: [answer]`), it has {cell.metadata.get('tags', [])}.")
        role, source = roles[0], cell.source
        if role == "setup":
            current = None
        elif current is None:
            raise AssignmentError(f"{where}: a {role} cell outside a question; open one with "
                                  "+++ {\"question\": \"<exercise label>\"}.")
        if role == "answer":
            _check_markers(source, where)
            current.answers.append(source)
        elif role == "public-tests":
            current.public_tests.append(source)
        elif role == "hidden-tests":
            current.hidden_tests.append(split_hidden_test(source, where))
        elif role == "wrong-answer":
            current.wrong_answers.append(source)
        cells.append((role, source))
    _check_questions(questions, path)
    return Assignment(name=path.stem, path=path, chapter=chapter, title=title or path.stem,
                      cells=cells, questions=questions)


def _check_questions(questions: list[Question], path: Path) -> None:
    """Every question has its cells; a wrong answer defines what the answer defines."""
    for q in questions:
        if q.wrong_answers and set(defined_functions("\n".join(q.wrong_answers))) != set(q.functions):
            raise AssignmentError(f"{path.name}: question {q.label}: a wrong-answer cell replaces the answer "
                                  f"cell, so it defines the same functions ({', '.join(q.functions)}).")
        missing = [kind for kind, items in (("answer", q.answers), ("public-tests", q.public_tests),
                                            ("hidden-tests", q.hidden_tests)) if not items]
        if missing:
            raise AssignmentError(f"{path.name}: question {q.label} has no {' and no '.join(missing)} cell.")
    if not questions:
        raise AssignmentError(f"{path.name}: no questions.")


def _root_of(path: Path) -> Path:
    for parent in path.parents:
        if (parent / "book").is_dir() and (parent / "_config.yml").exists():
            return parent
    raise AssignmentError(f"{path} is not inside the pfcourse repository (no book/ above it).")


def _check_markers(source: str, where: str) -> None:
    begins = [m for m in map(BEGIN.match, source.splitlines()) if m]
    ends = [line for line in source.splitlines() if END.match(line)]
    if not begins or len(begins) != len(ends):
        raise AssignmentError(f"{where}: an answer cell needs matching '# BEGIN SOLUTION' / '# END SOLUTION' lines.")
    if any(not m.group(1) for m in begins):
        raise AssignmentError(f"{where}: put the solution inside a function (indent '# BEGIN SOLUTION'): "
                              "the student stub must raise NotImplementedError when called, not when the cell runs.")
