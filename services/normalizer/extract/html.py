"""The main content of an HTML page, without navigation and boilerplate.

trafilatura finds a web page's main content. A page that is all content (a manual's chapter, an
exported document) it may cut short, dropping headings or a last section; for those the page's own
structure, rendered block by block outside navigation, banners and link lists, is kept instead: when
it holds nearly every word a main-content extractor kept, and not many more. Resiliparse's extractor
is asked first, as it is about twelve times faster; trafilatura only where Resiliparse does not find the
page all content.
"""

from __future__ import annotations

import re
from collections import Counter

import lxml.html
import trafilatura
from resiliparse.extract.html2text import extract_plain_text

from services.contracts import RejectReason
from services.datasets.structure import only_headings
from services.normalizer.extract import Extracted, Rejection
from services.normalizer.extract.tables import markdown_table
from services.normalizer.extract.text import decode, strip_markdown

MAX_DEPTH = 1000
# boxes that pages put their own content in (notes, tips, warnings, sidebars): trafilatura takes
# them for boilerplate by their tag or class
_BOXES = re.compile(r"note|tip|hint|warning|caution|important|attention|callout|admonition|sidebar", re.I)
_NOT_CONTENT = re.compile(r"cookie|consent|banner|popup|modal|newsletter|subscribe|share|social|advert|nav|menu|"
                          r"breadcrumb|topbar|skip|pagination|related|comment", re.I)
_MAX_LINK_SHARE = 0.5  # a box mostly of link text is navigation, and stays boilerplate
_MIN_BOX_WORDS = 4
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_INLINE = ("code", "em", "strong", "b", "i", "tt", "span", "kbd", "var", "samp", "u", "small", "abbr", "cite",
           "dfn", "mark", "q", "s", "sub", "sup", "font")
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_BLOCK = {"p", "div", "section", "article", "main", "ul", "ol", "dl", "blockquote", "figure", "figcaption",
          "details", "summary", "address", "center", "hgroup", "body", "fieldset", "legend", "caption", "header"}
_NOT_TEXT = {"nav", "footer", "script", "style", "noscript", "form", "iframe", "svg", "button", "select",
             "template", "object", "canvas", "head", "title", "menu", "dialog",
             "aside"}  # an aside still an aside once boxes of prose are unboxed is not the page's text
_IN_CONTENT = lxml.etree.XPath("boolean(ancestor::article | ancestor::main | ancestor::*[@role='main'])")
_MIN_KEPT = 0.9  # of the main-content extractor's words, the page's own structure must hold this share
_MAX_GROWTH = 1.6  # and at most this many times as many words


def extract(data: bytes) -> Extracted:
    markup = decode(data)
    depth = _max_depth(markup)
    if depth > MAX_DEPTH:
        raise Rejection(RejectReason.BOMB, f"the HTML nests elements {depth} deep (over {MAX_DEPTH}); not parsed")
    tree = _tree(markup)
    if tree is None:
        text = _main_text(markup)
    else:
        _flatten_inline(tree)  # inline markup would become Markdown emphasis and code fences, and move words
        _unbox(tree)
        markup = lxml.html.tostring(tree, encoding="unicode")
        root = _content_root(tree)
        whole = _document_text(root)
        # a page mostly of link text (a listing of teasers) is left to trafilatura's link-density
        # rules, which the fast extractor does not apply as strictly
        fast = _main_text_fast(markup) if _link_share(root) <= _MAX_LINK_SHARE else ""
        if only_headings(whole):
            text = whole  # a title page (a book's chapter opening): no body for an extractor to find
        elif fast.strip() and _holds_more_of_the_same(whole, fast):
            text = whole  # all content by the fast extractor's measure: trafilatura's is not needed
        else:
            text = _main_text(markup)
            if _holds_more_of_the_same(whole, text):
                text = whole
    if not text or not text.strip():
        raise Rejection(RejectReason.NO_TEXT, "the HTML page has no main text (only navigation or markup)")
    return Extracted(pages=[strip_markdown(text)])


def _tree(markup: str):
    try:  # lxml refuses a str that declares its encoding: the declaration is moot once decoded
        return lxml.html.document_fromstring(_XML_DECLARATION.sub("", markup, count=1))
    except (ValueError, lxml.etree.ParserError):
        return None


