"""Builds the sample PDF and DOCX documents from their text sources in ``samples/src/``.

    .venv/bin/python samples/make_samples.py          # (re)write the binaries next to the sources
    .venv/bin/python samples/make_samples.py --check  # exit 1 when a committed binary is out of date

Each source is a small Markdown file with a front matter (``output``, ``title``, ``header``,
``footer``...) and a body of headings (``#``), paragraphs, bullet lines (``- ``) and pipe tables.
PDFs get the header and a "page X of Y" footer on every page (the normalizer drops them as
repeated page edges); DOCX files get a real Word header, footer and table.

The output is deterministic: fixed creation dates and metadata, ZIP entries with a fixed
timestamp. Bytes are identical on re-runs with the same fpdf2, python-docx and zlib versions
and the same DejaVu Sans font; another version of any of them may change bytes, not text.
The other samples (HTML, Markdown, TXT, JSONL) are written by hand and kept as they are.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import docx
from docx.enum.text import WD_ALIGN_PARAGRAPH
from docx.shared import Pt, RGBColor
from fpdf import FPDF
from fpdf.fonts import FontFace

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
FIXED_DATE = datetime(2025, 3, 1, 9, 0, 0, tzinfo=UTC)
ZIP_DATE = (2025, 3, 1, 9, 0, 0)
AUTHOR = "Cierzo Outdoor S.L."
CREATOR = "afina samples/make_samples.py"
FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"),
             Path("/usr/share/fonts/TTF"), Path("/Library/Fonts"), Path.home() / ".fonts"]
PAGE_LABEL = {"es": "Página {page} de {pages}", "en": "Page {page} of {pages}"}


# ---- sources ------------------------------------------------------------------------------


@dataclass
class Block:
    kind: str  # "h1", "h2", "h3", "p", "bullets", "table"
    text: str = ""
    items: list[str] = field(default_factory=list)  # bullets
    rows: list[list[str]] = field(default_factory=list)  # table, the first row is the header


@dataclass
class Source:
    path: Path
    meta: dict[str, str]
    blocks: list[Block]

    @property
    def output(self) -> Path:
        return HERE / self.meta["output"]

    @property
    def language(self) -> str:
        return self.meta.get("language", "es")


def parse(path: Path) -> Source:
    text = path.read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    if not match:
        raise SystemExit(f"{path}: no front matter")
    meta = dict(line.split(": ", 1) for line in match.group(1).splitlines() if line.strip())
    blocks = []
    for chunk in re.split(r"\n\s*\n", text[match.end():].strip()):
        lines = [line.rstrip() for line in chunk.splitlines()]
        first = lines[0]
        if first.startswith("#"):
            level = len(first) - len(first.lstrip("#"))
            blocks.append(Block(f"h{level}", first.lstrip("#").strip()))
        elif first.startswith("- "):
            blocks.append(Block("bullets", items=[line[2:].strip() for line in lines]))
        elif first.startswith("|"):
            rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
            rows = [row for row in rows if not all(re.fullmatch(r":?-{3,}:?", cell) for cell in row)]
            blocks.append(Block("table", rows=rows))
        else:
            blocks.append(Block("p", " ".join(line.strip() for line in lines)))
    return Source(path, meta, blocks)


# ---- PDF ------------------------------------------------------------------------------------


def _font_path(name: str) -> Path | None:
    for folder in FONT_DIRS:
        if (folder / name).is_file():
            return folder / name
    return None


class _PDF(FPDF):
    def __init__(self, source: Source, unicode: bool) -> None:
        super().__init__(format="A4")
        self.source = source
        self.family = "DejaVu" if unicode else "helvetica"
        self.unicode = unicode

    def t(self, text: str) -> str:
        """Text the font can draw: everything with DejaVu, Latin-1 with the core fonts."""
        if self.unicode:
            return text
        text = text.replace("€", "EUR").replace("·", "-").replace("–", "-").replace("’", "'")
        return text.encode("latin-1", "replace").decode("latin-1")

    def header(self) -> None:
        self.set_font(self.family, size=8)
        self.set_text_color(110, 110, 110)
        self.cell(0, 5, self.t(self.source.meta.get("header", "")), new_x="LMARGIN", new_y="NEXT")
        self.set_draw_color(180, 180, 180)
        self.line(self.l_margin, self.get_y() + 1, self.w - self.r_margin, self.get_y() + 1)
        self.ln(6)
        self.set_text_color(0, 0, 0)

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font(self.family, size=8)
        self.set_text_color(110, 110, 110)
        label = PAGE_LABEL[self.source.language].format(page=self.page_no(), pages="{nb}")
        self.cell(0, 5, self.t(f"{self.source.meta.get('footer', '')} · {label}"), align="C")
        self.set_text_color(0, 0, 0)


def render_pdf(source: Source) -> bytes:
    regular, bold = _font_path("DejaVuSans.ttf"), _font_path("DejaVuSans-Bold.ttf")
    pdf = _PDF(source, unicode=bool(regular and bold))
    if pdf.unicode:
        pdf.add_font("DejaVu", "", str(regular))
        pdf.add_font("DejaVu", "B", str(bold))
    else:
        print("DejaVu Sans not found: falling back to Helvetica (Latin-1 text)", file=sys.stderr)
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(pdf.t(source.meta.get("title", "")))
    pdf.set_subject(pdf.t(source.meta.get("subject", "")))
    pdf.set_author(AUTHOR)
    pdf.set_creator(CREATOR)
    pdf.set_producer(CREATOR)
    pdf.set_lang(source.language)
    pdf.set_margins(20, 18, 20)
    pdf.set_auto_page_break(True, margin=22)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    for block in source.blocks:
        if block.kind in ("h1", "h2", "h3"):
            size = {"h1": 18, "h2": 13, "h3": 11}[block.kind]
            if pdf.get_y() > pdf.page_break_trigger - 25:
                pdf.add_page()  # no heading alone at the foot of a page
            pdf.ln(3 if block.kind != "h1" else 0)
            pdf.set_font(pdf.family, "B", size)
            pdf.multi_cell(width, size * 0.5, pdf.t(block.text), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
        elif block.kind == "p":
            pdf.set_font(pdf.family, "", 10.5)
            pdf.multi_cell(width, 5.4, pdf.t(block.text), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2.5)
        elif block.kind == "bullets":
            pdf.set_font(pdf.family, "", 10.5)
            for item in block.items:
                pdf.set_x(pdf.l_margin + 4)
                pdf.multi_cell(width - 4, 5.4, pdf.t(f"• {item}" if pdf.unicode else f"- {item}"),
                               new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2.5)
        elif block.kind == "table":
            pdf.set_font(pdf.family, "", 9)
            with pdf.table(width=width, line_height=5, headings_style=FontFace(emphasis="BOLD"),
                           text_align="LEFT") as table:
                for row in block.rows:
                    table.row([pdf.t(cell) for cell in row])
            pdf.ln(3)
    return bytes(pdf.output())


# ---- DOCX -----------------------------------------------------------------------------------


def render_docx(source: Source) -> bytes:
    document = docx.Document()
    props = document.core_properties
    props.title = source.meta.get("title", "")
    props.subject = source.meta.get("subject", "")
    props.author = props.last_modified_by = AUTHOR
    props.language = source.language
    props.created = props.modified = props.last_printed = FIXED_DATE.replace(tzinfo=None)
    props.revision = 1
    props.comments = CREATOR

    normal = document.styles["Normal"]
    normal.font.name = "Calibri"
    normal.font.size = Pt(11)

    section = document.sections[0]
    header = section.header.paragraphs[0]
    header.text = source.meta.get("header", "")
    header.alignment = WD_ALIGN_PARAGRAPH.RIGHT
    footer = section.footer.paragraphs[0]
    footer.text = source.meta.get("footer", "")
    footer.alignment = WD_ALIGN_PARAGRAPH.CENTER
    for paragraph in (header, footer):
        for run in paragraph.runs:
            run.font.size = Pt(8)
            run.font.color.rgb = RGBColor(0x6E, 0x6E, 0x6E)

    for block in source.blocks:
        if block.kind in ("h1", "h2", "h3"):
            document.add_heading(block.text, level={"h1": 0, "h2": 1, "h3": 2}[block.kind])
        elif block.kind == "p":
            document.add_paragraph(block.text)
        elif block.kind == "bullets":
            for item in block.items:
                document.add_paragraph(item, style="List Bullet")
        elif block.kind == "table":
            table = document.add_table(rows=len(block.rows), cols=len(block.rows[0]))
            table.style = "Table Grid"
            for r, row in enumerate(block.rows):
                for c, value in enumerate(row):
                    cell = table.cell(r, c)
                    cell.text = value
                    if r == 0:
                        for run in cell.paragraphs[0].runs:
                            run.bold = True
            document.add_paragraph()
    out = io.BytesIO()
    document.save(out)
    return _stable_zip(out.getvalue())


def _stable_zip(data: bytes) -> bytes:
    """The same ZIP with fixed entry timestamps and attributes (python-docx stamps the time now)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=ZIP_DATE)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            entry.create_system = 3
            dst.writestr(entry, src.read(info.filename), compresslevel=9)
    return out.getvalue()


# ---- main -----------------------------------------------------------------------------------


def sources() -> list[Source]:
    return [parse(path) for path in sorted(SOURCES.glob("*.md"))]


def render(source: Source) -> bytes:
    suffix = source.output.suffix
    if suffix == ".pdf":
        return render_pdf(source)
    if suffix == ".docx":
        return render_docx(source)
    raise SystemExit(f"{source.path}: cannot make {suffix} files")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = parser.parse_args()
    stale = []
    for source in sources():
        data = render(source)
        name = source.output.relative_to(HERE)
        if args.check:
            if not source.output.exists() or source.output.read_bytes() != data:
                stale.append(str(name))
            continue
        source.output.parent.mkdir(parents=True, exist_ok=True)
        source.output.write_bytes(data)
        print(f"{name}  {len(data):>7} bytes")
    if stale:
        print("out of date (run samples/make_samples.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
