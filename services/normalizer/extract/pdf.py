"""PDF text layer, page by page, with PDFium (pypdfium2): fast, and tolerant of real-world files.
Pages without a text layer (scans) are read by Tesseract's OCR when it is installed."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import pypdfium2 as pdfium

from services.contracts import RejectReason
from services.normalizer.extract import Extracted, Rejection

MAX_PAGES = 5000
OCR_LANGUAGES = ("spa", "eng")
OCR_DPI = 300


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
            text = textpage.get_text_range().replace("\ufffe", "")
            textpage.close()
            if not text.strip() and _tesseract() is not None:
                text = _ocr(page)
            page.close()
            pages.append(text)
    finally:
        document.close()
    if not any(page.strip() for page in pages):
        hint = "" if _tesseract() else "; install Tesseract (tesseract-ocr) to read scanned pages"
        raise Rejection(RejectReason.NO_TEXT, f"the PDF has no text layer and no readable text (a scan?){hint}")
    return Extracted(pages=pages)


@functools.cache
def _tesseract() -> tuple[str, str] | None:
    """The tesseract binary and the languages to read with, or None when it is not installed."""
    binary = shutil.which("tesseract")
    if binary is None:
        return None
    listed = subprocess.run([binary, "--list-langs"], capture_output=True, text=True).stdout.split()
    languages = [lang for lang in OCR_LANGUAGES if lang in listed] or ["eng"]
    return binary, "+".join(languages)


def _ocr(page: pdfium.PdfPage) -> str:
    binary, languages = _tesseract()
    image = page.render(scale=OCR_DPI / 72).to_pil()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "page.png"
        image.save(path)
        result = subprocess.run([binary, str(path), "stdout", "-l", languages, "--psm", "3"],
                                capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else ""
