"""MyST Markdown of the book -> plain Jupyter Markdown that Colab and Jupyter render.

The chapters are MyST notebooks: roles (``{eq}``, ``{ref}``, ``{cite}``, ``{prf:ref}``), labelled
display maths ``$$ ... $$ (label)``, targets ``(label)=``, ``%`` comments and directives
(``:::{exercise}``, ``:::{prf:theorem}``, gated ``{solution-start}``/``{solution-end}``) that only
Sphinx understands. A notebook opened in Colab shows them as raw text. This module rewrites them into
Markdown + LaTeX that any notebook front end renders: equations get ``\\tag{C.N}`` numbers,
references become links into the published book, citations become "Author et al. (year)", and
directives become bold headings or quotes.

The MyST is read by the book's own parser: markdown-it-py configured by myst-parser
(``create_md_parser`` with the extensions of ``_config.yml``, :data:`MYST_EXTENSIONS`), so a role,
target or directive is converted exactly where the book build sees one (not inside code, maths or
an escaped ``\\{``) and a directive's options are split by myst-parser's own option parser. The
output is the source text with each MyST construct replaced in place, located by the tokens' line
maps (and, for roles, by their offsets in the inline text): everything else, line breaks included,
stays as the author wrote it. Re-rendering the token stream (e.g. with mdformat) would reflow the
text and change every notebook for no reader's benefit.

Tooling layer: used by :mod:`.notebooks` and :mod:`.assignments`; knows nothing of JAX or the
mathematics.
Book: all chapters (the Colab notebooks in ``notebooks/``).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterator

#: ``parse: myst_enable_extensions`` of ``_config.yml`` (a test keeps the two equal).
MYST_EXTENSIONS = ("amsmath", "colon_fence", "deflist", "dollarmath", "html_image", "substitution")
#: Directives whose body is not Markdown: neither converted nor indexed.
LITERAL_DIRECTIVES = {"code-cell", "code-block", "code", "sourcecode", "math", "raw"}
GATED = {"solution-start", "solution-end", "exercise-start", "exercise-end"}

PRF_NAMES = {
    "theorem": "Theorem", "lemma": "Lemma", "definition": "Definition", "proposition": "Proposition",
    "corollary": "Corollary", "remark": "Remark", "example": "Example", "conjecture": "Conjecture",
    "algorithm": "Algorithm", "assumption": "Assumption", "axiom": "Axiom", "criterion": "Criterion",
    "observation": "Observation", "property": "Property", "condition": "Condition",
}
ADMONITIONS = {"note", "tip", "hint", "important", "warning", "caution", "attention", "danger",
               "error", "seealso", "admonition", "margin", "sidebar", "dropdown", "topic", "epigraph"}


@dataclass
class Target:
    """Something a role can point at: a section, an equation, an exercise or a prf block."""

    page: str            # e.g. "book/03_principal_flow"
    kind: str            # "section" | "equation" | "exercise" | "prf"
    number: str = ""     # "3.2" for equations and exercises
    title: str = ""      # section heading, or "Theorem" / "Definition (name)"
    anchor: str = ""

    def url(self, base: str) -> str:
        return f"{base}{self.page}.html" + (f"#{self.anchor}" if self.anchor else "")


@dataclass
class BookIndex:
    """Labels of every chapter (so a notebook can link to any of them) and the bibliography."""

    base_url: str
    repo_url: str
    branch: str
    targets: dict[str, Target] = field(default_factory=dict)
    citations: dict[str, tuple[str, str]] = field(default_factory=dict)   # key -> (authors, year)
    chapter_numbers: dict[str, str] = field(default_factory=dict)         # page -> "3"
    titles: dict[str, str] = field(default_factory=dict)                  # page -> chapter title

    def raw_url(self, path: str) -> str:
        """URL of a file of the repository as served raw (images in Colab)."""
        org_repo = self.repo_url.rstrip("/").split("github.com/")[-1]
        return f"https://raw.githubusercontent.com/{org_repo}/{self.branch}/{path}"

    def colab_url(self, path: str) -> str:
        org_repo = self.repo_url.rstrip("/").split("github.com/")[-1]
        return f"https://colab.research.google.com/github/{org_repo}/blob/{self.branch}/{path}"


@dataclass
class PageContext:
    """What the converter needs to know about the page it converts."""

    index: BookIndex
    page: str

    @property
    def number(self) -> str:
        return self.index.chapter_numbers.get(self.page, "")


@dataclass(frozen=True)
class Directive:
    """A MyST directive as myst-parser splits it: ``{name} argument``, options, Markdown body."""

    name: str
    argument: str
    options: dict[str, str]
    body: str


# --- parsing: myst-parser's markdown-it configuration -------------------------------------------

@functools.cache
def parser(inline: bool = True):
    """The book's MyST parser (markdown-it-py + mdit-py-plugins, as myst-parser configures it).

    ``inline=False``: the same without the inline pass, for what needs only the blocks (labels,
    directives, targets). markdown-it's inline tokens carry no source offsets, so the role rule is
    wrapped to record where each role starts and ends in its text (``meta["span"]``).
    """
    from markdown_it.renderer import RendererHTML
    from mdit_py_plugins.myst_role.index import myst_role
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    config = MdParserConfig(enable_extensions=set(MYST_EXTENSIONS), dmath_double_inline=True)
    md = create_md_parser(config, RendererHTML)
    if not inline:
        return md.disable("inline")

    def role_with_span(state, silent: bool) -> bool:
        start = state.pos
        found = myst_role(state, silent)
        if found and not silent:
            state.tokens[-1].meta["span"] = (start, state.pos)
        return found

    md.inline.ruler.at("myst_role", role_with_span)
    return md


@functools.lru_cache(maxsize=256)
def _blocks(text: str) -> tuple:
    """The block tokens of ``text``, inline text unparsed (cached: the index, the label lists and
    the exercise statements read the same pages, in every test that builds an index)."""
    return tuple(parser(inline=False).parse(text))


def _roles(text: str) -> list:
    """The role tokens of one inline text (a paragraph, a heading, a directive's argument)."""
    if "}`" not in text:                       # every role has "}`" (``{name}`content```)
        return []
    md, children = parser(), []
    md.inline.parse(text, md, {}, children)
    return [child for child in children if child.type == "myst_role"]


def directive_of(token) -> Directive | None:
    """The directive a fence token opens (``None`` for plain code), split as myst-parser does."""
    if token.type not in ("fence", "colon_fence"):
        return None
    return _directive_parts(token.info, token.content)


@functools.lru_cache(maxsize=1024)
def _directive_parts(info: str, content: str) -> Directive | None:
    """The directive of a fence's info string and content, ``None`` for plain code (cached: every
    reader of a page asks for its directives, and option parsing is the slow part)."""
    parts = info.strip().split(maxsplit=1)
    if not parts or not (parts[0].startswith("{") and parts[0].endswith("}")):
        return None
    name = parts[0][1:-1]
    argument = parts[1].strip() if len(parts) > 1 else ""
    options, body = _split_options(content, info.strip())
    return Directive(name, argument, options, body)


def _split_options(content: str, opening: str) -> tuple[dict[str, str], str]:
    """A directive's options and the rest of its body: a ``---`` YAML block or leading ``:key:``
    lines, as myst-parser reads them (its own option parser)."""
    import yaml
    from myst_parser.parsers.options import TokenizeError, options_to_items

    lines = content.split("\n")
    try:
        if lines[0].startswith("---"):
            end = next((i for i in range(1, len(lines)) if re.match("-{3,}", lines[i])), len(lines))
            options = yaml.safe_load("\n".join(lines[1:end])) or {}
            count = end + 1
        else:
            count = next((i for i, text in enumerate(lines) if not text.lstrip().startswith(":")),
                         len(lines))
            options = dict(options_to_items("\n".join(t.lstrip()[1:] for t in lines[:count]))[0])
    except (yaml.YAMLError, TokenizeError) as err:
        raise ValueError(f"the options of the directive `{opening}` do not parse ({err}): write "
                         f"one `:key: value` per line, then a blank line before the body") from err
    if not isinstance(options, dict):
        raise ValueError(f"the options of the directive `{opening}` are not `key: value` pairs")
    return {str(k): str(v).strip() for k, v in options.items()}, "\n".join(lines[count:])


def _walk(text: str) -> Iterator:
    """The block tokens of ``text`` in document order, the bodies of directives included."""
    for token in _blocks(text):
        yield token
        directive = directive_of(token)
        if directive is not None and directive.name not in LITERAL_DIRECTIVES:
            yield from _walk(directive.body)


def directives(path: Path) -> list[Directive]:
    """Every directive of the page at ``path`` (nested ones too), in order."""
    return [d for d in map(directive_of, _walk(path.read_text())) if d is not None]


# --- rewriting text in place ----------------------------------------------------------------------

class _Source:
    """Text split into lines as markdown-it splits it, with the offset where each line starts, so
    that a block token's line map and an inline token's offsets can be turned into edits."""

    def __init__(self, text: str):
        lines = re.split(r"\r\n?|\n", text.replace("\0", "\ufffd"))    # markdown-it's normalisation
        if lines and lines[-1] == "":
            lines.pop()
        self.text = "".join(line + "\n" for line in lines)
        self.starts = [0]
        for line in lines:
            self.starts.append(self.starts[-1] + len(line) + 1)
        self.cursor: dict[int, int] = {}      # line -> offset already claimed by an inline token

    def line_edit(self, line_map: list[int], new_lines: list[str]) -> tuple[int, int, str]:
        """Replace the lines of a block token by ``new_lines``."""
        return self.starts[line_map[0]], self.starts[line_map[1]], "".join(t + "\n" for t in new_lines)

    def inline_origins(self, token, in_cell: bool) -> list[int]:
        """Where each line of an inline token's text starts in the source. Containers (``>``, a
        list's indentation) are left out of the token's text, markdown-it may turn a tab of the
        indentation into spaces, and a table cell's text has ``|`` where the source has ``\\|``:
        so each line is found from its first non-blank character, pipes escaped in a cell."""
        origins = []
        for i, part in enumerate(token.content.split("\n")):
            line, words = token.map[0] + i, part.lstrip()
            begin = max(self.starts[line], self.cursor.get(line, 0))
            written = words.replace("|", "\\|") if in_cell else words
            found = self.text.find(written, begin, self.starts[line + 1])
            if found < 0:
                raise ValueError(f"line {line + 1}: markdown-it read {part!r}, which is not in the "
                                 f"source line {self.text[self.starts[line]:self.starts[line + 1]]!r}")
            origins.append(found - (len(part) - len(words)))
            self.cursor[line] = found + len(written)
        return origins

    def role_edits(self, token, replace: Callable, in_cell: bool = False) -> list[tuple[int, int, str]]:
        """Edits that replace each role of an inline token by ``replace(role_token)``."""
        spans = _role_spans(token.content, replace)
        if not spans:
            return []
        origins, content = self.inline_origins(token, in_cell), token.content

        def offset(at: int) -> int:
            line_start = content.rfind("\n", 0, at) + 1
            escapes = content.count("|", line_start, at) if in_cell else 0
            return origins[content.count("\n", 0, at)] + at - line_start + escapes

        return [(offset(start), offset(end), new.replace("|", "\\|") if in_cell else new)
                for start, end, new in spans]

    def apply(self, edits: list[tuple[int, int, str]]) -> list[str]:
        """The lines of the text after the edits."""
        text = _splice(self.text, edits)
        return text[:-1].split("\n") if text else []


def _splice(text: str, edits: list[tuple[int, int, str]]) -> str:
    """``text`` with each ``(start, end, new)`` edit made (the edits may not overlap)."""
    out, at = [], 0
    for start, end, new in sorted(edits):
        assert start >= at, "overlapping edits"
        out += [text[at:start], new]
        at = end
    return "".join(out) + text[at:]


def _role_spans(text: str, replace: Callable) -> list[tuple[int, int, str]]:
    """``(start, end, replacement)`` of each role in an inline text."""
    return [(*role.meta["span"], replace(role)) for role in _roles(text)]


def _replace_roles(text: str, replace: Callable) -> str:
    """``text`` (one paragraph of inline Markdown) with each role replaced by ``replace(role)``."""
    return _splice(text, _role_spans(text, replace))


# --- the index of labels ------------------------------------------------------------------------

def chapter_number(stem: str) -> str:
    """``"03_principal_flow"`` -> ``"3"``; pages without a numeric prefix have none."""
    match = re.match(r"^(\d+)_", stem)
    return str(int(match.group(1))) if match else ""


def _book_urls(root: Path) -> tuple[str, str, str]:
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text())
    repo = config.get("repository", {})
    repo_url = repo.get("url", "https://github.com/pfcourse/pfcourse").rstrip("/")
    branch = repo.get("branch", "main")
    base = (config.get("html", {}) or {}).get("baseurl", "")
    if not base:
        org, name = repo_url.split("github.com/")[-1].split("/")[:2]
        base = f"https://{org}.github.io/{name}/"
    return base.rstrip("/") + "/", repo_url, branch


