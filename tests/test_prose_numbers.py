"""Every number the book's prose gives about a run is the number its cell computed (issue 22).

A chapter records a run's numbers with :func:`pfcourse.glue.glue` and its prose shows them with
myst-nb's ``{glue:text}`name:fmt``` role, so the page says what its own build printed, on whatever
processor built it. This test reads the prose of ``book/*.md`` with the book's own MyST parser
(``pfcourse_instructor.myst.parser``: markdown-it-py as myst-parser configures it), text and maths
alike, inside admonitions, exercises and solutions too, and fails on any *typed* number of the kinds
a run produces:

* a decimal (``5.5``, ``0.047``), a power of ten or scientific form (``10^{-5}``, ``3e-4``, ``10⁻⁶⁰``),
  a percentage (``18%``, ``18\\%``) or a ratio (``2.6×``);

unless it is

* glued (a ``{glue:...}`` role is not text, so it is never read as typed);
* the value of a literal of the chapter's own code cells (``h = 0.4`` or ``10^{-3}`` in the prose,
  ``0.4`` or ``1e-3`` in a cell: a setting the reader sees being used);
* a name (``DAL-0.5``) or a reference (``arXiv:2302.01952``);
* in :data:`ALLOWED` (``tests/prose_numbers_allowed/PAGE.toml``), with the text around it and the
  reason: an exact constant the maths states (``\\log 3.5/2.5 \\approx 0.50``), a setting of another
  paper, a bound chosen in advance.

Integers without ``%`` or ``×`` are not read (step counts, sizes, seeds, chapter numbers): a count a
run produced must still be glued, which the review, not this test, checks.
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "instructor"))
from pfcourse.glue import ROLE, role_parts  # noqa: E402
from pfcourse_instructor import myst  # noqa: E402

PAGES = sorted((ROOT / "book").glob("*.md"))
ALLOWED_DIR = Path(__file__).with_name("prose_numbers_allowed")
#: every allowed typed number: ``{"page", "number", "near", "reason"}`` (one TOML file per page)
ALLOWED = [{"page": path.stem, **entry} for path in sorted(ALLOWED_DIR.glob("*.toml"))
           for entry in tomllib.loads(path.read_text()).get("allowed", [])]
SUPERSCRIPT = "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"
#: a typed number of a kind a run produces (see the module's docstring)
NUMBER = re.compile(rf"""(?<![\w.])(
      \d+(?:\.\d+)?\s*\\?%                         # a percentage: 18%, 18\\%, 2.5 %
    | \d+(?:\.\d+)?\s*(?:×|\\times)(?!\s*10)       # a ratio: 2.6×, 3\\times (not 3 \\times 10^4)
    | (?:\d+(?:\.\d+)?\s*(?:×|\\times)\s*)?10(?:\^\{{?[-−]?\d+\}}?|\^-?\d|[{SUPERSCRIPT}]+)  # 10^{{-5}}, 8 × 10⁻¹³
    | \d*\.?\d+e[-+]?\d+                            # 3e-4
    | \d+\.\d+                                      # a decimal: 5.5
    )""", re.VERBOSE)
NAMES = re.compile(r"(?:DAL|PF|IGR)-\d+(?:\.\d+)?|arXiv:\s*\d{4}\.\d{4,5}|\d{4}\.\d{4,5}v?\d*")
VERBATIM = {"code-cell", "code", "code-block", "raw", "glue:figure", "glue:math"}


def _texts(text: str):
    """``(line, kind, content)`` of every piece of prose in a MyST page: ``kind`` is ``"text"`` or
    ``"math"``; directive bodies (admonitions, exercises, solutions) are read as MyST too."""
    for token in myst.parser().parse(text):
        if token.type in ("fence", "colon_fence"):
            name = re.match(r"\{([\w:-]+)\}", token.info.strip())
            if name and name.group(1) == "math":
                yield token.map[0] + 1, "math", token.content
            elif name and name.group(1) not in VERBATIM:
                body = re.sub(r"^:[\w-]+:.*$", "", token.content, flags=re.M)
                argument = token.info.strip()[name.end():]
                yield token.map[0] + 1, "text", argument
                yield from ((token.map[0] + 1 + line, kind, content) for line, kind, content in _texts(body))
        elif token.type in ("math_block", "math_block_label", "amsmath"):
            yield token.map[0] + 1, "math", token.content
        elif token.type == "inline":
            for child in token.children or ():
                if child.type == "text":
                    yield token.map[0] + 1, "text", child.content
                elif child.type.startswith("math"):
                    yield token.map[0] + 1, "math", child.content


def _code_literals(text: str) -> set[float]:
    """The values of the decimal and scientific literals of a page's code cells (``0.4``, ``1e-3``)."""
    cells = jupytext.reads(text, fmt="myst").cells
    code = "\n".join(cell.source for cell in cells if cell.cell_type == "code")
    return {float(literal) for literal in re.findall(r"(?<![\w.])(?:\d+\.\d*|\d*\.?\d+e[-+]?\d+)", code)}


