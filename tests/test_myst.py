"""The MyST -> notebook Markdown converter (``pfcourse_instructor.myst``), one construct at a time.

The whole book is covered by tests/test_notebooks.py: the committed notebooks are what the sources
generate, and no MyST is left in their Markdown. Here small pages check each construct, the index
of labels, and the places where the book's parser (myst-parser's markdown-it), not a pattern,
decides what is MyST: code, maths, escapes and roles wrapped over two lines.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

from pfcourse_instructor import myst

ROOT = Path(__file__).resolve().parents[1]
HEADER = "---\nkernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
CHAPTER = HEADER + """\
(sec-intro)=
# Intro to {math}`h`

$$
a = b
$$ (eq-first)

```{code-cell} ipython3
# (not-a-target)=
x = 1
```

:::{prf:theorem} Descent
:label: thm-descent

$$ c = d $$ (eq-second)
:::

::::{dropdown} More

:::{exercise}
:label: ex-one

Prove {eq}`eq-first`.
:::
::::

:::{exercise} Second
---
label: ex-two
---
Use {prf:ref}`thm-descent`.
:::

:::{solution} ex-two
Done.
:::
"""


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    """A repository with the real ``_config.yml`` and bibliography and one chapter, number 3."""
    root = tmp_path_factory.mktemp("repo")
    (root / "book").mkdir()
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    shutil.copy(ROOT / "references.bib", root / "references.bib")
    (root / "book" / "03_toy.md").write_text(CHAPTER)
    return root


@pytest.fixture(scope="module")
def ctx(book) -> myst.PageContext:
    return myst.PageContext(myst.build_index(book), "book/03_toy")


def convert(text: str, ctx: myst.PageContext, **kw) -> str:
    return myst.convert_markdown(text, ctx, **kw)


def test_the_parser_reads_myst_as_the_book_configures_it():
    parse = yaml.safe_load((ROOT / "_config.yml").read_text())["parse"]
    assert set(myst.MYST_EXTENSIONS) == set(parse["myst_enable_extensions"])
    assert parse["myst_dmath_double_inline"] is True, "myst.parser() sets dmath_double_inline"


def test_the_index_numbers_equations_and_exercises_in_document_order(book, ctx):
    targets = ctx.index.targets
    assert ctx.index.titles["book/03_toy"] == "Intro to h", "roles in a title keep their text"
    assert (targets["sec-intro"].kind, targets["sec-intro"].title) == ("section", "Intro to h")
    assert targets["eq-first"].number == "3.1"
    assert targets["eq-second"].number == "3.2", "an equation inside a directive is numbered"
    assert targets["eq-second"].anchor == "equation-eq-second"
    assert targets["ex-one"].number == "3.1", "an exercise nested in a dropdown is numbered"
    assert (targets["ex-two"].number, targets["ex-two"].kind) == ("3.2", "exercise")
    assert targets["thm-descent"].title == "Theorem (Descent)"
    assert "not-a-target" not in targets, "a code cell's text is not MyST"
    chapter = book / "book" / "03_toy.md"
    assert myst.exercise_labels(chapter) == ["ex-one", "ex-two"]
    assert myst.solution_labels(chapter) == ["ex-two"]


def test_roles_become_numbers_links_and_citations(ctx):
    base = ctx.index.base_url
    assert convert("By {eq}`eq-first`.", ctx) == "By (3.1)."
    other = myst.PageContext(ctx.index, "book/04_other")
    assert convert("By {eq}`eq-first`.", other) == f"By [(3.1)]({base}book/03_toy.html#equation-eq-first)."
    assert convert("{ref}`sec-intro`", ctx) == f"[Intro to h]({base}book/03_toy.html#sec-intro)"
    assert convert("{ref}`this part <sec-intro>`", ctx) == f"[this part]({base}book/03_toy.html#sec-intro)"
    assert convert("{ref}`ex-two`", ctx) == f"[Exercise 3.2]({base}book/03_toy.html#ex-two)"
    assert convert("{prf:ref}`thm-descent`", ctx) == f"[Theorem (Descent)]({base}book/03_toy.html#thm-descent)"
    assert convert("{ref}`nowhere`", ctx) == "nowhere"
    assert convert("{cite:t}`cohen2021gradient`", ctx) == "Cohen et al. (2021)"
    assert convert("{cite:p}`cohen2021gradient,goh2017momentum`", ctx) == "(Cohen et al., 2021; Goh, 2017)"
    assert convert("{math}`x^2` and H{sub}`2`O", ctx) == "$x^2$ and H<sub>2</sub>O"
    assert convert("{kbd}`Ctrl`", ctx) == "`Ctrl`"
    # a glued number (the book's build fills it in): in a notebook, its name; the cell prints it
    assert convert("is {glue:text}`gap:.1f` points", ctx) == "is `gap` points"
    assert convert("{glue}`gap` and {glue:text}`08_central_flow.md::ratio:.2g`", ctx) == "`gap` and `ratio`"


def test_only_what_the_book_parses_as_a_role_is_converted(ctx):
    kept = ["Write `{eq}`name`` for a reference.", r"An escaped \{eq}`eq-first` stays.",
            "$$\n\\text{see } {eq}`eq-first`\n$$", "Text\n\n    {eq}`eq-first` indented code",
            "```\n{eq}`eq-first`\n(sec-intro)=\n```", "<div>{eq}`eq-first`</div>"]
    for text in kept:
        assert convert(text, ctx) == text
    assert convert("As in {ref}`the\nintro <sec-intro>` above.", ctx) == \
        f"As in [the intro]({ctx.index.base_url}book/03_toy.html#sec-intro) above.", "a wrapped role"


def test_roles_in_containers_keep_the_container(ctx):
    text = "> see {eq}`eq-first`\n> and {eq}`eq-second`\n\n- item {eq}`eq-first`\n\tcont {eq}`eq-second`"
    assert convert(text, ctx) == "> see (3.1)\n> and (3.2)\n\n- item (3.1)\n\tcont (3.2)"
    table = "| a | b |\n|---|---|\n| {eq}`eq-first` \\| x | {eq}`eq-first` {math}`\\|v\\|` |"
    assert convert(table, ctx) == "| a | b |\n|---|---|\n| (3.1) \\| x | (3.1) $\\|v\\|$ |", \
        "two equal cells on a line, and pipes that stay escaped in a cell"


def test_prose_line_breaks_targets_comments_and_labelled_maths(ctx):
    text = ("(sec-x)=\n## Part\n\nA line\nwrapped here,  \nand {eq}`eq-first`.\n% a comment\n\n"
            "$$\nx = 1\n$$ (eq-first)\n\n$$ y $$ (eq-second)")
    assert convert(text, ctx) == ("## Part\n\nA line\nwrapped here,  \nand (3.1).\n\n"
                                  "$$\nx = 1\n\\tag{3.1}\n$$\n\n$$ y\n\\tag{3.2}\n$$")


def test_directives_become_headings_and_quotes(ctx):
    exercise = ":::{exercise} On {math}`h`\n:label: ex-two\n\nBody {eq}`eq-first`.\n:::"
    assert convert(exercise, ctx) == "**Exercise 3.2** (On $h$)\n\nBody (3.1)."
    assert convert(":::{prf:theorem} Descent\nIt holds.\n:::", ctx) == "**Theorem (Descent).**\n\nIt holds."
    assert convert(":::{prf:proof}\nClear.\n:::", ctx) == "*Proof.*\n\nClear.\n\n$\\square$"
    assert convert("```{note}\nMind it.\n```", ctx) == "> **Note.**\n>\n> Mind it."
    nested = "::::{exercise}\n:label: ex-one\n\n:::{hint}\nTry.\n:::\n::::"
    assert convert(nested, ctx) == "**Exercise 3.1**\n\n> **Hint.**\n>\n> Try."
    solution = "Before.\n\n:::{solution} ex-two\n:class: dropdown\nDone.\n:::\n\nAfter."
    assert convert(solution, ctx) == "Before.\n\n**Solution to Exercise 3.2**\n\nDone.\n\nAfter."
    assert convert(solution, ctx, hide_solutions=True) == "Before.\n\nAfter."
    assert convert(solution, ctx, hide_solutions={"ex-two"}) == "Before.\n\nAfter."    # graded: left out
    assert convert(solution, ctx, hide_solutions={"ex-one"}) == convert(solution, ctx)
    figure = ":::{figure} img/a.png\n:alt: A plot\nThe caption.\n:::"
    assert convert(figure, ctx) == (f"![A plot]({ctx.index.raw_url('book/img/a.png')})\n\n*The caption.*")
    assert convert("```{code-block} python\n:linenos:\nx = 1\n```", ctx) == "```python\nx = 1\n```"


def test_bad_directive_options_say_what_to_write(ctx):
    with pytest.raises(ValueError, match=r"(?s)`\{exercise\} Title`.*write one `:key: value` per line"):
        convert(':::{exercise} Title\n:label: "unclosed\nBody\n:::', ctx)
    with pytest.raises(ValueError, match="a blank line before the body"):
        convert("::::{note}\n:::{hint}\nTry.\n:::\n::::", ctx)       # myst-parser: "Invalid options"


def test_gated_solutions_span_cells(ctx):
    cells = [nbformat.v4.new_markdown_cell(
                 ":::{exercise}\n:label: ex-two\nDo it.\n:::\n\n:::{solution-start} ex-two\n:::\nFirst,"),
             nbformat.v4.new_code_cell("answer = 42"),
             nbformat.v4.new_markdown_cell("so {eq}`eq-first`.\n\n:::{solution-end}\n:::\n\nNext.")]
    shown = [(cell.source, role) for cell, role in myst.convert_cells(cells, ctx)]
    assert shown == [("**Exercise 3.2**\n\nDo it.", None),
                     ("**Solution to Exercise 3.2**\n\nFirst,", "solution"),
                     ("answer = 42", "solution"), ("so (3.1).", "solution"), ("Next.", None)]
    hidden = [cell.source for cell, _ in myst.convert_cells(cells, ctx, hide_solutions=True)]
    assert hidden == ["**Exercise 3.2**\n\nDo it.", "Next."]
    graded = [cell.source for cell, _ in myst.convert_cells(cells, ctx, hide_solutions={"ex-two"})]
    assert graded == hidden
    other = [(cell.source, role) for cell, role in myst.convert_cells(cells, ctx, hide_solutions={"ex-one"})]
    assert other == shown


def test_exercise_statement(book, ctx):
    chapter = book / "book" / "03_toy.md"
    assert myst.exercise_statement(chapter, "ex-one", ctx) == "Prove (3.1)."
    with pytest.raises(KeyError, match="no exercise labelled 'ex-none'"):
        myst.exercise_statement(chapter, "ex-none", ctx)
