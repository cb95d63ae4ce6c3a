"""The book builds strictly, and the strict gate really fails on a broken cell or a warning."""
import re
import subprocess
import sys
from datetime import timezone
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import dev  # noqa: E402
from tools import execute  # noqa: E402
import minibook  # noqa: E402

pytestmark = pytest.mark.book

# The browser checks of the built book (tests/book_browser.py) are collected here, in the module that
# builds the book: xdist's loadfile keeps one file on one worker, so the book is built once per run.
from book_browser import (book_html, browser, server, test_every_page_is_checked,  # noqa: E402,F401
                          test_layout_checks_catch_what_does_not_fit, test_page_in_browser,
                          test_slider_check_sees_a_slider_move_and_a_stuck_one)

CHAPTERS = [line.split("file:")[1].strip() for line in (ROOT / "_toc.yml").read_text().splitlines()
            if "file:" in line]


def test_toc_lists_every_chapter_in_book_folder():
    listed = {Path(c).stem for c in CHAPTERS} | {"00_preface"}
    on_disk = {p.stem for p in (ROOT / "book").glob("*.md")}
    assert on_disk == listed, f"chapters not in _toc.yml or missing: {on_disk ^ listed}"


def test_only_the_book_is_a_source_of_the_book():
    """Sphinx reads every file its include_patterns take and its exclude_patterns leave (_config.yml):
    a folder of the checkout, one the commands make (.venv-lowest/, made by the tests while the book
    builds) or an instructor's (.hidden_subs/), read as a source, would have its notebooks executed
    and fail the strict build. Sphinx's own discovery, over this checkout as it is, finds book/ alone
    (tests/test_build_sequence.py plants notebooks around a mini book and builds it)."""
    import yaml
    from sphinx.project import Project

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    found = Project(ROOT, [".md", ".ipynb", ".rst"]).discover(
        config["exclude_patterns"], config["sphinx"]["config"]["include_patterns"])
    assert found == {f"book/{p.stem}" for p in (ROOT / "book").glob("*.md")}, \
        f"Sphinx would read {sorted(found)}: narrow include_patterns or exclude_patterns in _config.yml"


def test_book_builds_strictly(built_book):
    """`python3 dev.py book`: every chapter executed, -W -n --keep-going, into _build/html."""
    code, results = built_book
    failed = [r["chapter"] for r in results if r["backend"] == "default" and r["error"]]
    assert not failed, f"chapters failed to execute: {failed} (tracebacks above)"
    assert code == 0 or any(r["error"] for r in results), "the book build failed: see the log above"
    html = ROOT / "_build" / "html"
    for chapter in ["book/00_preface", *CHAPTERS]:
        page = html / f"{chapter}.html"
        assert page.exists(), f"{page} was not built"
    for chapter in CHAPTERS:
        source = (ROOT / f"{chapter}.md").read_text()
        page = (html / f"{chapter}.html").read_text()
        assert "Traceback (most recent call last)" not in page, f"{chapter} shows a traceback"
        if "plots." in source or "plt." in source:
            assert "_images/" in page or "data:image/png" in page or "animation" in page, \
                f"{chapter} draws figures but its page has none (inline backend?)"


def test_network_chapters_pass_under_a_second_backend(built_book):
    """Float32 training at the edge of stability is chaotic and XLA's CPU code differs between
    processors; every assertion of the chapters that train networks must hold on any of them. CI
    executes those chapters again with XLA restricted to SSE4.2, which changes float32 rounding (as
    `test_second_backend_changes_float32_results` shows), and fails if any assertion fails there.
    A chapter that passed there before, with the same code, package and processor, is not run again
    (`tools/execute.py`'s record, `test_second_backend_record_follows_what_the_outcome_depends_on`)."""
    _, results = built_book
    second = {r["chapter"]: r for r in results if r["backend"] == "sse4.2"}
    failed = {name: r["error"][-3000:] for name, r in second.items() if r["error"]}
    assert not failed, f"chapters that fail under XLA_FLAGS=--xla_cpu_max_isa=SSE4_2: {failed}"
    missing = [name for name in execute.NETWORK_CHAPTERS
               if not execute.second_backend_passed(ROOT / "book" / f"{name}.md")]
    assert not missing, f"no pass under the second backend for the code as it is now: {missing}"


