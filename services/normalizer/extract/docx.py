"""DOCX paragraphs (headings marked by their style or outline level), tables, headers and footers with
python-docx, after the ZIP bomb check."""

from __future__ import annotations

import io
import re

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
    parts.append(_body_text(document, _heading_levels(document)))
    parts += [_section_text(section.footer) for section in document.sections]
    return Extracted(pages=["\n\n".join(p for p in parts if p.strip())])


def reject_ole(data: bytes) -> None:
    """Legacy .doc files and password-protected OOXML are both OLE containers."""
    if "EncryptedPackage".encode("utf-16-le") in data:
        raise Rejection(RejectReason.ENCRYPTED, "the Office document is protected with a password")
    raise Rejection(RejectReason.UNSUPPORTED, "legacy Word/Excel files (.doc, .xls) are not supported; save as .docx")


_HEADING_STYLE = re.compile(r"^(?:heading|t[íi]tulo)\s*([1-9])$", re.I)  # built-in names; Spanish Word's too


def _heading_levels(document: Document) -> dict[str, int]:
    """Heading level of each paragraph style id: by the built-in name, or by the style's outline level."""
    levels = {}
    for style in document.styles.element.iter(qn("w:style")):
        name = style.find(qn("w:name"))
        outline = style.find(f"{qn('w:pPr')}/{qn('w:outlineLvl')}")
        found = _HEADING_STYLE.match(name.get(qn("w:val"), "") if name is not None else "")
        if found:
            levels[style.get(qn("w:styleId"))] = int(found.group(1))
        elif outline is not None and (value := outline.get(qn("w:val"), "")).isdigit() and int(value) < 9:
            levels[style.get(qn("w:styleId"))] = int(value) + 1
        elif name is not None and name.get(qn("w:val"), "").lower() == "title":
            levels[style.get(qn("w:styleId"))] = 1
    return levels


def _level(paragraph, levels: dict[str, int]) -> int | None:
    outline = paragraph.find(f"{qn('w:pPr')}/{qn('w:outlineLvl')}")  # set on the paragraph itself
    if outline is not None and (value := outline.get(qn("w:val"), "")).isdigit() and int(value) < 9:
        return int(value) + 1
    style = paragraph.find(f"{qn('w:pPr')}/{qn('w:pStyle')}")
    return levels.get(style.get(qn("w:val"))) if style is not None else None


def _body_text(document: Document, levels: dict[str, int]) -> str:
    """Paragraphs and tables in reading order, a blank line apart."""
    out = []
    for child in document.element.body.iterchildren():
        if child.tag == qn("w:p"):
            text = "".join(node.text or "" for node in child.iter(qn("w:t")))
            level = _level(child, levels) if text.strip() else None
            out.append(f"{'#' * min(6, level)} {' '.join(text.split())}" if level else text)
        elif child.tag == qn("w:tbl"):
            rows = [["".join(t.text or "" for t in cell.iter(qn("w:t"))) for cell in row.iter(qn("w:tc"))]
                    for row in child.iter(qn("w:tr"))]
            out.append(markdown_table(rows))
    return "\n\n".join(out)


def _section_text(part) -> str:
    if part is None or part.is_linked_to_previous:
        return ""
    lines = [p.text for p in part.paragraphs]
    lines += [" | ".join(cell.text for cell in row.cells) for table in part.tables for row in table.rows]
    return "\n".join(lines)
