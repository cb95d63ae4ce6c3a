"""How a probe's values cross from the student's process to the grader's: JSON, never pickle.

:func:`encode` runs in the student's process (:mod:`.student`) and turns ``probe`` into JSON text:
``None``, ``bool``, ``int``, ``float`` and ``str`` as themselves, lists as lists, and tagged objects
for the rest: ``{"__tuple__": [...]}``, ``{"__dict__": {...}}`` (string keys only),
``{"__complex__": [re, im]}``, ``{"__ndarray__": {"dtype", "shape", "data"}}`` (numbers only, the
bytes in base64) and ``{"__sympy__": srepr}``.

:func:`decode` runs in the grader's process on text the student controls, so it trusts nothing: a
size limit, a whitelist of tags and dtypes, and SymPy expressions rebuilt by :func:`rebuild_sympy`,
a walk over the syntax tree of the ``srepr`` text that only calls SymPy classes by name with
numbers (strings only for the names of symbols, functions and floats). Nothing is ``eval``-ed or
``sympify``-ed. SymPy evaluates as it rebuilds (so the value equals the student's), which can take
long for a hostile value: the grader decodes under its time limit per test.

Book: none (tooling for the coursework).
"""
from __future__ import annotations

import ast
import base64
import json
import math
import sys

MAX_BYTES = 64 * 2**20            # a probe larger than this is refused
MAX_SYMPY_NODES = 200_000
NUMBER_KINDS = "biufc"            # numpy dtype kinds that may cross: bool, int, uint, float, complex
STRING_ARGS = {"Symbol", "Dummy", "Wild", "Function", "Float", "Str"}   # classes whose text args are names


class WireError(ValueError):
    """A probe value that cannot cross (the message says which and why)."""


def encode(value) -> str:
    """JSON text of ``value`` (student side); raise :class:`WireError` for what cannot cross."""
    return json.dumps(_encode(value, "probe", 0))


def _encode(value, where: str, depth: int):
    if depth > 50:
        raise WireError(f"{where}: nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, complex):
        return {"__complex__": [value.real, value.imag]}
    if isinstance(value, (list, tuple)):
        items = [_encode(v, f"{where}[{n}]", depth + 1) for n, v in enumerate(value)]
        return items if isinstance(value, list) else {"__tuple__": items}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise WireError(f"{where}: a dict with keys that are not strings")
        return {"__dict__": {k: _encode(v, f"{where}[{k!r}]", depth + 1) for k, v in value.items()}}
    sympy = sys.modules.get("sympy")
    if sympy is not None and isinstance(value, (sympy.Basic, sympy.MatrixBase)):
        return {"__sympy__": sympy.srepr(value)}
    if hasattr(value, "__array__") or type(value).__module__ == "numpy":
        return _encode_array(value, where)
    raise WireError(f"{where}: a {type(value).__name__} cannot be sent to the grader (plain data only)")


def _encode_array(value, where: str):
    import numpy as np

    array = np.asarray(value)
    if array.dtype.kind not in NUMBER_KINDS:
        raise WireError(f"{where}: an array of {array.dtype} (numbers only)")
    if array.ndim == 0:
        return _encode(array.item(), where, 0)
    array = np.ascontiguousarray(array)
    return {"__ndarray__": {"dtype": array.dtype.str, "shape": list(array.shape),
                            "data": base64.b64encode(array.tobytes()).decode("ascii")}}


def decode(text: str | bytes) -> dict:
    """The probe dict from JSON text (grader side): arrays as NumPy arrays, SymPy rebuilt safely."""
    if len(text) > MAX_BYTES:
        raise WireError(f"the probe is {len(text)} bytes, more than {MAX_BYTES}")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise WireError(f"the probe is not valid JSON: {err}") from None
    value = _decode(raw, 0)
    if not isinstance(value, dict):
        raise WireError(f"probe is a {type(value).__name__}, not a dict")
    return value


def _decode(raw, depth: int):
    if depth > 60:
        raise WireError("the probe is nested too deeply")
    if raw is None or isinstance(raw, (bool, int, float, str)):
        return raw
    if isinstance(raw, list):
        return [_decode(v, depth + 1) for v in raw]
    if not isinstance(raw, dict) or len(raw) != 1:
        raise WireError("an untagged object in the probe")
    (tag, body), = raw.items()
    if tag == "__tuple__" and isinstance(body, list):
        return tuple(_decode(v, depth + 1) for v in body)
    if tag == "__dict__" and isinstance(body, dict):
        return {str(k): _decode(v, depth + 1) for k, v in body.items()}
    if tag == "__complex__" and isinstance(body, list) and len(body) == 2 \
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in body):
        return complex(body[0], body[1])
    if tag == "__ndarray__" and isinstance(body, dict):
        return _decode_array(body)
    if tag == "__sympy__" and isinstance(body, str):
        return rebuild_sympy(body)
    raise WireError(f"an unknown tag {tag!r} in the probe")