def _citations(bib: Path) -> dict[str, tuple[str, str]]:
    from pybtex.database import parse_file

    out = {}
    for key, entry in parse_file(str(bib)).entries.items():
        people = entry.persons.get("author", [])
        last = [" ".join(p.last_names) for p in people]
        if len(last) == 1:
            authors = last[0]
        elif len(last) == 2:
            authors = f"{last[0]} and {last[1]}"
        else:
            authors = f"{last[0]} et al." if last else key
        out[key] = (_strip_braces(authors), entry.fields.get("year", "n.d."))
    return out


def _strip_braces(text: str) -> str:
    return text.replace("{", "").replace("}", "")


def build_index(root: Path) -> BookIndex:
    """Scan ``book/*.md`` and ``references.bib`` of the repository at ``root``."""
    base, repo_url, branch = _book_urls(root)
    index = BookIndex(base_url=base, repo_url=repo_url, branch=branch)
    bib = root / "references.bib"
    if bib.exists():
        index.citations = _citations(bib)
    for path in sorted((root / "book").glob("*.md")):
        _index_page(index, path, f"book/{path.stem}")
    return index


def _numbered(chapter: str, count: int) -> str:
    return f"{chapter}.{count}" if chapter else str(count)


def _index_page(index: BookIndex, path: Path, page: str) -> None:
    """Index the sections (targets right before a heading), labelled equations, exercises and prf
    blocks of one page, numbering equations and exercises in document order."""
    number = chapter_number(path.stem)
    index.chapter_numbers[page] = number
    tokens = list(_walk(path.read_text()))
    pending: list[str] = []
    equations = exercises = 0
    for i, token in enumerate(tokens):
        if token.type == "myst_target":
            pending.append(token.content)
            continue
        if token.map is None:
            continue
        if token.type == "heading_open":
            title = _replace_roles(tokens[i + 1].content, lambda role: role.content)
            if token.tag == "h1" and page not in index.titles:
                index.titles[page] = title
            for label in pending:
                index.targets[label] = Target(page, "section", title=title, anchor=label)
        pending = []
        if token.type == "math_block_label":
            equations += 1
            index.targets[token.info] = Target(page, "equation", number=_numbered(number, equations),
                                               anchor=f"equation-{token.info}")
        directive = directive_of(token)
        if directive is not None and directive.name in ("exercise", "exercise-start"):
            exercises += 1
        if directive is not None and directive.options.get("label"):
            _index_directive(index, page, directive, _numbered(number, exercises))


