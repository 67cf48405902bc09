"""OpenDocument text, spreadsheets and presentations (ODT, ODS, ODP) with odfdo, after the ZIP bomb
check: a text's headings, paragraphs, lists and tables in order; a page per sheet as a Markdown
table; a page per slide with its speaker notes."""

from __future__ import annotations

import io

from services.contracts import RejectReason
from services.normalizer.extract import Extracted, Rejection
from services.normalizer.extract.tables import markdown_table
from services.normalizer.extract.text import strip_markdown
from services.normalizer.extract.zipped import check_zip

MAX_CELLS = 2_000_000  # as for XLSX
_BLOCKS = {"text:h", "text:p", "text:list"}
_CONTAINERS = {"text:section", "text:index-body", "table:table-cell"}


def extract(data: bytes) -> Extracted:
    from odfdo import Document

    check_zip(data, "OpenDocument file")
    try:
        document = Document(io.BytesIO(data))
        body, kind = document.body, document.mimetype
        if kind.endswith(".spreadsheet"):
            return Extracted(pages=_sheets(body))
        if kind.endswith(".presentation"):
            return Extracted(pages=[strip_markdown(_slide(page)) for page in body.get_draw_pages()], paged=True)
        return Extracted(pages=[strip_markdown("\n\n".join(_blocks(body)))])  # odfdo writes links as Markdown
    except Rejection:
        raise
    except Exception as exc:  # noqa: BLE001 (odfdo and lxml raise many kinds on malformed parts)
        raise Rejection(RejectReason.CORRUPT, f"the OpenDocument file cannot be read ({type(exc).__name__}: {exc})"
                        ) from None


def _blocks(element) -> list[str]:
    out = []
    for child in element.children:
        if child.tag == "text:h":  # a heading, at its outline level
            level = min(6, max(1, int(child.get_attribute("text:outline-level") or 1)))
            out.append(f"{'#' * level} {' '.join(child.text_recursive.split())}")
        elif child.tag in _BLOCKS:
            out.append(child.text_recursive.strip("\n"))
        elif child.tag == "table:table":
            out += ["", markdown_table(_values(child)), ""]
        elif child.tag in _CONTAINERS:
            out += _blocks(child)
    return out


def _values(table) -> list[list[str]]:
    rows = table.get_values(complete=False)
    if sum(len(row) for row in rows) > MAX_CELLS:
        raise Rejection(RejectReason.TOO_LARGE, f"the OpenDocument file has more than {MAX_CELLS} cells")
    return [["" if value is None else str(value) for value in row] for row in rows]


def _sheets(body) -> list[str]:
    pages = []
    for table in body.get_tables():
        if table_text := markdown_table(_values(table)):
            pages.append(f"# {table.name}\n\n{table_text}")
    return pages


def _frame_text(frame) -> str:
    text = frame.text_recursive.strip()
    if text and frame.get_attribute("presentation:class") == "title":  # the slide's title: its heading
        return f"# {' '.join(text.split())}"
    return text


def _slide(page) -> str:
    notes = [n.text_recursive.strip() for n in page.get_elements("presentation:notes")]
    texts = [_frame_text(frame) for frame in page.get_elements("draw:frame")
             if not frame.get_elements("ancestor::presentation:notes")]
    return "\n".join([*(t for t in texts if t), *([""] + notes if any(notes) else [])])
