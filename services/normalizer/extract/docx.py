"""DOCX paragraphs, tables, headers and footers with python-docx, after the ZIP bomb check."""

from __future__ import annotations

import io

import docx
from docx.document import Document
from docx.oxml.ns import qn

from services.contracts import RejectReason
from services.normalizer.extract import Extracted, Rejection
from services.normalizer.extract.tables import markdown_table
from services.normalizer.extract.zipped import check_zip


def extract(data: bytes) -> Extracted:
    check_zip(data, "DOCX")
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises many kinds on malformed parts
        raise Rejection(RejectReason.CORRUPT, f"the DOCX cannot be read ({type(exc).__name__}: {exc})") from None
    parts = [_section_text(section.header) for section in document.sections]
    parts.append(_body_text(document))
    parts += [_section_text(section.footer) for section in document.sections]
    return Extracted(pages=["\n\n".join(p for p in parts if p.strip())])


def reject_ole(data: bytes) -> None:
    """Legacy .doc files and password-protected OOXML are both OLE containers."""
    if "EncryptedPackage".encode("utf-16-le") in data:
        raise Rejection(RejectReason.ENCRYPTED, "the Office document is protected with a password")
    raise Rejection(RejectReason.UNSUPPORTED, "legacy Word/Excel files (.doc, .xls) are not supported; save as .docx")


def _body_text(document: Document) -> str:
    """Paragraphs and tables in reading order."""
    out = []
    for child in document.element.body.iterchildren():
        if child.tag == qn("w:p"):
            out.append("".join(node.text or "" for node in child.iter(qn("w:t"))))
        elif child.tag == qn("w:tbl"):
            rows = [["".join(t.text or "" for t in cell.iter(qn("w:t"))) for cell in row.iter(qn("w:tc"))]
                    for row in child.iter(qn("w:tr"))]
            out += ["", markdown_table(rows), ""]
    return "\n".join(out)


def _section_text(part) -> str:
    if part is None or part.is_linked_to_previous:
        return ""
    lines = [p.text for p in part.paragraphs]
    lines += [" | ".join(cell.text for cell in row.cells) for table in part.tables for row in table.rows]
    return "\n".join(lines)
