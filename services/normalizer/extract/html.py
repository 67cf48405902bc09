"""The main content of an HTML page, without navigation and boilerplate (trafilatura)."""

from __future__ import annotations

import re

import lxml.html
import trafilatura

from services.contracts import RejectReason
from services.normalizer.extract import Extracted, Rejection
from services.normalizer.extract.text import decode

MAX_DEPTH = 1000
# boxes that pages put their own content in (notes, tips, warnings, sidebars): trafilatura takes
# them for boilerplate by their tag or class
_BOXES = re.compile(r"note|tip|hint|warning|caution|important|attention|callout|admonition|sidebar", re.I)
_NOT_CONTENT = re.compile(r"cookie|consent|banner|popup|modal|newsletter|subscribe|share|social|advert", re.I)
_MAX_LINK_SHARE = 0.5  # a box mostly of link text is navigation, and stays boilerplate
_MIN_BOX_WORDS = 4


def extract(data: bytes) -> Extracted:
    markup = decode(data)
    depth = _max_depth(markup)
    if depth > MAX_DEPTH:
        raise Rejection(RejectReason.BOMB, f"the HTML nests elements {depth} deep (over {MAX_DEPTH}); not parsed")
    text = trafilatura.extract(_unboxed(markup), include_tables=True, include_comments=False, favor_recall=True)
    if not text or not text.strip():
        raise Rejection(RejectReason.NO_TEXT, "the HTML page has no main text (only navigation or markup)")
    return Extracted(pages=[text])


def _unboxed(markup: str) -> str:
    """The page with its content boxes (asides and note-like blocks of prose, not of links) made
    plain blocks, so that the extractor keeps their text."""
    try:
        tree = lxml.html.document_fromstring(markup)
    except (ValueError, lxml.etree.ParserError):
        return markup
    changed = False
    for box in tree.iter("aside", "div", "section"):
        names = f"{box.get('class', '')} {box.get('id', '')}"
        if (box.tag != "aside" and not _BOXES.search(names)) or _NOT_CONTENT.search(names):
            continue
        text = box.text_content()
        links = sum(len(a.text_content()) for a in box.iter("a"))
        if len(text.split()) < _MIN_BOX_WORDS or links > _MAX_LINK_SHARE * max(1, len(text.strip())):
            continue
        box.tag = "div"
        for attribute in ("class", "id", "role"):
            box.attrib.pop(attribute, None)
        changed = True
    return lxml.html.tostring(tree, encoding="unicode") if changed else markup


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
