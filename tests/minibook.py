"""A throw-away book that uses the project's real ``_config.yml`` and extensions, for tests of the build.

``make(folder, pages)`` writes one MyST page per entry (the first is the root, the others its
chapters); ``build(book)`` runs the one Jupyter Book command line (``dev.jupyter_book_command``,
strict) on it.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import dev  # noqa: E402

HEADER = ("---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
          "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n")


def make(folder: Path, pages: dict[str, str]) -> Path:
    """A book in ``folder``: ``pages`` maps a page name to its Markdown body (after the header)."""
    (folder / "book").mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", folder / "_config.yml")
    shutil.copytree(ROOT / "tools", folder / "tools")        # its local_extensions (book_offline)
    shutil.copy(ROOT / "references.bib", folder / "references.bib")
    root, *chapters = pages
    toc = f"format: jb-book\nroot: book/{root}\n"
    toc += "chapters:\n" + "".join(f"  - file: book/{name}\n" for name in chapters) if chapters else ""
    (folder / "_toc.yml").write_text(toc)
    for name, body in pages.items():
        (folder / "book" / f"{name}.md").write_text(HEADER + body)
    return folder


def build(book: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Build ``book`` strictly (``-W -n --keep-going``); the completed process, output captured."""
    return subprocess.run(dev.jupyter_book_command(book), cwd=book, env=env or dev._env(),
                          capture_output=True, text=True, timeout=600)


def page(book: Path, name: str) -> str:
    """The HTML of one built page."""
    return (book / "_build" / "html" / "book" / f"{name}.html").read_text()
