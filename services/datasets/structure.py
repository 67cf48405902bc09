"""A document's structure: each paragraph with its section path and, for paged formats, its page.

Readers mark a heading the same way whatever the format, as a Markdown heading line
(``## Returns``): DOCX heading styles, ODT outline levels, HTML ``<h1>``–``<h6>``, Markdown's own,
a slide's title, a sheet's name. A paragraph's section is the path of the headings above it
("Handbook > Leave > Sick leave"); its page is the page it is on, for formats whose pages are
numbered (PDF pages, slides, the frames of a multi-page TIFF).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADING = re.compile(r"^(#{1,6})[ \t]+(\S.*?)(?:[ \t]+#+)?[ \t]*$")
SEPARATOR = " > "
MAX_SECTION_CHARS = 500  # a "heading" longer than this is a paragraph someone styled as one


@dataclass(frozen=True)
class Paragraph:
    text: str
    section: str  # "" before the first heading
    page: int | None  # 1-based; None for formats without numbered pages

    @property
    def heading_only(self) -> bool:
        return "\n" not in self.text and heading(self.text) is not None


def heading(line: str) -> tuple[int, str] | None:
    """(level, title) of a Markdown heading line, or None."""
    found = _HEADING.match(line)
    return (len(found.group(1)), found.group(2)) if found else None


def only_headings(text: str) -> bool:
    """Whether every line of a text that is not blank is a heading (a title page, a chapter opening)."""
    lines = [line for line in text.split("\n") if line.strip()]
    return bool(lines) and all(heading(line) is not None for line in lines)


def paragraphs(pages: list[str], paged: bool = False) -> list[Paragraph]:
    """The paragraphs of a document's pages (blank lines part them, and a heading starts one)."""
    path: list[tuple[int, str]] = []
    found: list[Paragraph] = []
    for number, page in enumerate(pages, 1):
        lines: list[str] = []

        def close() -> None:
            if text := "\n".join(lines).strip():
                found.append(Paragraph(text, _section(path), number if paged else None))
            lines.clear()

        for line in page.split("\n"):
            if not line.strip():
                close()
                continue
            if (marked := heading(line)) is not None:
                close()
                level, title = marked
                path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
            lines.append(line)
        close()
    return found


def _section(path: list[tuple[int, str]]) -> str:
    return SEPARATOR.join(title for _, title in path)[:MAX_SECTION_CHARS]
