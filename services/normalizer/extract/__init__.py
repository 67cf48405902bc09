"""Text out of documents: one module per format, one entry point that picks by media type.

Every failure is a ``Rejection`` with a reason class and a sentence a person understands.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services import media
from services.contracts import RejectReason


class Rejection(Exception):
    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(reason, message)  # both in args: it crosses process boundaries by pickle
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass
class Extracted:
    """Text by page (one page for formats without pages) or supervised examples."""

    pages: list[str] = field(default_factory=list)
    examples: list[list[dict[str, str]]] = field(default_factory=list)  # chat: [{"role", "content"}]
    front_matter: dict = field(default_factory=dict)  # Markdown's YAML front matter


def extract(data: bytes, media_type: str, name: str) -> Extracted:
    from services.normalizer.extract import chat, docx, html, pdf, text

    if not data.strip():
        raise Rejection(RejectReason.EMPTY, "the document is empty")
    readers = {
        media.PDF: pdf.extract,
        media.DOCX: docx.extract,
        media.HTML: html.extract,
        media.MARKDOWN: text.extract_markdown,
        media.TEXT: text.extract,
        media.JSONL: chat.extract,
    }
    reader = readers.get(media_type)
    if reader is None:
        if media_type == media.OLE:
            docx.reject_ole(data)
        raise Rejection(RejectReason.UNSUPPORTED, f"documents of type {media_type} are not supported")
    extracted = reader(data)
    if not extracted.examples and not any(page.strip() for page in extracted.pages):
        raise Rejection(RejectReason.NO_TEXT, "no text could be found in the document")
    return extracted