def _index_directive(index: BookIndex, page: str, d: Directive, exercise_number: str) -> None:
    label = d.options["label"]
    if d.name in ("exercise", "exercise-start"):
        index.targets[label] = Target(page, "exercise", number=exercise_number, title="Exercise",
                                      anchor=label)
    elif d.name.startswith("prf:"):
        kind = PRF_NAMES.get(d.name[4:], d.name[4:].capitalize())
        index.targets[label] = Target(page, "prf", title=f"{kind} ({d.argument})" if d.argument else kind,
                                      anchor=label)


# --- roles ----------------------------------------------------------------------------------------

def convert_roles(text: str, ctx: PageContext) -> str:
    """Rewrite MyST roles in ``text`` (inline Markdown) into Markdown (links, citations, maths)."""
    return _replace_roles(text, functools.partial(_role, ctx=ctx))


def _role(token, ctx: PageContext) -> str:
    """The Markdown of one role token."""
    role, content = token.meta["name"], token.content
    if role == "eq":
        return _equation_ref(content.strip(), ctx)
    if role in ("ref", "numref", "prf:ref", "doc"):
        return _generic_ref(role, content, ctx)
    if role.startswith("cite"):
        return _citation(role, content, ctx)
    if role == "math":
        return f"${content}$"
    if role in ("sub", "sup"):
        return f"<{role}>{content}</{role}>"
    if role.startswith("glue"):                # a number the book's build computed: in a notebook,
        return f"`{_glue_key(content)}`"       # its name; the cell above prints its value
    return f"`{content}`"


