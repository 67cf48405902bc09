"""Text out of pictures with Tesseract, for scanned PDF pages and image files. The languages to
read come from AFINA_NORMALIZER_OCR_LANGUAGES (those Tesseract has installed); without Tesseract,
pictures have no text."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

from services.settings import NormalizerSettings


@functools.cache
def tesseract() -> tuple[str, str] | None:
    """The tesseract binary and the languages to read with, or None when it is not installed."""
    binary = shutil.which("tesseract")
    if binary is None:
        return None
    listed = subprocess.run([binary, "--list-langs"], capture_output=True, text=True).stdout.split()
    # read here, in the worker process, like the other limits it gets from its environment
    wanted = NormalizerSettings().ocr_languages.split("+")
    return binary, "+".join([lang for lang in wanted if lang in listed] or ["eng"])


def read(image) -> str:
    """The text of a PIL image ("" when Tesseract is missing or fails)."""
    found = tesseract()
    if found is None:
        return ""
    binary, languages = found
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "page.png"
        image.save(path)
        result = subprocess.run([binary, str(path), "stdout", "-l", languages, "--psm", "3"],
                                capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else ""


def missing_hint() -> str:
    return "" if tesseract() else "; install Tesseract (tesseract-ocr) to read scanned pages and images"
