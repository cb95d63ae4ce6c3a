"""The comparisons a hidden test's check makes: a probe's value against a reference computed here.

A check (the part of a hidden test below ``# ---- grader ----``, see ``coursework/README.md``)
runs in the grader's process on values the student's process sent. None of them is trusted: a
hostile submission can send empty lists, lists of the wrong length, NaN, huge numbers or values of
the wrong type. So a check reads the probe only through these functions, which fail (with an
``AssertionError`` whose message says what was expected) unless the value has the type, the shape
and the length of the reference, and is finite:

- :func:`expect_close` (numbers, arrays, lists/tuples/dicts of them) and :func:`expect_sympy`
  (SymPy expressions and matrices) compare with a reference the check computed;
- :func:`expect_equal` compares exactly (bools, ints, strings, SymPy sets, lists of them);
- :func:`expect_array` and :func:`expect_number` only validate, for a check that then computes
  more from the value (a property on top of a comparison, never instead of one).

Each returns the validated value. The assignment loader (:func:`.assignments.check_rules`)
refuses check code that reads ``probe`` other than as ``expect_...(probe["key"], ...)``, that
has no comparison of a probe value with a value computed without the probe, or that calls
``zip`` without ``strict=True``. The check runs with these names in its namespace.

Book: none (tooling for the coursework).
"""
from __future__ import annotations

import numpy as np

COMPARISONS = ("expect_close", "expect_equal", "expect_sympy")
VALIDATORS = ("expect_array", "expect_number")
MAX_SHOWN = 120                   # characters of a student's value quoted in a reason


def _shown(value) -> str:
    """A short description of a probe value, for a reason in the CSV."""
    text = repr(value) if not isinstance(value, np.ndarray) else (
        f"an array of shape {value.shape} and dtype {value.dtype}")
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."


def _fail(message: str):
    raise AssertionError(message)


def expect_number(got, name: str = "the value", *, complex_ok: bool = False):
    """``got`` as a finite Python ``float`` (or ``complex`` if ``complex_ok``); ``bool`` is refused."""
    kinds = (int, float, complex) if complex_ok else (int, float)
    if isinstance(got, bool) or not isinstance(got, kinds):
        _fail(f"{name}: expected a {'number' if complex_ok else 'real number'}, got {_shown(got)}")
    try:
        value = got if isinstance(got, complex) else float(got)
    except OverflowError:                 # an int too large for a float
        value = float("inf")
    if not np.isfinite(value):
        _fail(f"{name}: expected a finite number, got {_shown(got)}")
    return value


def expect_array(got, shape: tuple, name: str = "the value", *, complex_ok: bool = False):
    """``got`` as a finite NumPy array of exactly ``shape`` (a number where ``shape == ()``).

    Real (bool excluded) unless ``complex_ok``. ``None`` in ``shape`` accepts any length there.
    """
    if shape == () and not isinstance(got, np.ndarray):
        return np.asarray(expect_number(got, name, complex_ok=complex_ok))
    if not isinstance(got, np.ndarray):
        _fail(f"{name}: expected an array of shape {shape}, got {_shown(got)}")
    if got.dtype.kind not in ("iufc" if complex_ok else "iuf"):
        _fail(f"{name}: expected an array of {'numbers' if complex_ok else 'real numbers'}, "
              f"got dtype {got.dtype}")
    if got.ndim != len(shape) or any(w is not None and g != w for g, w in zip(got.shape, shape, strict=True)):
        _fail(f"{name}: expected shape {shape}, got {got.shape}")
    if not np.all(np.isfinite(got)):
        _fail(f"{name}: {np.size(got) - np.count_nonzero(np.isfinite(got))} entries are not finite")
    return got