def test_second_backend_record_follows_what_the_outcome_depends_on(tmp_path, monkeypatch):
    """A recorded pass under the second backend matches only the chapter's code, package source,
    requirements and processor it ran with: a prose edit keeps it, any of those changed drops it."""
    (tmp_path / "pfcourse").mkdir()
    (tmp_path / "pfcourse" / "flows.py").write_text("x = 1\n")
    (tmp_path / "requirements.txt").write_text("jax==0.10.2\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    chapter = tmp_path / "06_edge_of_stability.md"
    page = ("---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
            "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
            "# T\n\nProse.\n\n```{code-cell} ipython3\nprint(1)\n```\n")
    chapter.write_text(page)
    key = execute.second_backend_key(chapter, root=tmp_path)
    execute._record_pass(chapter, {"backend": "sse4.2", "seconds": 1.0}, key, tmp_path)
    assert execute.second_backend_passed(chapter, root=tmp_path)
    chapter.write_text(page.replace("Prose.", "Other prose."))
    assert execute.second_backend_passed(chapter, root=tmp_path), "a prose edit needs no new run"
    for path, edit in [(chapter, page.replace("print(1)", "print(2)")),
                       (tmp_path / "pfcourse" / "flows.py", "x = 2\n"),
                       (tmp_path / "requirements.txt", "jax==0.10.3\n")]:
        before = path.read_text()
        path.write_text(edit)
        assert not execute.second_backend_passed(chapter, root=tmp_path), path.name
        path.write_text(before)
    assert execute.second_backend_passed(chapter, root=tmp_path)
    monkeypatch.setattr(execute.os, "cpu_count", lambda: 1234)
    assert not execute.second_backend_passed(chapter, root=tmp_path), "another machine runs it again"


def test_second_backend_changes_float32_results():
    """The second backend is really another floating-point backend: the same float32 tanh-MLP
    gradient steps under `lax.scan` end in other digits with XLA restricted to SSE4.2."""
    code = ("import jax, jax.numpy as jnp\n"
            "k1, k2, k3 = jax.random.split(jax.random.key(0), 3)\n"
            "x = jax.random.normal(k1, (256, 64)); y = jax.random.normal(k2, (256, 10))\n"
            "w = [0.2 * jax.random.normal(k, s) for k, s in zip(jax.random.split(k3, 3), [(64, 100), (100, 100), (100, 10)])]\n"
            "def loss(w):\n"
            "    h = jnp.tanh(jnp.tanh(x @ w[0]) @ w[1]) @ w[2]\n"
            "    return 0.5 * jnp.mean(jnp.sum((h - y) ** 2, 1))\n"
            "step = lambda w, _: (jax.tree.map(lambda a, g: a - 0.5 * g, w, jax.grad(loss)(w)), None)\n"
            "w, _ = jax.lax.scan(step, w, None, length=200)\n"
            "print(repr(float(loss(w))))\n")
    outputs = {}
    for name, flags in execute.BACKENDS.items():
        env = {**dev._env(), **flags}
        run = subprocess.run([str(dev.PY), "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        outputs[name] = float(run.stdout.split()[-1])
    assert outputs["default"] != outputs["sse4.2"], outputs


def test_rebuild_reuses_the_execution_cache(built_book):
    """After the build every chapter's code is in the execution cache, so a rebuild executes nothing
    (tools/execute.py plans no work), a prose edit re-executes nothing and a code edit re-executes its
    chapter alone; the strict build itself executed nothing (each chapter's cache entry written in
    this run was written by tools/execute.py). Read from the cache and the plan, never from a build
    log, which says nothing after an earlier `dev.py book` left the build incremental (issue 26);
    tests/test_build_sequence.py runs the commands one after another on a mini book."""
    import jupytext
    from conftest import STARTED
    from jupyter_cache import get_cache

    chapters = execute.toc_chapters()
    records = execute.cached(chapters)
    assert all(records.values()), f"not in the execution cache: {[p.stem for p, r in records.items() if not r]}"
    assert execute.plan(chapters, second_backend=False) == [], "an unchanged chapter would run again"
    by_build = [p.stem for p, r in records.items() if r.data.get("executed_by") != execute.EXECUTED_BY
                and r.created.replace(tzinfo=r.created.tzinfo or timezone.utc).timestamp() >= STARTED]
    assert not by_build, f"the strict build executed these chapters itself: {by_build}"
    cache = get_cache(execute.cache_folder())
    for path in chapters:
        nb = jupytext.read(path)
        nb.cells.append(nbformat.v4.new_markdown_cell("An edit of the prose."))
        cache.match_cache_notebook(nb)            # raises KeyError if a prose edit would execute it
        nb.cells.append(nbformat.v4.new_code_cell("1 + 1"))
        with pytest.raises(KeyError):
            cache.match_cache_notebook(nb)


def _mini_book(tmp_path: Path, body: str) -> Path:
    """A one-page book that uses the project's real _config.yml (so it tests the real gate)."""
    return minibook.make(tmp_path, {"page": "# A page\n\n" + body})


_build = minibook.build


def test_gate_fails_on_a_broken_cell(tmp_path):
    book = _mini_book(tmp_path, "```{code-cell} ipython3\n1 / 0\n```\n")
    result = _build(book)
    assert result.returncode != 0
    assert "ZeroDivisionError" in result.stdout + result.stderr


def test_gate_fails_on_a_warning(tmp_path):
    book = _mini_book(tmp_path, "See {ref}`no-such-label`.\n\n```{code-cell} ipython3\n1 + 1\n```\n")
    result = _build(book)
    assert result.returncode != 0
    assert "no-such-label" in result.stdout + result.stderr


def test_gate_passes_a_good_page(tmp_path):
    book = _mini_book(tmp_path, "```{code-cell} ipython3\nprint(1 + 1)\n```\n")
    result = _build(book)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


SOLUTIONS_PAGE = (
    "# A page\n\n:::{exercise}\n:label: ex-one\n\nFirst exercise.\n:::\n\n"
    ":::{solution} ex-one\n:class: dropdown\n\nPLAIN-SOLUTION-TEXT\n:::\n\n"
    ":::{exercise}\n:label: ex-two\n\nSecond exercise.\n:::\n\n"
    ":::{solution-start} ex-two\n:class: dropdown\n:::\n\nGATED-SOLUTION-TEXT\n\n"
    "```{code-cell} ipython3\nprint('GATED' + '-OUTPUT')\n```\n\n:::{solution-end}\n:::\n\n"
    ":::{exercise}\n:label: ex-three\n\nThird exercise.\n:::\n\n"
    ":::{solution} ex-three\n:class: dropdown\n\nGRADED-PLAIN-TEXT\n:::\n")
# an assignment next to the book grades the second exercise (a gated solution) and the third (a plain one)
COURSEWORK = "".join(f'+++ {{"question": "{label}", "points": 1}}\n\nQuestion.\n\n' for label in ("ex-two", "ex-three"))


def _built_page(folder: Path, solutions: str) -> str:
    from pfcourse_instructor import common

    env = dev._env()
    env.pop(common.HIDE_SOLUTIONS_ENV, None)
    env[common.SOLUTIONS_ENV] = solutions
    book = minibook.make(folder, {"page": SOLUTIONS_PAGE})
    (book / "coursework").mkdir()
    (book / "coursework" / "page.md").write_text(minibook.HEADER + COURSEWORK)
    result = minibook.build(book, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return minibook.page(book, "page")


def test_graded_solutions_are_hidden_by_default_and_the_switch_shows_or_hides_all(tmp_path):
    from pfcourse_instructor.sphinx_ext import GRADED_NOTE

    term = _built_page(tmp_path / "term", "ungraded")        # the default (PFCOURSE_SOLUTIONS unset)
    assert "PLAIN-SOLUTION-TEXT" in term, "an exercise no assignment grades keeps its solution"
    assert re.search(r'class="[^"]*solution[^"]*dropdown', term.replace(GRADED_NOTE, "")), \
        "solutions are collapsed (dropdown)"
    assert len(re.findall(r'class="[^"]*solution[^"]*dropdown', term)) == 1, "only the ungraded one is a solution"
    for text in ("GATED-SOLUTION-TEXT", "GATED-OUTPUT", "GRADED-PLAIN-TEXT"):
        assert text not in term, f"{text}: a graded exercise's solution is shown in the term build"
    assert term.count(GRADED_NOTE) == 2, "each left-out solution says why"
    every = _built_page(tmp_path / "all", "all")
    for text in ("PLAIN-SOLUTION-TEXT", "GATED-SOLUTION-TEXT", "GATED-OUTPUT", "GRADED-PLAIN-TEXT"):
        assert text in every, f"{text} is missing although every solution is shown"
    none = _built_page(tmp_path / "none", "none")
    assert all(f"{n} exercise" in none for n in ("First", "Second", "Third")), "the exercises stay"
    for text in ("PLAIN-SOLUTION-TEXT", "GATED-SOLUTION-TEXT", "GATED-OUTPUT", "GRADED-PLAIN-TEXT"):
        assert text not in none, f"{text} is shown although solutions are hidden"
