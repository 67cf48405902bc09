"""Cleaning extracted text: Unicode repair, control characters, whitespace, hyphenation across
line breaks, and the headers, footers and page numbers that repeat from page to page."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

import ftfy
from ftfy.badness import is_bad
from ftfy.fixes import uncurl_quotes

_PAGE_NUMBER = re.compile(r"^\s*(?:page|p[aá]g(?:ina)?\.?|-)?\s*\d{1,4}\s*(?:(?:of|de|/)\s*\d{1,4})?\s*-?\s*$", re.I)
_HYPHENATED = re.compile(r"(\w)-\n(\w)")  # "exam-\nple" → "example"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_TERMINAL_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")  # colours, titles
_BREAKS = re.compile(r"[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")  # vertical tab, form feed, separators: line breaks
_SPACES = re.compile(r"[ \t\u00a0]{2,}|[\t\u00a0]")  # what a single space is not replaced by
_BLANK_LINES = re.compile(r"\n{3,}")
_FTFY_FIXES = re.compile(r"[&\ufb00-\ufb06\uff01-\uff5e\ud800-\udfff]")  # entities, ligatures, full width
# Characters that ftfy's mojibake test (is_bad) never flags, alone or next to ASCII: plain
# Spanish, Catalan, French and Portuguese words and common punctuation. A line of these and ASCII
# alone is not mojibake and skips the test, which otherwise takes most of the cleaning time
# (tests/unit/test_normalizer_logic.py checks the claim against the installed ftfy).
NEVER_MOJIBAKE = "áéíóúüñçàèòïëâêôû’–—…·°\xa0←→↔●"
_SUSPECT = re.compile(rf"[^\x00-\x7f{NEVER_MOJIBAKE}]|{_FTFY_FIXES.pattern}")
EDGE_LINES = 3  # headers and footers live in the first and last lines of a page


def clean_pages(pages: list[str], paged: bool = False) -> str:
    """One clean text from a document's pages."""
    return join(clean_each_page(pages, paged))


def clean_each_page(pages: list[str], paged: bool = False) -> list[str]:
    """Each page cleaned, in place: a page left empty stays as '' so that pages keep their numbers.
    Lines that repeat at the edges of printed pages (PDF, slides) are their headers and footers; the
    pages of other formats (a workbook's sheets, a book's chapters) may well begin alike."""
    pages = [_normalize(page) for page in pages]
    pages = _drop_repeated_edges(pages) if paged else [_strip_page_numbers(page) for page in pages]
    return [_BLANK_LINES.sub("\n\n", page).strip() for page in pages]


def join(pages: list[str]) -> str:
    return "\n\n".join(p for p in pages if p)


def clean_text(text: str) -> str:
    return clean_pages([text])


def _normalize(text: str) -> str:
    text = _BREAKS.sub("\n", _TERMINAL_ESCAPE.sub("", text))  # before ftfy, which drops a vertical tab
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    unescape = "auto" if "<" not in text else False  # what fix_text decides for a whole text: markup's entities stay
    text = unicodedata.normalize("NFC", _repaired(text, unescape))
    text = _CONTROL.sub("", text)
    if "-\n" in text:
        text = _HYPHENATED.sub(r"\1\2", text)
    text = _SPACES.sub(" ", text)  # never across a line break, so the same as line by line
    return "\n".join(line.strip() for line in text.split("\n")).strip()


def _repaired(text: str, unescape) -> str:
    """Mojibake and broken entities repaired (ftfy) on the lines that may hold them: ftfy reads a
    line many ways, and most lines need none. Then curly quotes straightened, as fix_text does
    (its own output has none left, so that pass changes only the other lines)."""
    pieces, done = [], 0
    while found := _SUSPECT.search(text, done):
        start = text.rfind("\n", 0, found.start()) + 1
        end = text.find("\n", found.start())
        end = len(text) if end == -1 else end
        line = text[start:end]
        if _FTFY_FIXES.search(line) or is_bad(line):
            line = ftfy.fix_text(line, normalization="NFC", unescape_html=unescape)
        pieces += [text[done:start], line]
        done = end
    pieces.append(text[done:])
    text = "".join(pieces)
    return text if text.isascii() else uncurl_quotes(text)


def _drop_repeated_edges(pages: list[str]) -> list[str]:
    """Remove page numbers at page edges, and edge lines that repeat on most pages."""
    if len(pages) < 2:
        return [_strip_page_numbers(page) for page in pages]
    split = [page.split("\n") for page in pages]
    counts: Counter[str] = Counter()
    for lines in split:
        counts.update({_shape(line) for line in _edges(lines) if line})
    repeated = {shape for shape, n in counts.items() if n >= max(2, len(pages) // 2 + 1)}
    cleaned = []
    for lines in split:
        head, tail = set(range(min(EDGE_LINES, len(lines)))), set(range(max(0, len(lines) - EDGE_LINES), len(lines)))
        keep = [line for i, line in enumerate(lines)
                if not ((i in head or i in tail) and (_shape(line) in repeated or _PAGE_NUMBER.match(line)))]
        cleaned.append("\n".join(keep).strip())
    return cleaned


def _strip_page_numbers(page: str) -> str:
    lines = page.split("\n")
    edges = set(range(min(EDGE_LINES, len(lines)))) | set(range(max(0, len(lines) - EDGE_LINES), len(lines)))
    return "\n".join(line for i, line in enumerate(lines) if not (i in edges and _PAGE_NUMBER.match(line))).strip()


def _edges(lines: list[str]) -> list[str]:
    return lines[:EDGE_LINES] + lines[-EDGE_LINES:]


def _shape(line: str) -> str:
    # "Page 3 of 10" and "Page 4 of 10" are the same footer
    return re.sub(r"\d+", "#", unicodedata.normalize("NFKC", line).lower()).strip()