def _main_text(markup: str) -> str | None:
    # Markdown keeps headings (the section path) and tables; its inline syntax is stripped as Markdown's is
    return trafilatura.extract(markup, include_tables=True, include_comments=False, favor_recall=True,
                               output_format="markdown")


def _main_text_fast(markup: str) -> str:
    # Resiliparse's main-content extraction (C++) takes about a twelfth of trafilatura's time. It keeps
    # a little more of a page than trafilatura: on the public corpus and the samples, wherever it found
    # a page all content, trafilatura did too (and 8 of 71 pages it left to trafilatura)
    return extract_plain_text(markup, main_content=True, list_bullets=False, alt_texts=False, links=False)


def _flatten_inline(tree) -> None:
    lxml.etree.strip_tags(tree, *_INLINE)


def _unbox(tree) -> None:
    """The page's content boxes (asides and note-like blocks of prose, not of links) made plain
    blocks, so that the extractor keeps their text."""
    for box in tree.iter("aside", "div", "section"):
        names = f"{box.get('class', '')} {box.get('id', '')}"
        if (box.tag != "aside" and not _BOXES.search(names)) or _NOT_CONTENT.search(names):
            continue
        text = box.text_content()
        if len(text.split()) < _MIN_BOX_WORDS or _link_share(box) > _MAX_LINK_SHARE:
            continue
        box.tag = "div"
        for attribute in ("class", "id", "role"):
            box.attrib.pop(attribute, None)


def _link_share(element) -> float:
    text = len(" ".join(element.text_content().split()))
    return sum(len(" ".join(a.text_content().split())) for a in element.iter("a") if a.get("href")) / max(1, text)


# -- the page's own structure, for pages that are all content (manuals, handbooks, exported docs) ------
def _content_root(tree):
    """The page's main element, or its body."""
    root = next(iter(tree.xpath("//main | //*[@role='main']")), None)
    if root is None:
        root = tree.find("body") if tree.find("body") is not None else tree
    return root


def _document_text(root) -> str:
    """Every block of the page outside navigation, banners and link lists, in order, as Markdown."""
    blocks: list[str] = []
    _render(root, blocks)
    return "\n\n".join(blocks)


def _skipped(element) -> bool:
    if element.tag in _NOT_TEXT or (element.tag == "header" and not _IN_CONTENT(element)):  # an article's title
        return True
    return bool(_NOT_CONTENT.search(f"{element.get('class', '')} {element.get('id', '')} {element.get('role', '')}"))


def _render(element, blocks: list[str]) -> None:
    run: list[str] = [element.text or ""]

    def close_run() -> None:
        if text := " ".join("".join(run).split()):
            blocks.append(text)
        run.clear()

    for child in element:
        if not isinstance(child.tag, str):  # a comment or a processing instruction
            run.append(child.tail or "")
            continue
        if _skipped(child):
            pass
        elif child.tag in _HEADINGS:
            close_run()
            if title := " ".join(child.text_content().split()):
                blocks.append(f"{'#' * int(child.tag[1])} {title}")
        elif child.tag == "pre":
            close_run()
            blocks.append(child.text_content().strip("\n"))
        elif child.tag == "table":
            close_run()
            rows = [[" ".join(cell.text_content().split()) for cell in row.iter("td", "th")] for row in child.iter("tr")]
            if _link_share(child) <= _MAX_LINK_SHARE and (table := markdown_table(rows)):
                blocks.append(table)
        elif child.tag in ("li", "dt", "dd"):
            close_run()
            if _link_share(child) <= _MAX_LINK_SHARE:  # a table of contents or a menu: links, not text
                items: list[str] = []
                _render(child, items)
                if items:
                    blocks.append(("- " if child.tag == "li" else "") + items[0])
                    blocks.extend(items[1:])
        elif child.tag in _BLOCK or child.tag == "br":
            close_run()
            _render(child, blocks)
        else:  # inline: its words join the run
            run.append(child.text_content())
        run.append(child.tail or "")
    close_run()


def _holds_more_of_the_same(whole: str, main: str | None) -> bool:
    """Whether the page's own structure holds nearly all the main-content extractor kept, and not
    much else: then the page is all content and the extractor dropped some (headings, a section)."""
    ours, theirs = Counter(_words(whole)), Counter(_words(main or ""))
    if not theirs:
        return bool(ours)
    kept = sum((ours & theirs).values()) / sum(theirs.values())
    return kept >= _MIN_KEPT and sum(ours.values()) <= _MAX_GROWTH * sum(theirs.values())


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


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
