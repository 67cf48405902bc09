"""The main content of an HTML page, without navigation and boilerplate (trafilatura)."""

from __future__ import annotations

import trafilatura

from services.contracts import RejectReason
from services.normalizer.extract import Extracted, Rejection
from services.normalizer.extract.text import decode

MAX_DEPTH = 1000


def extract(data: bytes) -> Extracted:
    markup = decode(data)
    depth = _max_depth(markup)
    if depth > MAX_DEPTH:
        raise Rejection(RejectReason.BOMB, f"the HTML nests elements {depth} deep (over {MAX_DEPTH}); not parsed")
    text = trafilatura.extract(markup, include_tables=True, include_comments=False, favor_recall=True)
    if not text or not text.strip():
        raise Rejection(RejectReason.NO_TEXT, "the HTML page has no main text (only navigation or markup)")
    return Extracted(pages=[text])


def _max_depth(markup: str) -> int:
    """Nesting depth estimated from tags, without building a tree (cheap on hostile input)."""
    depth = deepest = 0
    index = markup.find("<")
    while index != -1:
        nxt = markup[index + 1 : index + 2]
        if nxt == "/":
            depth = max(0, depth - 1)
        elif nxt.isalpha():
            close = markup.find(">", index)
            if close != -1 and markup[close - 1] != "/":
                depth += 1
                deepest = max(deepest, depth)
        index = markup.find("<", index + 1)
    return deepest