def _decode_array(body: dict):
    import numpy as np

    try:
        dtype = np.dtype(str(body["dtype"]))
        shape = [int(n) for n in body["shape"]]
        data = base64.b64decode(str(body["data"]), validate=True)
    except (KeyError, TypeError, ValueError) as err:
        raise WireError(f"a malformed array in the probe: {err}") from None
    if dtype.kind not in NUMBER_KINDS or dtype.fields or dtype.subdtype or any(n < 0 for n in shape):
        raise WireError(f"an array of {dtype} in the probe (numbers only)")
    if math.prod(shape) * dtype.itemsize != len(data):
        raise WireError("an array whose data does not fill its shape")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def rebuild_sympy(text: str):
    """A SymPy object from its ``srepr`` text, by a whitelisted walk (no eval, no sympify)."""
    import sympy as sp

    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise WireError(f"a SymPy value that does not parse: {err}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_SYMPY_NODES:
        raise WireError("a SymPy value too large to rebuild")
    try:
        return _build(tree.body, sp)
    except RecursionError:
        raise WireError("a SymPy value nested too deeply") from None
    except WireError:
        raise
    except Exception as err:        # a SymPy constructor refused its arguments
        raise WireError(f"a SymPy value that does not rebuild: {type(err).__name__}: {err}"[:300]) from None


def _build(node, sp):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, bool, str, type(None)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and type(node.operand.value) in (int, float):
        return -node.operand.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_build(n, sp) for n in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Name):
        value = getattr(sp, node.id, None)
        if isinstance(value, sp.Basic):              # oo, pi, E, I, zoo, nan, true, false, ...
            return value
        raise WireError(f"SymPy value: the name {node.id!r} is not allowed")
    if isinstance(node, ast.Call):
        return _build_call(node, sp)
    raise WireError(f"SymPy value: a {type(node).__name__} is not allowed")


def _build_call(node: ast.Call, sp):
    if isinstance(node.func, ast.Name):
        name = node.func.id
        cls = _sympy_classes(sp).get(name)
        if cls is None:
            raise WireError(f"SymPy value: {name!r} is not a SymPy class")
    elif isinstance(node.func, ast.Call):            # Function('f')(x): an undefined function applied
        name, cls = "", _build_call(node.func, sp)
        if not isinstance(cls, sp.core.function.UndefinedFunction):
            raise WireError("SymPy value: only an undefined Function may be applied")
    else:
        raise WireError("SymPy value: a call of something that is not a SymPy class")
    args = [_build(a, sp) for a in node.args]
    if name not in STRING_ARGS and any(isinstance(a, str) for a in _flatten(args)):
        raise WireError(f"SymPy value: {name or 'a function'} given text (only names of symbols may be text)")
    kwargs = {}
    for kw in node.keywords:
        if kw.arg is None or not isinstance(kw.value, ast.Constant) or type(kw.value.value) not in (bool, int, type(None)):
            raise WireError("SymPy value: keyword arguments may only be booleans or integers")
        kwargs[kw.arg] = kw.value.value
    return cls(*args, **kwargs)


_CLASSES: dict[str, type] = {}


def _sympy_classes(sp) -> dict[str, type]:
    """SymPy's own classes by name (``srepr`` names some, like ``ExprCondPair``, not exported)."""
    if not _CLASSES:
        todo = [sp.Basic, sp.MatrixBase]
        while todo:
            cls = todo.pop()
            todo.extend(cls.__subclasses__())
            module = getattr(cls, "__module__", None) or ""
            if module.startswith("sympy.") and not isinstance(cls, sp.core.function.UndefinedFunction) \
                    and not cls.__name__.startswith("_"):
                _CLASSES.setdefault(cls.__name__, cls)
        for name in dir(sp):                  # the exported class wins where two share a name
            value = getattr(sp, name)
            if isinstance(value, type) and issubclass(value, (sp.Basic, sp.MatrixBase)):
                _CLASSES[name] = value
    return _CLASSES


def _flatten(items):
    for item in items:
        if isinstance(item, (list, tuple)):
            yield from _flatten(item)
        else:
            yield item