def _value(number: str) -> float | None:
    """The value a typed number states (``"18\\%"`` -> 18, ``"10^{-3}"`` -> 0.001, ``"2.6×"`` -> 2.6),
    to compare with the code's literals; ``None`` for a form this does not read."""
    text = re.sub(r"\s*(\\?%|×|\\times)$", "", number.strip()).translate(
        str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹−", "-0123456789-"))
    power = re.fullmatch(r"(?:(\d+(?:\.\d+)?)\s*(?:×|\\times)\s*)?10\^?\{?(-?\d+)\}?", text)
    try:
        return float(power.group(1) or 1) * 10.0 ** int(power.group(2)) if power else float(text)
    except ValueError:
        return None


def typed_numbers(page: str, text: str, allowed: list[dict]) -> list[tuple[int, str, str]]:
    """``(line, number, context)`` of each typed number of ``text`` (the page ``page``) that is not
    glued, a code literal of the page, a name, or in ``allowed``."""
    literals = _code_literals(text)
    mine = [entry for entry in allowed if entry["page"] == page]
    found = []
    for line, kind, content in _texts(text):
        masked = NAMES.sub(lambda m: " " * len(m.group(0)), content)
        for match in NUMBER.finditer(masked):
            number = match.group(1).strip()
            context = content[max(0, match.start() - 50): match.end() + 30].replace("\n", " ")
            value = _value(number)
            if value is not None and any(abs(value - literal) <= 1e-12 * abs(literal) for literal in literals):
                continue
            if any(entry["number"] == number and entry["near"] in content for entry in mine):
                continue
            found.append((line, number, context))
    return found


@pytest.mark.parametrize("path", PAGES, ids=lambda path: path.stem)
def test_no_typed_number_in_the_prose(path):
    typed = typed_numbers(path.stem, path.read_text(), ALLOWED)
    assert not typed, (f"{path.name}: numbers typed in the prose; glue them from the cell that computes "
                       "them ({glue:text}`name:fmt`), or add them to tests/prose_numbers_allowed/PAGE.toml "
                       "with the reason:\n" + "\n".join(f"  line {line}: {number!r} in ...{context}..."
                                                    for line, number, context in typed))


PLANTED = """# A page

```{code-cell} ipython3
h = 0.4
glue("gap", 5.5)
```

With $h = 0.4$ (a setting), DAL-0.5 (a name) is {glue:text}`gap:.1f` points less accurate
(glued), as arXiv:2302.01952 says; $\\log 3.5/2.5 \\approx 0.50$ is exact.

:::{note}
A typed 7.5% hides in a note, and $\\sigma = 0.061$ in maths.
:::

Growth of 2.6× per step, then 8 \\times 10^{-13}.
"""


def test_the_scan_fails_on_planted_typed_numbers():
    """The planted page: the setting, the name, the glued number, the reference and the allowed
    constant pass; the typed percentage in the note, the typed decimal in maths and the typed ratio
    and power of ten in the text are each reported, with their lines."""
    allowed = [{"page": "planted", "number": "0.50", "near": "\\log 3.5/2.5", "reason": "exact"},
               {"page": "planted", "number": "3.5", "near": "\\log 3.5/2.5", "reason": "exact"},
               {"page": "planted", "number": "2.5", "near": "\\log 3.5/2.5", "reason": "exact"}]
    typed = typed_numbers("planted", PLANTED, allowed)
    assert [(line, number) for line, number, _ in typed] == [
        (12, "7.5%"), (12, "0.061"), (15, "2.6×"), (15, "8 \\times 10^{-13}")], typed


def test_every_glued_name_in_the_prose_is_glued_by_a_cell_of_its_page():
    """A ``{glue:text}`name``` whose page has no ``glue("name", ...)`` call would break the build
    late (myst-nb's warning, the strict build's error); this says which name, at once. A name from
    another page (``page::name``) must be glued there."""
    calls = {path.stem: set(re.findall(r"""glue\(\s*["'](\w+)["']""", path.read_text())) for path in PAGES}
    missing = []
    for path in PAGES:
        for role in ROLE.finditer(path.read_text()):
            page, key, _ = role_parts(role.group(2))
            page = Path(page).stem if page else path.stem
            if key not in calls.get(page, set()):
                missing.append(f"{path.name}: {role.group(0)}")
    assert not missing, "glued in the prose, never glued by a cell:\n" + "\n".join(missing)


def test_every_allowed_entry_is_still_used_and_gives_a_reason():
    """An entry of the allow-list whose text left the page, or with no reason, is an error: the list
    is what a reviewer reads, so it must say why each number may stay typed."""
    stale = []
    for entry in ALLOWED:
        page = ROOT / "book" / f"{entry['page']}.md"
        assert len(entry.get("reason", "")) > 10, entry
        if not page.exists() or not any(entry["near"] in content and entry["number"] in content
                                         for _, _, content in _texts(page.read_text())):
            stale.append(entry)
    assert not stale, f"allowed numbers no longer on their page: {stale}"
