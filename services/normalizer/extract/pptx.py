"""PPTX slides with python-pptx, after the ZIP bomb check: one page per slide, its title first as its heading,
then the text of its shapes in reading order (tables as Markdown rows), then its speaker notes."""

from __future__ import annotations

import io

from services.contracts import RejectReason
from services.normalizer.extract import Extracted, Rejection
from services.normalizer.extract.tables import markdown_table
from services.normalizer.extract.zipped import check_zip

MAX_SLIDES = 5000


def extract(data: bytes) -> Extracted:
    import pptx

    check_zip(data, "PPTX")
    try:
        deck = pptx.Presentation(io.BytesIO(data))
        slides = list(deck.slides)
    except Exception as exc:  # python-pptx raises many kinds on malformed parts
        raise Rejection(RejectReason.CORRUPT, f"the PPTX cannot be read ({type(exc).__name__}: {exc})") from None
    if len(slides) > MAX_SLIDES:
        raise Rejection(RejectReason.TOO_LARGE, f"the PPTX has {len(slides)} slides, over {MAX_SLIDES}")
    return Extracted(pages=[_slide_text(slide) for slide in slides], paged=True)


def _slide_text(slide) -> str:
    title = slide.shapes.title
    heading = " ".join(title.text_frame.text.split()) if title is not None and title.has_text_frame else ""
    lines = [f"# {heading}"] if heading else []
    # reading order: top to bottom, then left to right (shapes are stored in the order they were drawn)
    skip = title.shape_id if title is not None else None
    shapes = sorted((s for s in slide.shapes if s.shape_id != skip), key=lambda s: (s.top or 0, s.left or 0))
    for shape in shapes:
        lines += _shape_lines(shape)
    if slide.has_notes_slide and (notes := slide.notes_slide.notes_text_frame) is not None and notes.text.strip():
        lines += ["", notes.text]
    return "\n".join(line for line in lines if line is not None)


def _shape_lines(shape) -> list[str]:
    if shape.shape_type is not None and shape.shape_type == 6:  # a group: its members, in order
        return [line for member in shape.shapes for line in _shape_lines(member)]
    if getattr(shape, "has_table", False) and shape.has_table:
        return ["", markdown_table([[cell.text for cell in row.cells] for row in shape.table.rows]), ""]
    if shape.has_text_frame and shape.text_frame.text.strip():
        return [paragraph.text for paragraph in shape.text_frame.paragraphs]
    return []