def expect_close(got, want, *, atol: float = 0.0, rtol: float = 0.0, name: str = "the value"):
    """Assert ``|got - want| <= atol + rtol |want|`` elementwise, ``got`` shaped like ``want``.

    ``want`` is the reference (a number, an array, or lists/tuples/dicts of them): ``got`` must be
    of the same structure (a list for a list, the same length, the same keys, an array of the same
    shape for an array, a number for a number) and finite. Return ``got``.
    """
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            _fail(f"{name}: expected {len(want)} values, got {_shown(got)}")
        for n, (g, w) in enumerate(zip(got, want, strict=True)):
            expect_close(g, w, atol=atol, rtol=rtol, name=f"{name}[{n}]")
        return got
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            _fail(f"{name}: expected the keys {sorted(want)}, got {_shown(got)}")
        for key in want:
            expect_close(got[key], want[key], atol=atol, rtol=rtol, name=f"{name}[{key!r}]")
        return got
    reference = np.asarray(want)
    if not np.all(np.isfinite(reference)):
        raise ValueError(f"{name}: the check's reference is not finite (a bug in the hidden test)")
    complex_ok = np.iscomplexobj(reference)
    if isinstance(want, np.ndarray):
        value = expect_array(got, reference.shape, name, complex_ok=complex_ok)
    else:
        value = np.asarray(expect_number(got, name, complex_ok=complex_ok))
    error = np.abs(value - reference)
    bound = atol + rtol * np.abs(reference)
    if not np.all(error <= bound):
        worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.ndim else ()
        _fail(f"{name}: off by {float(error[worst]):.3g} (allowed {float(bound[worst]):.3g})"
              + (f" at index {tuple(int(i) for i in worst)}" if worst else "")
              + f": {_shown(value[worst].item())} instead of {_shown(reference[worst].item())}")
    return got


def expect_equal(got, want, name: str = "the value"):
    """Assert ``got == want`` exactly, with the same type (``bool`` for ``bool``, ``list`` for ``list``)."""
    if isinstance(want, (list, tuple)):
        if type(got) is not type(want) or len(got) != len(want):
            _fail(f"{name}: expected a {type(want).__name__} of {len(want)} values, got {_shown(got)}")
        for n, (g, w) in enumerate(zip(got, want, strict=True)):
            expect_equal(g, w, f"{name}[{n}]")
        return got
    if isinstance(want, np.ndarray):
        if not (isinstance(got, np.ndarray) and got.shape == want.shape and got.dtype.kind == want.dtype.kind
                and np.array_equal(got, want)):
            _fail(f"{name}: expected {_shown(want)}, got {_shown(got)}")
        return got
    if type(got) is not type(want) or not bool(got == want):
        _fail(f"{name}: expected {_shown(want)}, got {_shown(got)}")
    return got


def expect_sympy(got, want, name: str = "the value", *, normalize=None, at: list[dict] | None = None,
                 tol: float = 1e-12):
    """Assert the SymPy value ``got`` equals ``want``: ``sp.simplify(got - want) == 0``.

    ``got`` must be a SymPy expression (a matrix of ``want``'s shape for a matrix); with ``at``, in
    ``want``'s symbols and those of ``at``. ``normalize`` rewrites the difference before it is simplified
    (e.g. ``lambda d: sp.expand_log(d, force=True)``). With ``at`` (a list of substitutions), the
    two are compared there numerically instead, to ``tol`` relative: for answers that are equal on
    the problem's domain (a branch of a logarithm) but not as expressions. Return ``got``.
    """
    import sympy as sp

    if isinstance(want, sp.MatrixBase):
        if not isinstance(got, sp.MatrixBase) or got.shape != want.shape:
            _fail(f"{name}: expected a SymPy Matrix of shape {want.shape}, got {_shown(got)}")
    elif not isinstance(got, sp.Expr):
        _fail(f"{name}: expected a SymPy expression, got {_shown(got)}")
    if at is not None:
        allowed = set(want.free_symbols).union(*(point.keys() for point in at))
        if not got.free_symbols <= allowed:
            extra = ", ".join(sorted(map(str, got.free_symbols - allowed)))
            _fail(f"{name}: the symbols {extra} should not appear (expected some of {sorted(map(str, allowed))})")
        for point in at:
            value, reference = complex(got.subs(point)), complex(want.subs(point))
            if not (np.isfinite(value) and abs(value - reference) <= tol * max(1.0, abs(reference))):
                _fail(f"{name} = {_shown(got)} is {value:.12g} at {point}, expected {reference:.12g}")
        return got
    difference = got - want
    difference = normalize(difference) if normalize is not None else difference
    zero = sp.zeros(*want.shape) if isinstance(want, sp.MatrixBase) else 0
    if sp.simplify(difference) != zero:
        _fail(f"{name} = {_shown(got)} is not {_shown(want)}")
    return got


def namespace() -> dict:
    """The helpers by name, for the namespace a check runs in."""
    return {name: globals()[name] for name in (*COMPARISONS, *VALIDATORS)}
