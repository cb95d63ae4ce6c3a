"""The README's commands in any order, any number of times, and a build that reads only its toc (issue 26).

Both run on throw-away books (tests/minibook.py: the project's real ``_config.yml``, two tiny chapters,
cheap cells, no jax) built by the machinery of ``python3 dev.py book`` and ``python3 dev.py test``:
``dev.build_book``, which executes with tools/execute.py, then builds strictly. What ran is counted
from the execution report (tools/execute.py ``--report``), the execution cache (each chapter's entry,
found by the hash of its code, as the build finds it) and a file each cell appends to: never from a
build log, which says only what one build did and depends on what an earlier command left.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

import minibook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import dev  # noqa: E402
from tools import execute  # noqa: E402

pytestmark = pytest.mark.book


def _cell(runs: Path, name: str) -> str:
    """A code cell that appends ``name`` to ``runs``: one line per execution, whoever executes it."""
    return (f"```{{code-cell}} ipython3\nwith open({str(runs)!r}, 'a') as f:\n"
            f"    f.write({name!r} + '\\n')\n```\n")


def _two_chapter_book(folder: Path) -> tuple[Path, Path]:
    """The mini book: a root page without code and two chapters whose cells count their executions."""
    runs = folder / "runs.txt"
    book = minibook.make(folder / "book", {
        "index": "# Mini book\n\nNo code here.\n",
        "one": "# One\n\nFirst prose.\n\n" + _cell(runs, "one"),
        "two": "# Two\n\nSecond prose.\n\n" + _cell(runs, "two")})
    return book, runs


def _step(book: Path, test_build: bool) -> list[str]:
    """One command: `dev.py book` (``test_build=False``) or the build of `dev.py test` (the
    ``built_book`` fixture: the second backend too, and a log). Returns the chapters it executed."""
    report = book / "_build" / "execution-report.json"
    log = book / "build.log" if test_build else None
    code = dev.build_book(second_backend=test_build, report=report, log=log, book=book)
    assert code == 0, f"the build failed (exit {code}): see the output above"
    return sorted(r["chapter"] for r in json.loads(report.read_text()))


def _counts(runs: Path) -> dict[str, int]:
    lines = runs.read_text().split() if runs.exists() else []
    return {name: lines.count(name) for name in ("one", "two")}


def _entries(book: Path) -> dict[str, tuple[int, str | None]]:
    """Each chapter's cache entry: (its key, who wrote it). Executing a chapter again, by
    tools/execute.py or by the build, replaces its entry with one of a new key."""
    chapters = execute.toc_chapters(book)
    records = execute.cached(chapters, execute.cache_folder(book))
    assert all(records.values()), f"not in the execution cache: {[p.stem for p, r in records.items() if not r]}"
    return {p.stem: (r.pk, r.data.get("executed_by")) for p, r in records.items()}


def _edit(page: Path, old: str, new: str) -> None:
    text = page.read_text()
    assert old in text, f"{old!r} is not in {page}"
    page.write_text(text.replace(old, new))


STRAYS = [".hidden_subs/alice.ipynb", ".hidden_subs/bob.md", "submissions/carol.ipynb", "submissions/dave.md",
          "book/.drafts/erin.ipynb", "book/extra/frank.md", "book/grace.ipynb", ".hidden_subs/deep/.x/heidi.md"]


def _stray(path: Path, marker: Path) -> None:
    """An .ipynb, or a MyST .md notebook, whose one cell writes ``marker`` (as a hostile one might)."""
    code = f"open({str(marker)!r}, 'w').write('executed')\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".ipynb":
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                               "display_name": "Python 3"}})
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), nbformat.v4.new_code_cell(code)]
        nbformat.write(nb, path)
    else:
        path.write_text(minibook.HEADER + f"# {path.stem}\n\n```{{code-cell}} ipython3\n{code}```\n")


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """The mini book, with notebooks not in its toc lying around it (:data:`STRAYS`), through book,
    test, test, a prose edit then test, a code edit then book. Each step must pass; returns the book,
    the chapters each step executed and the cache entries after it, the executions each chapter's
    cell counted, and the folder the strays' cells would write to."""
    folder = tmp_path_factory.mktemp("sequence")
    book, runs = _two_chapter_book(folder)
    markers = folder / "markers"
    markers.mkdir()
    for stray in STRAYS:
        _stray(book / stray, markers / Path(stray).stem)
    executed, entries = {}, {}

    def step(name: str, test_build: bool) -> None:
        executed[name] = _step(book, test_build)
        entries[name] = _entries(book)

    step("book", False)
    step("test", True)
    step("test again", True)
    _edit(book / "book" / "one.md", "First prose.", "First prose, edited.")
    step("prose edit, test", True)
    _edit(book / "book" / "two.md", "f.write('two' + '\\n')", "f.write('two' + '\\n')\nprint('EDITED' + '-OUTPUT')")
    step("code edit, book", False)
    return book, executed, entries, _counts(runs), markers


