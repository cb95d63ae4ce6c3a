"""The book's numbers: a cell records what it computed, and the prose shows that record.

``glue(name, value)`` stores ``value`` under ``name`` in the executed chapter (myst-nb's glue), and
the prose writes ``{glue:text}`name:.3g``` where the number goes, so every number the page gives about
a run is the number its cell computed, on the machine that built the page (book, *Conventions*).
Outside a Jupyter Book build (Colab, a laptop without myst-nb) it records nothing: the notebook's
prose names the quantity (``name``) and the cell's own printout shows its value.

Examples::

    >>> from pfcourse.glue import glue
    >>> glue("answer", 42.0)
    42.0
"""
from __future__ import annotations

import numbers
import re

import numpy as np

#: A glue role in a page's prose: ``{glue:text}`name:fmt```, or ``{glue:text}`page.md::name:fmt```
#: for a number glued on another page (``:fmt``, myst-nb's format spec, optional; ``:text`` too).
ROLE = re.compile(r"\{glue(?::(\w+))?\}`([^`]+)`")


def role_parts(content: str) -> tuple[str, str, str]:
    """The page (``""``: this one), the name and the format of a glue role's content.

    >>> role_parts("08_central_flow.md::gap:.2f")
    ('08_central_flow.md', 'gap', '.2f')
    >>> role_parts("sweep_s")
    ('', 'sweep_s', '')
    """
    page, _, rest = content.strip().rpartition("::")
    name, _, fmt = rest.partition(":")
    return page, name, fmt


def plain(value):
    """``value`` as Python's own ``float``/``int``/``str``, so a format spec (``:.3g``) applies to it:
    a NumPy or JAX scalar prints as ``np.float64(5.5)``, which no spec can format.

    >>> plain(np.float32(0.5)), plain(np.int64(3)), plain("DAL")
    (0.5, 3, 'DAL')
    """
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.shape != ():
        raise ValueError(f"glue takes one number or a string, not an array of shape {array.shape}: "
                         "glue each entry under its own name")
    item = array.item()
    if isinstance(item, bool) or not isinstance(item, numbers.Real):
        raise ValueError(f"glue takes a real number or a string, not {type(item).__name__}")
    return item


def glue(name: str, value, display: bool = False):
    """Record ``value`` (a real number or a string) under ``name`` for the page's prose
    (``{glue:text}`name:fmt```); returns ``value`` as :func:`plain` gives it.

    In a Jupyter Book build this is ``myst_nb.glue(name, value, display)``; where myst-nb is not
    installed (Colab) it records nothing.
    """
    if not name.isidentifier():
        raise ValueError(f"a glue name is a Python identifier (letters, digits, _), not {name!r}")
    value = plain(value)
    try:
        from myst_nb import glue as record
    except ImportError:
        return value
    record(name, value, display=display)
    return value
