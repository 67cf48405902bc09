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
    """Text by page (one page for formats without pages) or supervised examples.

    A heading is a Markdown heading line (``## Title``) in every format (see ``structure``).
    """

    pages: list[str] = field(default_factory=list)
    paged: bool = False  # the pages are the document's numbered pages (PDF, slides), kept per chunk
    examples: list[list[dict[str, str]]] = field(default_factory=list)  # chat: [{"role", "content"}]
    front_matter: dict = field(default_factory=dict)  # Markdown's YAML front matter
    attachments: list[tuple[str, bytes]] = field(default_factory=list)  # (unique name, bytes): documents of their own


LABELS = {media.PDF: "a PDF", media.DOCX: "a Word document (DOCX)", media.HTML: "an HTML page",
          media.MARKDOWN: "a Markdown file", media.TEXT: "a text file", media.JSONL: "a JSON Lines file",
          media.PPTX: "a PowerPoint presentation (PPTX)", media.XLSX: "an Excel workbook (XLSX)",
          media.ODT: "an OpenDocument text (ODT)", media.ODS: "an OpenDocument spreadsheet (ODS)",
          media.ODP: "an OpenDocument presentation (ODP)", media.EPUB: "an EPUB book", media.RTF: "an RTF document",
          media.EML: "an email (EML)", media.MSG: "an Outlook message (MSG)",
          **{kind: f"an image ({kind.removeprefix('image/').upper()})" for kind in media.IMAGES}}


ZIPPED = {media.DOCX: "word/document.xml", media.PPTX: "ppt/presentation.xml", media.XLSX: "xl/workbook.xml",
          **{kind: f"a 'mimetype' member saying {kind}" for kind in (media.ODT, media.ODS, media.ODP, media.EPUB)}}


def not_what_it_is_named(data: bytes, name: str, named: str, found: str) -> str:
    """What is wrong with a file whose name claims a format its bytes do not have."""
    claim = f"{name!r} is named as {LABELS[named]}, but"
    if named in ZIPPED and data.startswith(b"PK\x03\x04"):
        import io
        import zipfile

        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                archive.namelist()
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            return f"{claim} its ZIP container is damaged or truncated ({exc})"
        return f"{claim} it is a ZIP archive without {ZIPPED[named]}"
    if named in ZIPPED:
        return f"{claim} its bytes are no ZIP container, which every Office file is (they start with {data[:4].hex(' ')})"
    if named == media.PDF:
        return f"{claim} it has no %PDF- header (it starts with {data[:8]!r})"
    if found == media.BINARY:
        return f"{claim} its bytes are binary, not text (NUL bytes or many control characters)"
    return f"{claim} its bytes are {found}"


def extract(data: bytes, media_type: str, name: str) -> Extracted:
    from services.normalizer.extract import chat, docx, epub, html, image, mail, odf, pdf, pptx, rtf, text, xlsx

    if not data.strip():
        raise Rejection(RejectReason.EMPTY, "the document is empty")
    readers = {
        media.PDF: pdf.extract,
        media.DOCX: docx.extract,
        media.PPTX: pptx.extract,
        media.XLSX: xlsx.extract,
        media.ODT: odf.extract,
        media.ODS: odf.extract,
        media.ODP: odf.extract,
        media.EPUB: epub.extract,
        media.RTF: rtf.extract,
        media.EML: mail.extract,
        media.MSG: mail.extract_outlook,
        media.HTML: html.extract,
        media.MARKDOWN: text.extract_markdown,
        media.TEXT: text.extract,
        media.JSONL: chat.extract,
        **{kind: image.extract for kind in media.IMAGES},
    }
    reader = readers.get(media_type)
    if reader is None:
        if media_type == media.OLE and media.named(name) == media.MSG:
            raise Rejection(RejectReason.CORRUPT, f"{name!r} is named as {LABELS[media.MSG]}, but its OLE container "
                                                  "holds no message properties (damaged, or another Office file)")
        if media_type == media.OLE:
            docx.reject_ole(data)
        if media.named(name) in readers:  # named as a format afina reads, but its bytes are not that
            raise Rejection(RejectReason.CORRUPT, not_what_it_is_named(data, name, media.named(name), media_type))
        raise Rejection(RejectReason.UNSUPPORTED, f"documents of type {media_type} are not supported")
    extracted = reader(data)
    if not extracted.examples and not any(page.strip() for page in extracted.pages):
        raise Rejection(RejectReason.NO_TEXT, "no text could be found in the document")
    return extracted
