"""PDF text layer, page by page, with PDFium (pypdfium2): fast, and tolerant of real-world files.
Pages without a text layer that hold a picture (scans) are read by Tesseract's OCR when it is installed;
a blank page (a book's left-hand page) is not rendered for it."""

from __future__ import annotations

import math
import re

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from services.contracts import RejectReason
from services.normalizer.extract import Extracted, Rejection, ocr

MAX_PAGES = 5000
OCR_DPI = (150, 300)  # a scan is read at its own resolution within these: above it adds pixels, not detail


def extract(data: bytes) -> Extracted:
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise Rejection(RejectReason.ENCRYPTED, "the PDF is protected with a password") from None
        document = _with_rebuilt_xref(data, exc)
    try:
        if len(document) > MAX_PAGES:
            raise Rejection(RejectReason.TOO_LARGE, f"the PDF has {len(document)} pages, over {MAX_PAGES}")
        pages = []
        for index in range(len(document)):
            page = document[index]
            textpage = page.get_textpage()
            # PDFium marks a word hyphenated across a line break with U+FFFE and joins the
            # lines itself: dropping the marker restores the word.
            text = textpage.get_text_range().replace("\ufffe", "")
            textpage.close()
            if not text.strip() and ocr.tesseract() is not None and (dpi := _picture_dpi(page)):
                # in grey: Tesseract reads grey anyway, and the picture it is sent is a third of the size
                text = ocr.read(page.render(scale=dpi / 72, grayscale=True).to_pil())
            page.close()
            pages.append(text)
    finally:
        document.close()
    if not any(page.strip() for page in pages):
        raise Rejection(RejectReason.NO_TEXT,
                        f"the PDF has no text layer and no readable text (a scan?){ocr.missing_hint()}")
    return Extracted(pages=pages, paged=True)


_OBJECT = re.compile(rb"(?<![0-9])(\d{1,10})[ \t\r\n]+(\d{1,5})[ \t\r\n]+obj\b")
_CATALOG = re.compile(rb"/Type\s*/Catalog\b")


def _with_rebuilt_xref(data: bytes, error: Exception) -> pdfium.PdfDocument:
    """The PDF opened again with a cross-reference table and trailer rebuilt from its objects, as
    other readers do: PDFium repairs a wrong table but not a missing or unreadable trailer."""
    try:
        rebuilt = rebuild_xref(data)
    except Truncated as exc:
        raise Rejection(RejectReason.CORRUPT, f"the PDF cannot be read ({error}): {exc}") from None
    if rebuilt is not None:
        try:
            return pdfium.PdfDocument(rebuilt)
        except pdfium.PdfiumError:
            pass
    raise Rejection(RejectReason.CORRUPT, f"the PDF cannot be read ({error}), and rebuilding its cross-reference "
                                          "table from its objects did not help") from None


class Truncated(ValueError):
    pass


def rebuild_xref(data: bytes) -> bytes | None:
    """The PDF with a new cross-reference table and trailer after its last byte, found by scanning
    for ``N G obj`` (the last definition of a number wins, as in an incremental update); None when
    no object is the document catalog. Raises Truncated when the last object has no end: the file
    was cut short, and what is missing cannot be told (its text is not read in part)."""
    offsets: dict[int, tuple[int, int]] = {}
    root = None
    for found in _OBJECT.finditer(data):
        number, generation = int(found.group(1)), int(found.group(2))
        offsets[number] = (found.start(), generation)
        end = data.find(b"endobj", found.end())
        if end == -1:
            raise Truncated(f"it is cut short: object {number} and all after it are missing")
        if _CATALOG.search(data, found.end(), end):
            root = (number, generation)
    if root is None:
        return None
    body = data if data.endswith(b"\n") else data + b"\n"
    size = max(offsets) + 1
    rows = [b"0000000000 65535 f \n"] + [
        b"%010d %05d n \n" % offsets[n] if n in offsets else b"0000000000 00000 f \n" for n in range(1, size)]
    trailer = b"trailer\n<< /Size %d /Root %d %d R >>\nstartxref\n%d\n%%%%EOF\n" % (size, *root, len(body))
    return body + b"xref\n0 %d\n" % size + b"".join(rows) + trailer


def _picture_dpi(page) -> float | None:
    """The resolution to render a page at for OCR: its sharpest picture's own, within OCR_DPI;
    None when the page holds no picture (a blank page)."""
    found = []
    for picture in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE]):
        left, bottom, right, top = picture.get_bounds()
        try:
            width, height = picture.get_px_size()
        except pdfium.PdfiumError:  # a picture PDFium cannot size: read at the most
            width, height = 1e9, 1e9
        found.append(72 * math.sqrt(width * height / max((right - left) * (top - bottom), 1e-6)))  # turned too
    return min(max(max(found), OCR_DPI[0]), OCR_DPI[1]) if found else None