def test_any_order_any_number_of_times_reexecutes_only_changed_code(sequence):
    """book, test, test, a prose edit then test, a code edit then book (issue 26): each passes (the
    fixture), the first executes both chapters, the code edit its chapter alone, the others none;
    the build itself never executes (every cache entry is tools/execute.py's, and an entry executed
    again would have a new key), and no chapter ran more often than its code changed."""
    book, executed, entries, counts, _ = sequence
    assert executed == {"book": ["one", "two"], "test": [], "test again": [], "prose edit, test": [],
                        "code edit, book": ["two"]}, executed
    first, last = entries["book"], entries["code edit, book"]
    assert {who for _, who in first.values()} == {execute.EXECUTED_BY}, "the build executed a chapter"
    for name in ("test", "test again", "prose edit, test"):
        assert entries[name] == first, f"{name}: a chapter's cache entry was replaced (executed again)"
    assert last["one"] == first["one"] and last["two"][0] != first["two"][0], (first, last)
    assert last["two"][1] == execute.EXECUTED_BY, "the build executed the edited chapter itself"
    assert counts == {"one": 1, "two": 2}, f"executions per chapter (each cell counts its runs): {counts}"
    assert execute.plan(execute.toc_chapters(book), False, execute.cache_folder(book)) == []
    assert "First prose, edited." in minibook.page(book, "one"), "the prose edit is not in the page"
    assert "EDITED-OUTPUT" in minibook.page(book, "two"), "the edited code's output is not in the page"


def test_the_build_reads_and_executes_only_its_toc(sequence):
    """Notebooks in a dot-folder, in a plain folder and beside the chapters, there through all the
    builds of :func:`sequence`: none is read (no page, no source; a read one would also fail the
    strict build: 'not included in any toctree') and none is executed (its marker is not written)."""
    book, _, _, _, markers = sequence
    assert sorted(p.name for p in markers.iterdir()) == [], "the build executed a notebook not in its toc"
    html = book / "_build" / "html"
    read = {str(p.relative_to(html / "_sources").with_suffix("")) for p in (html / "_sources").rglob("*.*")}
    assert read == {"book/index", "book/one", "book/two"}, f"the build read {sorted(read)}"
    pages = {p.stem for p in html.rglob("*.html")}
    assert not pages & {Path(s).stem for s in STRAYS}, "a notebook not in the toc became a page"


def test_a_chapter_edited_while_it_runs_is_reported_not_built(tmp_path):
    """An author saves a chapter while `dev.py book` executes it: what ran is not what the file says
    now, so the build would execute it again itself. The chapter fails with that reason (not a
    guess about cell metadata), the other chapters are cached, and the book is not built."""
    book, _ = _two_chapter_book(tmp_path)
    one = book / "book" / "one.md"
    _edit(one, "First prose.\n\n", f"First prose.\n\n```{{code-cell}} ipython3\nwith open({str(one)!r}, 'a') as f:\n"
                                   "    f.write('\\n```{code-cell} ipython3\\n2\\n```\\n')\n```\n\n")
    report = book / "_build" / "execution-report.json"
    assert dev.build_book(report=report, book=book) != 0
    errors = {r["chapter"]: r["error"] for r in json.loads(report.read_text())}
    assert errors["two"] is None and "one.md was edited while it was executed" in errors["one"], errors
    assert execute.pending(execute.toc_chapters(book), execute.cache_folder(book)) == [one]
    assert not (book / "_build" / "html").exists(), "the book was built although a chapter failed"
