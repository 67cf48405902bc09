"""EPUB books with ebooklib, after the ZIP bomb check: a page per chapter in reading order (the
spine), each chapter's XHTML read like a web page."""

from __future__ import annotations

import io
import warnings

from services.contracts import RejectReason
from services.datasets.structure import only_headings
from services.normalizer.extract import Extracted, Rejection, html
from services.normalizer.extract.zipped import check_zip

MAX_CHAPTERS = 5000


def extract(data: bytes) -> Extracted:
    from ebooklib import epub

    check_zip(data, "EPUB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ebooklib warns about options it will change
            book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": True})
        chapters = [book.get_item_with_id(idref) for idref, _ in book.spine]
    except Exception as exc:  # noqa: BLE001 (ebooklib raises many kinds on malformed books)
        raise Rejection(RejectReason.CORRUPT, f"the EPUB cannot be read ({type(exc).__name__}: {exc})") from None
    if len(chapters) > MAX_CHAPTERS:
        raise Rejection(RejectReason.TOO_LARGE, f"the EPUB has {len(chapters)} chapters, over {MAX_CHAPTERS}")
    pages = []
    for chapter in chapters:
        if chapter is None:
            continue
        try:
            pages += html.extract(chapter.get_content()).pages
        except Rejection as exc:
            if exc.reason != RejectReason.NO_TEXT:  # a cover or a blank page has no text: skipped
                raise
    # a title page or a chapter's opening page that holds only the heading the next chapter begins
    # with adds nothing but the heading again
    pages = [page for page, after in zip(pages, [*pages[1:], ""], strict=True)
             if not (only_headings(page) and after.startswith(page))]
    return Extracted(pages=pages)
