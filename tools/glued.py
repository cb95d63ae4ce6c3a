"""Show what a chapter's prose says once its glued numbers are filled in, from the execution cache.

    .venv/bin/python tools/glued.py book/NN_name.md [...]

For each chapter (executed first: ``tools/execute.py book/NN_name.md``): every value its cells glued
(``pfcourse.glue.glue``) and every sentence of its prose with each ``{glue:text}`name:fmt``` role
replaced by the value as the book's build formats it (myst-nb's ``format_plain_text``). Exits 1 when
the chapter is not in the cache, or a role names a value no cell glued, or its format fails: what the
strict build would stop on, in seconds instead of minutes.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pfcourse.glue import ROLE, role_parts  # noqa: E402


def glued_values(path: Path) -> dict[str, str] | None:
    """``{name: text/plain}`` of every value the cached execution of ``path`` glued; None if the
    chapter's code is not in the cache."""
    import jupytext
    from jupyter_cache import get_cache

    from tools.execute import cache_folder

    cache = get_cache(cache_folder())
    try:
        _, notebook = cache.merge_match_into_notebook(jupytext.read(path))
    except KeyError:
        return None
    values = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is not None:
                data = output.get("data", {})
                values[name] = next((v for k, v in data.items() if k.endswith("text/plain")), None)
    return values


def render(path: Path) -> int:
    """Print the chapter's glued values and its prose lines with the roles filled in; the number of
    problems (roles without a value, failing formats)."""
    from myst_nb.core.variables import format_plain_text

    values = glued_values(path)
    if values is None:
        print(f"{path.name}: not in the execution cache; run tools/execute.py {path} first")
        return 1
    print(f"== {path.name}: {len(values)} glued values")
    for name, text in values.items():
        print(f"   {name} = {text}")
    problems = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        def fill(role):
            nonlocal problems
            _, key, fmt = role_parts(role.group(2))
            if key not in values:
                problems += 1
                return f"<<MISSING {key}>>"
            try:
                return format_plain_text(values[key], fmt)
            except Exception as error:                     # noqa: BLE001 - reported, counted
                problems += 1
                return f"<<FORMAT {key}:{fmt}: {error}>>"
        if ROLE.search(line):
            print(f"{number:5d}: {ROLE.sub(fill, line)}")
    return problems


if __name__ == "__main__":
    sys.exit(1 if sum(render(Path(arg)) for arg in sys.argv[1:]) else 0)