def _glue_key(content: str) -> str:
    """``"08_central_flow.md::gap:.2f"`` -> ``"gap"``: the key of a ``{glue:...}`` role."""
    from pfcourse.glue import role_parts
    return role_parts(content)[1]


def _split_explicit(content: str) -> tuple[str | None, str]:
    """``"text <label>"`` -> ``("text", "label")``; ``"label"`` -> ``(None, "label")`` (Sphinx's rule)."""
    from sphinx.util.nodes import split_explicit_title

    explicit, text, label = split_explicit_title(content.strip())
    return (text if explicit else None), label.strip()


def _equation_ref(label: str, ctx: PageContext) -> str:
    target = ctx.index.targets.get(label)
    if target is None:
        return f"({label})"
    if target.page == ctx.page:
        return f"({target.number})"
    return f"[({target.number})]({target.url(ctx.index.base_url)})"


def _generic_ref(role: str, content: str, ctx: PageContext) -> str:
    text, label = _split_explicit(content)
    if role == "doc":
        page = label if label.startswith("book/") else f"book/{Path(label).name}"
        return f"[{text or ctx.index.titles.get(page, label)}]({ctx.index.base_url}{page}.html)"
    target = ctx.index.targets.get(label)
    if target is None:
        return text or label
    if text is None:
        text = f"Exercise {target.number}" if target.kind == "exercise" else target.title
    return f"[{text}]({target.url(ctx.index.base_url)})"


