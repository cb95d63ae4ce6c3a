"""Forged probe replies score nothing (issue 25): checks cannot pass vacuously.

A student's process answers each probe with JSON (:mod:`pfcourse_instructor.wire`), and a hostile
one can write whatever it likes on that pipe. The verdict is :func:`grading.run_check` on that
text, so this file calls it directly, in this process, with forged texts (no sandbox: fast, and
the same function the grader runs on what comes out of the pipe):

- a submission that answers nothing and sends, for every key every check reads, the same forged
  value (empty lists, NaN, huge numbers, strings, None, ...) scores 0 on every question;
- the solution's own reply, computed here (setup cells, the answer cells, then the probe, in one
  namespace, as the student's process runs them), passes every check (so the checks can pass), and
  with any one of its values forged (a list one shorter, NaN in an array, an array scaled up, a
  value of the wrong type) fails its question;
- the loader refuses check code that could pass vacuously (``assignments.check_rules``).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from pfcourse_instructor import assignments, grading, wire
from pfcourse_instructor.assignments import AssignmentError, check_rules, load_assignment

ROOT = Path(__file__).resolve().parents[1]
SOURCES = assignments.assignment_sources(ROOT)
TIMEOUT = 300       # seconds per check: the slowest reference (assignment 6's run) takes ~10 s loaded
GENERIC = [[], [[]], None, "0", True, 0, 10 ** 400, float("nan"), float("inf"), 1e308, -1e308, {"x": 1.0},
           np.array([]), np.full(3, np.nan), np.full((2, 2), 1e300), sp.nan, sp.zoo, sp.Integer(0)]


def probe_keys(check: str) -> list[str]:
    """The keys a check reads (``probe["key"]``, the only way the loader lets it read)."""
    import ast

    return sorted({node.slice.value for node in ast.walk(ast.parse(check)) if assignments._is_probe_read(node)})


def solution_replies(assignment) -> dict[tuple[str, int], dict]:
    """Each hidden test's probe value from the instructor's solution, run in this process."""
    import jax

    jax.config.update("jax_enable_x64", True)
    namespace: dict = {"__name__": "__main__"}
    for role, payload in assignment.cells:
        if role in ("setup", "answer"):
            exec(compile(payload, f"<{assignment.name} {role}>", "exec"), namespace)
    replies = {}
    for q in assignment.questions:
        for n, test in enumerate(q.hidden_tests, 1):
            scope = dict(namespace)
            exec(compile(test.probe, f"<probe {n} of {q.label}>", "exec"), scope)
            replies[(q.label, n)] = wire.decode(wire.encode(scope["probe"]))
    return replies


def passes(assignment, label: str, reply_of) -> bool:
    """Would the question pass with ``reply_of(n)`` (a probe dict) as the reply to hidden test n?"""
    q = assignment.question(label)
    for n, test in enumerate(q.hidden_tests, 1):
        outcome = grading.run_check(test.check, wire.encode(reply_of(n)), f"<{label} {n}>", TIMEOUT)
        if not outcome.ok:
            return False
    return True


def mutations(value) -> list[tuple[str, object]]:
    """Forged versions of one genuine probe value: its structure broken, its numbers poisoned."""
    out = []
    if isinstance(value, (list, tuple)):
        out += [("empty", type(value)()), ("one short", value[:-1]), ("one more", [*value, *value[-1:]])]
        if value:
            out += [(f"[0] {what}", type(value)([forged, *value[1:]])) for what, forged in mutations(value[0])[:4]]
        else:
            out += [("not empty", [0.0])]
    elif isinstance(value, dict):
        out += [("empty dict", {})]
    elif isinstance(value, np.ndarray):
        out += [("NaN", np.full_like(value, np.nan, dtype=complex if value.dtype.kind == "c" else float)),
                ("huge", np.full(value.shape, 1e300)), ("as list", value.tolist()), ("flat", value.ravel()[:-1]),
                ("one row short", value[:-1]), ("zeros", np.zeros_like(value))]
    elif isinstance(value, bool):
        out += [("negated", not value), ("as int", int(value)), ("as str", str(value))]
    elif isinstance(value, (int, float, complex)):
        out += [("NaN", float("nan")), ("inf", float("inf")), ("huge", 1e308), ("as str", str(value)),
                ("as list", [value]), ("doubled", 2 * value + 1)]
    elif isinstance(value, sp.Basic):
        out += [("nan", sp.nan), ("zoo", sp.zoo), ("zero", sp.Integer(0)), ("a symbol", sp.Symbol("x")),
                ("as float", 0.5)]
    out += [("None", None), ("text", "forged")]
    return [(what, forged) for what, forged in out if wire.encode([forged]) != wire.encode([value])]


_REPLIES: dict[str, dict] = {}


def _replies(source: Path):
    assignment = load_assignment(source, root=ROOT)
    if assignment.name not in _REPLIES:
        _REPLIES[assignment.name] = solution_replies(assignment)
    return assignment, _REPLIES[assignment.name]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_a_reply_that_answers_nothing_scores_zero_on_every_question(source):
    assignment = load_assignment(source, root=ROOT)
    for q in assignment.questions:
        keys = sorted({k for test in q.hidden_tests for k in probe_keys(test.check)})
        for forged in GENERIC:
            assert not passes(assignment, q.label, lambda n: {k: forged for k in keys}), (
                f"{q.label} passes with every probe value forged as {forged!r}")
        assert not passes(assignment, q.label, lambda n: {}), f"{q.label} passes with an empty reply"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_the_solution_reply_passes_and_any_one_forged_value_fails(source):
    assignment, replies = _replies(source)
    for q in assignment.questions:
        assert passes(assignment, q.label, lambda n: replies[(q.label, n)]), f"{q.label}: the solution fails"
        for n, test in enumerate(q.hidden_tests, 1):
            genuine = replies[(q.label, n)]
            assert sorted(genuine) == probe_keys(test.check), f"{q.label} test {n} sends values it never checks"
            for key in genuine:
                for what, forged in mutations(genuine[key]):
                    reply = wire.encode({**genuine, key: forged})       # the others genuine
                    outcome = grading.run_check(test.check, reply, f"<{q.label} {n}>", TIMEOUT)
                    assert not outcome.ok, f"{q.label} test {n} passes with {key!r} forged ({what})"


# ---------------------------------------------------------------- the loader's rule


GOOD_CHECK = 'want = 3.14159\nexpect_close(probe["one"], want, atol=1e-9)'


@pytest.mark.parametrize("check, message", [
    ('assert abs(probe["one"] - 3.14159) < 1e-9', "other than as"),
    ('got = expect_number(probe["one"])\nassert abs(got - 3.14159) < 1e-9', "compares no probe value"),
    ('for a, b in zip([1.0], expect_array(probe["one"], (1,))):\n    assert a == b', "without `strict=True`"),
    ('got = expect_array(probe["e"], (3,))\nslope = np.polyfit(np.log([1, 2, 4]), np.log(got), 1)[0]\n'
     'expect_close(slope, 4.0, atol=0.4)', "compares no probe value"),          # a property of student numbers
    ('got = expect_number(probe["one"])\nwant = got\nexpect_close(probe["one"], want)', "compares no probe value"),
    ('x = expect_number(probe["one"])\ny = [x]\nfor w in y:\n    want = w * 1\nexpect_close(probe["one"], want)',
     "compares no probe value"),                                                   # taint through a loop
    ('expect_close(probe["one"], probe["one"])', "other than as"),
    ('got = expect_number(probe["one"])\nexpect_close(probe["one"], got)', "compares no probe value"),
    ('if "error" in probe:\n    raise AssertionError\n' + GOOD_CHECK, "other than as"),
    ('expect_close = lambda *a, **k: None\n' + GOOD_CHECK, "redefines"),
    ('expect_close(probe["one"] + 0, 3.0)', "other than as"),
])
def test_loader_refuses_checks_that_could_pass_vacuously(check, message):
    assert check_rules(GOOD_CHECK) is None
    problem = check_rules(check)
    assert problem is not None and message in problem, problem


def test_loader_accepts_element_wise_bindings_that_keep_the_reference_clean():
    check = ('cases = [(1.0, 2.0), (3.0, 4.0)]\nwant = [a * b for a, b in cases]\n'
             'got = expect_close(probe["p"], want, atol=1e-12)\n'
             'for (a, b), g in zip(cases, got, strict=True):\n    ref = a + b\n    assert g - ref < 10\n'
             'for n, g in enumerate(got):\n    other = n + 1\nexpect_close(probe["q"], other)')
    assert check_rules(check) is None


def test_loader_refuses_a_planted_bad_check_in_an_assignment(tmp_path):
    source = ROOT / "coursework" / "01_gradient_descent.md"
    for name in ("book", "tools"):
        shutil.copytree(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "coursework").mkdir()
    text = source.read_text()
    line = 'expect_sympy(probe["h_star"], 2 / (mu + L), "h_star")'
    assert text.count(line) == 1, "the planted line's anchor moved"
    for bad, message in [(f"for _ in zip([], []):\n    pass\n{line}", "strict=True"),
                         ('assert probe["h_star"] == 2 / (mu + L)', "other than as"),
                         ('h_star = expect_array(probe["h_star"], ())\n'
                          'expect_sympy(probe["rate"], 1 - h_star * mu)', "compares no probe value")]:
        planted = text.replace(line, bad).replace('expect_sympy(probe["rate"], (L - mu) / (L + mu), "rate")', "")
        (tmp_path / "coursework" / source.name).write_text(planted)
        with pytest.raises(AssignmentError, match=message):
            load_assignment(tmp_path / "coursework" / source.name, root=tmp_path)
