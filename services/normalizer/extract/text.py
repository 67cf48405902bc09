"""Plain text and Markdown, in whatever encoding they came (BOMs, UTF-8/16, Latin-1, cp1252)."""

from __future__ import annotations

import re

from charset_normalizer import from_bytes

from services.contracts import RejectReason
from services.normalizer.extract import Extracted, Rejection
from services.normalizer.stability import split_front_matter

WESTERN = ["cp1252", "latin_1", "iso8859_15", "mac_roman"]
_BOMS = (("utf-8-sig", b"\xef\xbb\xbf"), ("utf-16", b"\xff\xfe"), ("utf-16", b"\xfe\xff"))


def decode(data: bytes) -> str:
    for encoding, bom in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Western encodings first: for Spanish and English, cp1250 and cp1252 read the same bytes
    # and the detector cannot always tell them apart ("Año" would become "Ańo").
    best = from_bytes(data, cp_isolation=WESTERN).best() or from_bytes(data).best()
    if best is None:
        raise Rejection(RejectReason.CORRUPT, "the text is in no encoding that could be recognised")
    return str(best)


def extract(data: bytes) -> Extracted:
    return Extracted(pages=[strip_markdown(decode(data))])


def extract_markdown(data: bytes) -> Extracted:
    """Markdown: its front matter (metadata, not text) apart, the rest as text."""
    front, body = split_front_matter(decode(data).lstrip("\ufeff"))
    return Extracted(pages=[strip_markdown(body)], front_matter=front)


# Markdown's inline syntax goes; headings (they make the section path, see ``structure``) and tables stay.
# Each rule names strings its syntax cannot go without (one at least): a text with none skips its scan.
_MD_SYNTAX = [
    (re.compile(r"^```.*$", re.M), "", ("```",)),  # fences (the code stays)
    (re.compile(r"!\[([^\]]*)\]\((?:[^()]|\([^()]*\))*\)"), r"\1", ("](",)),  # images: keep the alt text
    (re.compile(r"\[([^\]]+)\]\((?:[^()]|\([^()]*\))*\)"), r"\1", ("](",)),  # links: keep the words (a URL may hold "()")
    (re.compile(r"^\s{0,3}(#{1,6})\s+", re.M), r"\1 ", ("#",)),  # headings: kept, unindented
    (re.compile(r"^\s{0,3}>\s?", re.M), "", (">",)),  # quotes
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2", ("**", "__")),  # bold
    (re.compile(r"(?<![\w*])\*(?![\s*])([^*\n]+?)(?<!\s)\*(?![\w*])"), r"\1", ("*",)),  # emphasis (not a "* item")
    (re.compile(r"(?<!`)`([^`\n]+)`(?!`)"), r"\1", ("`",)),  # inline code
    (re.compile(r"^\s*[-*_]{3,}\s*$", re.M), "", ("-", "*", "_")),  # rules
]
_ESCAPED = re.compile(r"\\([\\`*_{}\[\]()#+.!~|<>-])")  # "\*" is a literal "*": kept from the rules above
_HIDDEN = 0xE000  # escaped characters wait in the private use area while the rules run


def strip_markdown(text: str) -> str:
    escaped = "\\" in text
    if escaped:
        text = _ESCAPED.sub(lambda found: chr(_HIDDEN + ord(found.group(1))), text)
    for pattern, replacement, needed in _MD_SYNTAX:
        if any(string in text for string in needed):
            text = pattern.sub(replacement, text)
    return re.sub("[\ue000-\ue07f]", lambda hidden: chr(ord(hidden.group()) - _HIDDEN), text) if escaped else text