def _citation(role: str, content: str, ctx: PageContext) -> str:
    parts = []
    for key in [k.strip() for k in content.split(",") if k.strip()]:
        authors, year = ctx.index.citations.get(key, (key, ""))
        parts.append((authors, year))
    if role in ("cite:t", "cite:textual"):
        return "; ".join(f"{a} ({y})" for a, y in parts)
    return "(" + "; ".join(f"{a}, {y}" for a, y in parts) + ")"


# --- blocks ---------------------------------------------------------------------------------------

def quote(lines: list[str]) -> list[str]:
    """Markdown block quote of ``lines`` (a blank line becomes a bare ``>``)."""
    return [("> " + line) if line.strip() else ">" for line in lines]


def hides(hide_solutions: bool | Collection[str], label: str) -> bool:
    """Whether the solution to exercise ``label`` is left out: ``hide_solutions`` is ``True`` (every
    solution), ``False`` (none) or the labels of the exercises whose solutions are left out."""
    if isinstance(hide_solutions, bool):
        return hide_solutions
    return label in hide_solutions


def convert_markdown(source: str, ctx: PageContext, *, hide_solutions: bool | Collection[str] = False) -> str:
    """Convert one Markdown cell (no gated directives across cells: see :func:`convert_cells`)."""
    return _tidy("\n".join(_convert(source, ctx, hide_solutions)))


