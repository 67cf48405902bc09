"""PDF text layer, page by page, with PDFium (pypdfium2): fast, and tolerant of real-world files."""

from __future__ import annotations

import pypdfium2 as pdfium

from services.contracts import RejectReason
from services.normalizer.extract import Extracted, Rejection

MAX_PAGES = 5000


def extract(data: bytes) -> Extracted:
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise Rejection(RejectReason.ENCRYPTED, "the PDF is protected with a password") from None
        raise Rejection(RejectReason.CORRUPT, f"the PDF cannot be read ({exc})") from None
    try:
        if len(document) > MAX_PAGES:
            raise Rejection(RejectReason.TOO_LARGE, f"the PDF has {len(document)} pages, over {MAX_PAGES}")
        pages = []
        for index in range(len(document)):
            page = document[index]
            textpage = page.get_textpage()
            # PDFium marks a word hyphenated across a line break with U+FFFE and joins the
            # lines itself: dropping the marker restores the word.
            pages.append(textpage.get_text_range().replace("\ufffe", ""))
            textpage.close()
            page.close()
    finally:
        document.close()
    if not any(page.strip() for page in pages):
        raise Rejection(
            RejectReason.NO_TEXT,
            "the PDF has no text layer (a scan?); install Tesseract (tesseract-ocr) to read scanned pages",
        )
    return Extracted(pages=pages)
