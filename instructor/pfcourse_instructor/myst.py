"""MyST Markdown of the book -> plain Jupyter Markdown that Colab and Jupyter render.

The chapters are MyST notebooks: roles (``{eq}``, ``{ref}``, ``{cite}``, ``{prf:ref}``), labelled
display maths ``$$ ... $$ (label)`` and directives (``:::{exercise}``, ``:::{prf:theorem}``,
gated ``{solution-start}``/``{solution-end}``) that only Sphinx understands. A notebook opened in
Colab shows them as raw text. This module rewrites them into Markdown + LaTeX that any notebook
front end renders: equations get ``\\tag{C.N}`` numbers, references become links into the published
book, citations become "Author et al. (year)", and directives become bold headings or quotes.

Tooling layer: used by :mod:`.notebooks` and :mod:`.assignments`; knows nothing of JAX or the
mathematics.
Book: all chapters (the Colab notebooks in ``notebooks/``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROLE = re.compile(r"\{([\w:-]+)\}`([^`]*)`")
LABEL_LINE = re.compile(r"^\(([\w:.-]+)\)=\s*$")
FENCE_OPEN = re.compile(r"^(\s*)(:{3,}|`{3,}|~{3,})\{([\w:-]+)\}[ \t]*(.*)$")
PLAIN_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})")
OPTION = re.compile(r"^\s*:([\w-]+):\s*(.*)$")
MATH_CLOSE_LABEL = re.compile(r"^(.*)\$\$\s*\(([\w:.-]+)\)\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")

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


def _index_page(index: BookIndex, path: Path, page: str) -> None:
    number = chapter_number(path.stem)
    index.chapter_numbers[page] = number
    lines = path.read_text().splitlines()
    pending: list[str] = []
    equations = exercises = 0
    code_fence = ""                                   # the fence of an open code block, if any
    directive: tuple[str, str, str] | None = None     # (name, argument, fence) of an open directive
    for line in lines:
        if code_fence:
            if re.fullmatch(r"\s*" + re.escape(code_fence[0]) + "{%d,}\\s*" % len(code_fence), line):
                code_fence = ""
            continue
        opening = FENCE_OPEN.match(line)
        plain = PLAIN_FENCE.match(line)
        if plain and (not opening or opening.group(3) in ("code-cell", "code-block", "code")):
            code_fence = plain.group(2)
            continue
        m = LABEL_LINE.match(line)
        if m:
            pending.append(m.group(1))
            continue
        m = HEADING.match(line)
        if m:
            title = _plain_title(m.group(2))
            if len(m.group(1)) == 1 and page not in index.titles:
                index.titles[page] = title
            for label in pending:
                index.targets[label] = Target(page, "section", title=title, anchor=label)
            pending = []
            continue
        if line.strip():
            pending = []
        m = MATH_CLOSE_LABEL.match(line)
        if m:
            equations += 1
            index.targets[m.group(2)] = Target(
                page, "equation", number=f"{number}.{equations}" if number else str(equations),
                anchor=f"equation-{m.group(2)}")
            continue
        m = FENCE_OPEN.match(line)
        if m:
            name, arg = m.group(3), m.group(4).strip()
            directive = (name, arg, m.group(2))
            if name in ("exercise", "exercise-start"):
                exercises += 1
            continue
        m = OPTION.match(line)
        if m and directive and m.group(1) == "label":
            name, arg, _ = directive
            label = m.group(2).strip()
            if name in ("exercise", "exercise-start"):
                index.targets[label] = Target(page, "exercise",
                                              number=f"{number}.{exercises}" if number else str(exercises),
                                              title="Exercise", anchor=label)
            elif name.startswith("prf:"):
                kind = PRF_NAMES.get(name[4:], name[4:].capitalize())
                index.targets[label] = Target(page, "prf", title=f"{kind} ({arg})" if arg else kind,
                                              anchor=label)


def _plain_title(text: str) -> str:
    return ROLE.sub(lambda m: m.group(2), text)


@dataclass
class PageContext:
    """What the converter needs to know about the page it converts."""

    index: BookIndex
    page: str

    @property
    def number(self) -> str:
        return self.index.chapter_numbers.get(self.page, "")


def convert_roles(text: str, ctx: PageContext) -> str:
    """Rewrite MyST roles in ``text`` into Markdown (links, citations, inline maths)."""

    def replace(match: re.Match) -> str:
        role, content = match.group(1), match.group(2)
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
        return f"`{content}`"

    return ROLE.sub(replace, text)


def _split_explicit(content: str) -> tuple[str | None, str]:
    m = re.match(r"^(.*?)\s*<([^<>]+)>\s*$", content, re.S)
    return (m.group(1), m.group(2)) if m else (None, content.strip())


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
        if target.kind == "section":
            text = target.title
        elif target.kind == "exercise":
            text = f"Exercise {target.number}"
        else:
            text = target.title
    return f"[{text}]({target.url(ctx.index.base_url)})"


def _citation(role: str, content: str, ctx: PageContext) -> str:
    parts = []
    for key in [k.strip() for k in content.split(",") if k.strip()]:
        authors, year = ctx.index.citations.get(key, (key, ""))
        parts.append((authors, year))
    if role in ("cite:t", "cite:textual"):
        return "; ".join(f"{a} ({y})" for a, y in parts)
    return "(" + "; ".join(f"{a}, {y}" for a, y in parts) + ")"


@dataclass
class Directive:
    name: str
    argument: str
    options: dict[str, str]
    body: list[str]


def parse_blocks(lines: list[str]):
    """Split lines into plain runs and (possibly nested) directive blocks.

    Yields ``("text", [lines])``, ``("code", [lines])`` for ordinary fenced code, and
    ``("directive", Directive)``. A directive left open at the end of ``lines`` is closed there.
    """
    i, text = 0, []
    while i < len(lines):
        line = lines[i]
        m = FENCE_OPEN.match(line)
        plain = PLAIN_FENCE.match(line)
        if m:
            if text:
                yield "text", text
                text = []
            fence = m.group(2)
            body, j = [], i + 1
            closing = re.compile(r"^\s*" + re.escape(fence[0]) + "{%d,}\\s*$" % len(fence))
            depth = 0
            while j < len(lines):
                inner = FENCE_OPEN.match(lines[j])
                if inner and inner.group(2)[0] == fence[0] and len(inner.group(2)) == len(fence):
                    depth += 1
                elif closing.match(lines[j]):
                    if depth == 0:
                        break
                    depth -= 1
                body.append(lines[j])
                j += 1
            options = {}
            while body and OPTION.match(body[0]):
                key, value = OPTION.match(body[0]).groups()
                options[key] = value.strip()
                body = body[1:]
            yield "directive", Directive(m.group(3), m.group(4).strip(), options, body)
            i = j + 1
            continue
        if plain:
            if text:
                yield "text", text
                text = []
            fence = plain.group(2)
            block, j = [line], i + 1
            while j < len(lines) and not re.match(r"^\s*" + re.escape(fence[0]) + "{%d,}\\s*$" % len(fence),
                                                   lines[j]):
                block.append(lines[j])
                j += 1
            if j < len(lines):
                block.append(lines[j])
            yield "code", block
            i = j + 1
            continue
        text.append(line)
        i += 1
    if text:
        yield "text", text


def _text_lines(lines: list[str], ctx: PageContext) -> list[str]:
    out = []
    for line in lines:
        if LABEL_LINE.match(line) or line.startswith("% "):
            continue
        m = MATH_CLOSE_LABEL.match(line)
        if m:
            target = ctx.index.targets.get(m.group(2))
            before = m.group(1).rstrip()
            if before:
                out.append(before)
            if target:
                out.append(f"\\tag{{{target.number}}}")
            out.append("$$")
            continue
        out.append(convert_roles(line, ctx))
    return out


def quote(lines: list[str]) -> list[str]:
    """Markdown block quote of ``lines`` (a blank line becomes a bare ``>``)."""
    return [("> " + line) if line.strip() else ">" for line in lines]


def convert_markdown(source: str, ctx: PageContext, *, hide_solutions: bool = False) -> str:
    """Convert one Markdown cell (no gated directives across cells: see :func:`convert_cells`)."""
    return _tidy("\n".join(_convert(source.splitlines(), ctx, hide_solutions)))


def _tidy(text: str) -> str:
    """No runs of blank lines, no blank lines at the ends."""
    return re.sub(r"\n[ \t]*\n(?:[ \t]*\n)+", "\n\n", text).strip("\n")


def _convert(lines: list[str], ctx: PageContext, hide_solutions: bool) -> list[str]:
    out: list[str] = []
    for kind, block in parse_blocks(lines):
        if kind == "text":
            out.extend(_text_lines(block, ctx))
        elif kind == "code":
            out.extend(block)
        else:
            out.extend(_directive(block, ctx, hide_solutions))
    return out


def _directive(d: Directive, ctx: PageContext, hide_solutions: bool) -> list[str]:
    name, label = d.name, d.options.get("label", "")
    body = _convert(d.body, ctx, hide_solutions)
    if name == "exercise":
        target = ctx.index.targets.get(label)
        number = f" {target.number}" if target else ""
        title = f" ({convert_roles(d.argument, ctx)})" if d.argument else ""
        return ["", f"**Exercise{number}**{title}", "", *body, ""]
    if name == "solution":
        if hide_solutions:
            return []
        return ["", *_solution_heading(d.argument, ctx), "", *body, ""]
    if name.startswith("prf:"):
        kind = name[4:]
        if kind == "proof":
            return ["", "*Proof.*", "", *body, "", "$\\square$", ""]
        title = PRF_NAMES.get(kind, kind.capitalize())
        arg = f" ({convert_roles(d.argument, ctx)})" if d.argument else ""
        return ["", f"**{title}{arg}.**", "", *body, ""]
    if name in ("math",):
        return ["$$", *d.body, "$$"]
    if name in ("code-block", "code", "sourcecode"):
        return [f"```{d.argument}", *d.body, "```"]
    if name in ("figure", "image"):
        src = d.argument
        if not src.startswith(("http://", "https://")):
            src = ctx.index.raw_url(str(Path(ctx.page).parent / src))
        caption = " ".join(line.strip() for line in body if line.strip())
        return [f"![{d.options.get('alt', caption)}]({src})", "", *(["*" + caption + "*"] if caption else [])]
    if name in ("bibliography", "tableofcontents", "toctree", "raw", "glue:figure"):
        return []
    if name in ADMONITIONS:
        title = convert_roles(d.argument, ctx) if d.argument else name.capitalize()
        return ["", *quote([f"**{title}.**", "", *body]), ""]
    return body


def _solution_heading(exercise_label: str, ctx: PageContext) -> list[str]:
    target = ctx.index.targets.get(exercise_label)
    number = f" {target.number}" if target else ""
    return [f"**Solution to Exercise{number}**"]


GATED = re.compile(r"^\s*(:{3,})\{(solution|exercise)-(start|end)\}\s*(.*)$")


def convert_cells(cells, ctx: PageContext, *, hide_solutions: bool = False):
    """Convert the cells of a MyST notebook (``nbformat`` cells) in order.

    Handles gated ``{solution-start}`` ... ``{solution-end}`` pairs across cells: the code cells
    between them are solution cells. Returns a list of ``(cell, role)`` with role ``"solution"``
    for solution code and Markdown, else ``None``; hidden solutions are dropped.
    """
    out = []
    in_solution = False
    for cell in cells:
        if cell.cell_type == "code":
            if in_solution and hide_solutions:
                continue
            out.append((cell, "solution" if in_solution else None))
            continue
        if cell.cell_type != "markdown":
            out.append((cell, None))
            continue
        lines = cell.source.splitlines()
        segments: list[tuple[bool, list[str]]] = [(in_solution, [])]
        i = 0
        while i < len(lines):
            m = GATED.match(lines[i])
            if not m:
                segments[-1][1].append(lines[i])
                i += 1
                continue
            fence, kind, edge, arg = m.groups()
            j = i + 1          # skip the directive's options and its closing fence
            while j < len(lines) and OPTION.match(lines[j]):
                j += 1
            if j < len(lines) and re.fullmatch(r"\s*:{3,}\s*", lines[j]):
                j += 1
            if kind == "solution":
                in_solution = edge == "start"
                segments.append((in_solution, []))
                if edge == "start":
                    segments[-1][1].extend(["", *_solution_heading(arg.strip(), ctx), ""])
            i = j
        for solution, seg in segments:
            if solution and hide_solutions:
                continue
            text = _tidy("\n".join(_convert(seg, ctx, hide_solutions)))
            if text.strip():
                new = cell.copy()
                new["source"] = text
                out.append((new, "solution" if solution else None))
    return out


def exercise_statement(path: Path, label: str, ctx: PageContext) -> str:
    """The converted body of the exercise labelled ``label`` in the chapter at ``path``."""
    lines = path.read_text().splitlines()
    for kind, block in parse_blocks(lines):
        if kind == "directive" and block.name in ("exercise", "exercise-start") \
                and block.options.get("label") == label:
            return _tidy("\n".join(_convert(block.body, ctx, True)))
    raise KeyError(f"{path} has no exercise labelled {label!r}: check the label in the "
                   f"assignment against the chapter's :label: lines.")


def exercise_labels(path: Path) -> list[str]:
    """Labels of the exercises of a chapter, in order."""
    return [block.options.get("label", "") for kind, block in parse_blocks(path.read_text().splitlines())
            if kind == "directive" and block.name in ("exercise", "exercise-start")]


def solution_labels(path: Path) -> list[str]:
    """Exercise labels that have a solution (plain ``{solution}`` or gated ``{solution-start}``)."""
    return [block.argument for kind, block in parse_blocks(path.read_text().splitlines())
            if kind == "directive" and block.name in ("solution", "solution-start")]