def _tidy(text: str) -> str:
    """No runs of blank lines, no blank lines at the ends."""
    return re.sub(r"\n[ \t]*\n(?:[ \t]*\n)+", "\n\n", text).strip("\n")


def _convert(text: str, ctx: PageContext, hide_solutions: bool | Collection[str]) -> list[str]:
    """The lines of ``text`` with every MyST construct rewritten in place (blank runs left)."""
    source = _Source(text)
    tokens, edits, replace = _blocks(source.text), [], functools.partial(_role, ctx=ctx)
    for i, token in enumerate(tokens):
        if token.type == "inline":
            in_cell = i > 0 and tokens[i - 1].type in ("th_open", "td_open")
            edits += source.role_edits(token, replace, in_cell)
            continue
        new = _block(token, source, ctx, hide_solutions) if token.map else None
        if new is not None:
            edits.append(source.line_edit(token.map, new))
    return source.apply(edits)


def _block(token, source: _Source, ctx: PageContext,
           hide_solutions: bool | Collection[str]) -> list[str] | None:
    """The lines that replace a block token, or ``None`` to keep its lines."""
    if token.type in ("myst_target", "myst_line_comment"):
        return []
    if token.type == "math_block_label":
        first, end = token.map
        lines = source.text[source.starts[first]:source.starts[end] - 1].split("\n")
        return _labelled_math(lines, token.info, ctx)
    directive = directive_of(token)
    return None if directive is None else _directive(directive, ctx, hide_solutions)


def _labelled_math(lines: list[str], label: str, ctx: PageContext) -> list[str]:
    """``$$ ... $$ (label)`` -> the same maths closed by ``\\tag{C.N}`` (the book's number)."""
    target = ctx.index.targets.get(label)
    last = lines[-1]
    before = last[:last.rfind("$$")].rstrip()
    return [*lines[:-1], *([before] if before else []),
            *([f"\\tag{{{target.number}}}"] if target else []), "$$"]


def _directive(d: Directive, ctx: PageContext, hide_solutions: bool | Collection[str]) -> list[str]:
    name, label = d.name, d.options.get("label", "")
    if name in LITERAL_DIRECTIVES:
        body = d.body.splitlines()
        return ["$$", *body, "$$"] if name == "math" else [f"```{d.argument}", *body, "```"]
    body = _convert(d.body, ctx, hide_solutions)
    if name == "exercise":
        target = ctx.index.targets.get(label)
        number = f" {target.number}" if target else ""
        title = f" ({convert_roles(d.argument, ctx)})" if d.argument else ""
        return ["", f"**Exercise{number}**{title}", "", *body, ""]
    if name == "solution":
        return [] if hides(hide_solutions, d.argument) else ["", *_solution_heading(d.argument, ctx), "", *body, ""]
    if name == "prf:proof":
        return ["", "*Proof.*", "", *body, "", "$\\square$", ""]
    if name.startswith("prf:"):
        title = PRF_NAMES.get(name[4:], name[4:].capitalize())
        arg = f" ({convert_roles(d.argument, ctx)})" if d.argument else ""
        return ["", f"**{title}{arg}.**", "", *body, ""]
    if name in ("figure", "image"):
        return _figure(d, body, ctx)
    if name in ("bibliography", "tableofcontents", "toctree", "glue:figure"):
        return []
    if name in ADMONITIONS:
        title = convert_roles(d.argument, ctx) if d.argument else name.capitalize()
        return ["", *quote([f"**{title}.**", "", *body]), ""]
    return body


def _figure(d: Directive, body: list[str], ctx: PageContext) -> list[str]:
    """An image with its caption below it; a relative path becomes the raw file on GitHub."""
    src = d.argument
    if not src.startswith(("http://", "https://")):
        src = ctx.index.raw_url(str(Path(ctx.page).parent / src))
    caption = " ".join(line.strip() for line in body if line.strip())
    return [f"![{d.options.get('alt', caption)}]({src})", "", *(["*" + caption + "*"] if caption else [])]


def _solution_heading(exercise_label: str, ctx: PageContext) -> list[str]:
    target = ctx.index.targets.get(exercise_label)
    number = f" {target.number}" if target else ""
    return [f"**Solution to Exercise{number}**"]


# --- notebooks ------------------------------------------------------------------------------------

def convert_cells(cells, ctx: PageContext, *, hide_solutions: bool | Collection[str] = False):
    """Convert the cells of a MyST notebook (``nbformat`` cells) in order.

    Handles gated ``{solution-start}`` ... ``{solution-end}`` pairs across cells: the code cells
    between them are solution cells. Returns a list of ``(cell, role)`` with role ``"solution"``
    for solution code and Markdown, else ``None``; the solutions that ``hide_solutions`` names
    (:func:`hides`) are dropped.
    """
    out = []
    solving = None                       # the exercise label of the gated solution open here
    for cell in cells:
        if cell.cell_type == "code":
            if solving is not None and hides(hide_solutions, solving):
                continue
            out.append((cell, "solution" if solving is not None else None))
            continue
        if cell.cell_type != "markdown":
            out.append((cell, None))
            continue
        segments, solving = _gated_segments(cell.source, solving, ctx)
        for label, text in segments:
            if label is not None and hides(hide_solutions, label):
                continue
            text = _tidy("\n".join(_convert(text, ctx, hide_solutions)))
            if text.strip():
                new = cell.copy()
                new["source"] = text
                out.append((new, "solution" if label is not None else None))
    return out


def _gated_segments(text: str, solving: str | None,
                    ctx: PageContext) -> tuple[list[tuple[str | None, str]], str | None]:
    """Split a Markdown cell at its gated directives: ``[(label, text)]``, ``label`` the exercise of
    the solution the text belongs to (``None`` outside solutions), and that label for a solution
    still open at the end of the cell (``solving`` is the one open at its start). A
    ``{solution-start}`` segment begins with the solution's heading; the
    ``{exercise-start}``/``{exercise-end}`` fences themselves are dropped."""
    source = _Source(text)
    segments: list[tuple[str | None, str]] = []
    current, cut = "", 0
    for token in _blocks(source.text):
        directive = directive_of(token) if token.level == 0 else None
        if directive is None or directive.name not in GATED:
            continue
        current += source.text[source.starts[cut]:source.starts[token.map[0]]]
        cut = token.map[1]
        if directive.name.startswith("solution"):
            segments.append((solving, current))
            solving = directive.argument if directive.name == "solution-start" else None
            heading = _solution_heading(directive.argument, ctx) if solving is not None else []
            current = "".join(line + "\n" for line in ["", *heading, ""]) if heading else ""
    segments.append((solving, current + source.text[source.starts[cut]:]))
    return segments, solving


def exercise_statement(path: Path, label: str, ctx: PageContext) -> str:
    """The converted body of the exercise labelled ``label`` in the chapter at ``path``."""
    for d in directives(path):
        if d.name in ("exercise", "exercise-start") and d.options.get("label") == label:
            return _tidy("\n".join(_convert(d.body, ctx, True)))
    raise KeyError(f"{path} has no exercise labelled {label!r}: check the label in the "
                   f"assignment against the chapter's :label: lines.")


def exercise_labels(path: Path) -> list[str]:
    """Labels of the exercises of a chapter, in order."""
    return [d.options.get("label", "") for d in directives(path) if d.name in ("exercise", "exercise-start")]


def solution_labels(path: Path) -> list[str]:
    """Exercise labels that have a solution (plain ``{solution}`` or gated ``{solution-start}``)."""
    return [d.argument for d in directives(path) if d.name in ("solution", "solution-start")]
