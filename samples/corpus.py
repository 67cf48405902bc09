"""A corpus made on the fly, for the tests and the benchmarks: every supported format in Spanish
and English with known sentences, PII, duplicates, and hostile files with the rejection each must
get. (The demo's own documents are the files beside it.)"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from dataclasses import dataclass

import docx
from fpdf import FPDF

from services.contracts import RejectReason

ES = [
    "Las vacaciones anuales son de veintitrés días laborables para toda la plantilla.",
    "El horario de oficina es de nueve a seis, de lunes a viernes, con una hora para comer.",
    "Los gastos de viaje se reembolsan en un plazo de treinta días tras presentar los justificantes.",
    "La empresa ofrece formación continua y un presupuesto anual de mil euros por persona.",
    "Cada equipo revisa sus objetivos trimestralmente con su responsable directo.",
]
EN = [
    "Annual leave is twenty-three working days for every member of staff.",
    "Office hours are from nine to six, Monday to Friday, with an hour for lunch.",
    "Travel expenses are reimbursed within thirty days after receipts are submitted.",
    "The company offers continuous training and a yearly budget of one thousand euros per person.",
    "Each team reviews its objectives every quarter with its direct manager.",
]


@dataclass(frozen=True)
class Doc:
    name: str
    data: bytes
    language: str | None = None  # expected language when normalized
    sentences: tuple[str, ...] = ()  # expected in the part, cleaned
    rejected: RejectReason | None = None  # expected rejection instead


def make_pdf(pages: list[list[str]], header: str | None = None, encrypt: bool = False) -> bytes:
    pdf = FPDF()
    if encrypt:
        pdf.set_encryption(owner_password="owner", user_password="user")
    pdf.set_font("helvetica", size=11)
    pdf.set_auto_page_break(False)  # one source page, one PDF page: the footer must not spill over
    for number, lines in enumerate(pages, start=1):
        pdf.add_page()
        if header:
            pdf.cell(text=header, new_x="LMARGIN", new_y="NEXT")
        for line in lines:
            pdf.multi_cell(0, 6, text=line, new_x="LMARGIN", new_y="NEXT")
        pdf.set_y(-20)
        pdf.cell(text=f"Página {number} de {len(pages)}")
    return bytes(pdf.output())


def make_docx(paragraphs: list[str], table: list[list[str]], header: str, footer: str) -> bytes:
    document = docx.Document()
    document.sections[0].header.paragraphs[0].text = header
    document.sections[0].footer.paragraphs[0].text = footer
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    grid = document.add_table(rows=len(table), cols=len(table[0]))
    for r, row in enumerate(table):
        for c, value in enumerate(row):
            grid.cell(r, c).text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def make_html(title: str, paragraphs: list[str]) -> bytes:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (f"<!doctype html><html><head><title>{title}</title></head><body>"
            f"<nav><a href='/'>Inicio</a> | <a href='/contacto'>Contacto</a></nav>"
            f"<article><h1>{title}</h1>{body}</article>"
            f"<footer>© 2026 ACME. Todos los derechos reservados.</footer></body></html>").encode()


def text_picture(lines: list[str]):
    """A PIL image of the lines in black on white, like a scanned note."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", (1700, 300 + 90 * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=44)
    for i, line in enumerate(lines):
        draw.text((100, 150 + 90 * i), line, fill=0, font=font)
    return image


def make_image(pages: list[list[str]], kind: str) -> bytes:
    """An image file of each page's lines (kind: a Pillow format; TIFF holds several pages)."""
    first, *rest = [text_picture(lines) for lines in pages]
    out = io.BytesIO()
    first.save(out, format=kind, **({"save_all": True, "append_images": rest} if rest else {}))
    return out.getvalue()


def make_scanned_pdf(lines: list[str]) -> bytes:
    """A PDF whose page is only an image of text, like a scan: no text layer."""
    png = io.BytesIO()
    text_picture(lines).save(png, format="PNG")
    pdf = FPDF()
    pdf.add_page()
    pdf.image(png, x=0, y=0, w=210)
    return bytes(pdf.output())


OCR_LINES = ["La oficina central abre a las ocho de la mañana.", "Los visitantes deben registrarse en recepción.",
             "El aparcamiento es gratuito para todo el personal.", "Las reuniones se reservan en la intranet."]


def scanned() -> Doc:
    """Read by OCR where Tesseract is installed, else rejected as no_text."""
    if shutil.which("tesseract"):
        return Doc("escaneo.pdf", make_scanned_pdf(OCR_LINES), "es", ("oficina central", "visitantes deben registrarse"))
    return Doc("escaneo.pdf", make_scanned_pdf(OCR_LINES), rejected=RejectReason.NO_TEXT)


NOTE_LINES = ["Nota: el inventario anual de la tienda empieza el lunes.", "Cada encargado revisa su propio almacén",
              "y apunta las cajas que faltan en la hoja compartida del equipo."]
SCAN_PAGES = [["Second page of the rota: the delivery van leaves at seven sharp.",
               "Drivers sign the logbook before leaving the yard."],
              ["Last page: fuel cards are kept in the office safe overnight.",
               "Report any missing card to the logistics manager at once."]]


def pictures() -> list[Doc]:
    """A photographed note (JPEG) and a two-page scanned TIFF: read by OCR where Tesseract is
    installed, else rejected as no_text."""
    docs = [("nota.jpg", make_image([NOTE_LINES], "JPEG"), "es", ("inventario anual", "encargado revisa su propio")),
            ("escaneo.tiff", make_image(SCAN_PAGES, "TIFF"), "en", ("delivery van leaves", "fuel cards are kept"))]
    if shutil.which("tesseract"):
        return [Doc(name, data, language, sentences) for name, data, language, sentences in docs]
    return [Doc(name, data, rejected=RejectReason.NO_TEXT) for name, data, _, _ in docs]


def make_zip_bomb(part: str = "word/document.xml", mimetype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if mimetype:  # an OpenDocument file or an EPUB says what it is in its first member
            archive.writestr("mimetype", mimetype)
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr(part, b"\0" * (300 * 1024 * 1024))  # 300 MB of zeros, ~300 KB packed
    return buffer.getvalue()


def make_eml(subject: str, body: str, attachments: list[tuple[str, bytes]] = (), html: bool = False) -> bytes:
    """An email from the personnel office, with (name, bytes) attachments; a name ending .eml is
    attached as a forwarded message."""
    from email.message import EmailMessage
    from email.parser import BytesParser
    from email.policy import default

    message = EmailMessage()
    message["From"], message["To"] = "Personal <personal@acme.example>", "plantilla@acme.example"
    message["Subject"], message["Date"] = subject, "Tue, 01 Dec 2026 09:30:00 +0100"
    if html:
        message.set_content(f"<html><body><p>{body}</p></body></html>", subtype="html")
    else:
        message.set_content(body)
    for name, data in attachments:
        if name.endswith(".eml"):
            message.add_attachment(BytesParser(policy=default).parsebytes(data))
        else:
            message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return message.as_bytes()


def make_huge_png() -> bytes:
    """A PNG of 100,000 x 100,000 pixels in a few kilobytes: its header is all a decoder needs to refuse."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + \
        chunk(b"IEND", b"")


def make_pptx(slides: list[tuple[str, list[str], str]], table: list[list[str]] | None = None) -> bytes:
    """A deck of (title, bullet lines, speaker notes) slides; the table on the last slide."""
    from pptx import Presentation
    from pptx.util import Inches

    deck = Presentation()
    for title, bullets, notes in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])  # title and content
        slide.shapes.title.text = title
        body = slide.placeholders[1].text_frame
        body.text = bullets[0]
        for line in bullets[1:]:
            body.add_paragraph().text = line
        slide.notes_slide.notes_text_frame.text = notes
    if table:
        frame = slide.shapes.add_table(len(table), len(table[0]), Inches(1), Inches(5), Inches(6), Inches(1))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                frame.table.cell(r, c).text = value
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def make_odf(kind: str, blocks: list[tuple[str, object]]) -> bytes:
    """An OpenDocument file (kind: text, spreadsheet or presentation) of ("h"|"p"|"list"|"table"|"slide", value)."""
    from odfdo import Document, DrawPage, Frame, Header, List, Paragraph, Table

    document = Document(kind)
    body = document.body
    if kind != "text":
        body.clear()
    for n, (what, value) in enumerate(blocks):
        if what == "h":
            body.append(Header(1, value))
        elif what == "p":
            body.append(Paragraph(value))
        elif what == "list":
            body.append(List(value))
        elif what == "table":
            name, rows = value
            table = Table(name, width=len(rows[0]), height=len(rows))
            table.set_values(rows)
            body.append(table)
        elif what == "slide":
            page = DrawPage(f"slide{n}", name=f"Slide {n}")
            for i, line in enumerate(value):
                page.append(Frame.text_frame(line, size=("20cm", "2cm"), position=("1cm", f"{1 + 3 * i}cm")))
            body.append(page)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_epub(title: str, chapters: list[tuple[str, list[str]]]) -> bytes:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier(f"afina-{title}")
    book.set_title(title)
    book.set_language("es")
    items = []
    for n, (heading, paragraphs) in enumerate(chapters):
        item = epub.EpubHtml(title=heading, file_name=f"chapter{n}.xhtml", lang="es")
        item.content = f"<html><body><h1>{heading}</h1>" + "".join(f"<p>{p}</p>" for p in paragraphs) + \
            "</body></html>"
        book.add_item(item)
        items.append(item)
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = items
    out = io.BytesIO()
    epub.write_epub(out, book)
    return out.getvalue()


def make_rtf(paragraphs: list[str]) -> bytes:
    """An RTF document in code page 1252, its accented letters as \\'xx escapes."""
    def escaped(text: str) -> str:
        return "".join(ch if ord(ch) < 128 else f"\\'{ch.encode('cp1252')[0]:02x}" for ch in text)

    body = "".join(f"{{\\pard {escaped(p)}\\par}}\n" for p in paragraphs)
    return ("{\\rtf1\\ansi\\ansicpg1252\\deff0{\\fonttbl{\\f0 Times New Roman;}}\n" + body + "}").encode("ascii")


def make_xlsx(sheets: dict[str, list[list[object]]]) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def good() -> list[Doc]:
    body = ES[:3] + ["Los nuevos empleados reciben un portátil y acceso a todas las herramientas internas."]
    hyphenated = ["Todo el personal emplea-", "do debe completar la formación de seguridad en su primer mes."]
    return [
        Doc("manual.pdf", make_pdf([[body[0], body[1]], [body[2], body[3]], hyphenated], header="ACME - Manual interno"),
            "es", (*body, "Todo el personal empleado debe completar la formación de seguridad en su primer mes.")),
        Doc("policies.docx", make_docx(EN[:3], [["Benefit", "Amount"], ["Training budget", "1000 EUR"]],
                                   "ACME Policies", "Confidential"),
            "en", (*EN[:3], "Training budget | 1000 EUR", "ACME Policies", "Confidential")),
        Doc("viajes.html", make_html("Política de viajes", ES[2:5] + [ES[0]]), "es", (ES[2], ES[3], ES[4])),
        Doc("faq.md", ("# FAQ\n\n**Leave.** " + EN[0] + "\n\n## Hours\n\n" + EN[1] + "\n\n"
                       + "\n\n".join(EN[3:]) + "\n\nSee [the handbook](http://intranet/handbook).\n").encode(),
            "en", (EN[0], EN[1], EN[3], "See the handbook.")),
        Doc("notas.txt", ("\n".join([ES[3], ES[4], ES[1], "Año nuevo: la oficina cierra el día uno."])).encode("cp1252"),
            "es", (ES[3], "Año nuevo: la oficina cierra el día uno.")),
        Doc("utf16.txt", ("\n\n".join(EN[1:4] + ["Café and croissants are served on Fridays."])).encode("utf-16"),
            "en", (EN[1], "Café and croissants are served on Fridays.")),
        Doc("chats.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in [
            {"messages": [{"role": "user", "content": "¿Cuántos días de vacaciones tengo?"},
                          {"role": "assistant", "content": "Tienes veintitrés días laborables al año."}]},
            {"prompt": "What are the office hours?", "completion": "From nine to six, Monday to Friday."},
        ]).encode(), None, ("Tienes veintitrés días laborables al año.", "From nine to six, Monday to Friday.")),
        Doc("contacto.txt", (
            "Para dudas sobre nóminas escribe a nominas@acme.example o llama al +34 612 345 678. "
            "El reembolso se hace a la cuenta ES91 2100 0418 4502 0005 1332 del empleado. "
            "La tarjeta de empresa 4111 1111 1111 1111 solo se usa para viajes aprobados. "
            "Identificación del responsable: DNI 12345678Z, o NIE X1234567L si es extranjero. "
            "El servidor de nóminas está en 192.168.10.25 y solo es accesible desde la oficina central."
        ).encode(), "es", ("Para dudas sobre nóminas escribe a [EMAIL] o llama al [PHONE].",
                           "a la cuenta [IBAN] del empleado", "La tarjeta de empresa [CARD] solo",
                           "DNI [DNI], o NIE [NIE] si", "está en [IP] y solo")),
        Doc("onboarding.pptx", make_pptx([
            ("Welcome to ACME", ["New staff meet their mentor on the first Monday.",
                                 "The security course must be finished within two weeks."],
             "Remind everyone that badges are collected at the front desk."),
            ("Your first month", ["Every team holds a review on the last Friday of the month."],
             "The review takes thirty minutes and needs no slides."),
        ], table=[["Week", "Goal"], ["One", "Laptop and accounts ready"]]),
            "en", ("Welcome to ACME", "New staff meet their mentor on the first Monday.",
                   "Remind everyone that badges are collected at the front desk.",
                   "Every team holds a review on the last Friday of the month.",
                   "| One | Laptop and accounts ready |")),
        Doc("tarifas.xlsx", make_xlsx({
            "Tarifas": [["Producto", "Precio (EUR)", "Notas"],
                        ["Tienda de campaña Cumbre", 249, "Incluye dos estacas de repuesto para terreno duro."],
                        ["Mochila Sendero 40", 89.5, "La garantía cubre las costuras durante cinco años."]],
            "Envíos": [["Zona", "Plazo"], ["Península", "Dos días laborables desde la confirmación del pedido."],
                       ["Islas Baleares", "Cuatro días laborables, con un suplemento de seis euros."]],
        }), "es", ("| Tienda de campaña Cumbre | 249 | Incluye dos estacas de repuesto para terreno duro. |",
                   "| Mochila Sendero 40 | 89.5 |", "Envíos",
                   "| Islas Baleares | Cuatro días laborables, con un suplemento de seis euros. |")),
        Doc("seguridad.odt", make_odf("text", [
            ("h", "Normas de seguridad del almacén"),
            ("p", "Las carretillas elevadoras solo las conduce el personal con el carné en vigor."),
            ("list", ["Los pasillos se mantienen libres de cajas durante todo el turno.",
                      "Los cascos se devuelven al armario azul al salir."]),
            ("table", ("Turnos", [["Turno", "Responsable"], ["Mañana", "Lucía Ferrer, jefa de almacén"]])),
        ]), "es", ("Normas de seguridad del almacén", "solo las conduce el personal con el carné en vigor.",
                   "Los cascos se devuelven al armario azul al salir.", "| Mañana | Lucía Ferrer, jefa de almacén |")),
        Doc("inventario.ods", make_odf("spreadsheet", [
            ("table", ("Stock", [["Artículo", "Unidades", "Ubicación"],
                                 ["Saco de dormir Nevada", "120", "Pasillo cuatro, estantería alta del fondo"],
                                 ["Hornillo Brasa", "45", "Jaula de material inflamable junto al muelle"]])),
        ]), "es", ("| Saco de dormir Nevada | 120 | Pasillo cuatro, estantería alta del fondo |",
                   "| Hornillo Brasa | 45 | Jaula de material inflamable junto al muelle |")),
        Doc("kickoff.odp", make_odf("presentation", [
            ("slide", ["Spring kickoff for the sales team", "Targets are shared by region this year."]),
            ("slide", ["Every region presents its plan in April.", "Plans fit on one page and list three risks."]),
        ]), "en", ("Spring kickoff for the sales team", "Every region presents its plan in April.")),
        Doc("guia.epub", make_epub("Guía del voluntario", [
            ("Bienvenida", ["Los voluntarios reciben una camiseta verde y una acreditación con foto.",
                            "La primera sesión explica cómo se organiza la recogida de alimentos."]),
            ("Horarios", ["El banco de alimentos abre los sábados de diez a dos para las donaciones.",
                          "Los turnos se apuntan en la pizarra de la entrada antes del jueves."]),
        ]), "es", ("Los voluntarios reciben una camiseta verde y una acreditación con foto.",
                   "El banco de alimentos abre los sábados de diez a dos para las donaciones.")),
        Doc("carta.rtf", make_rtf([
            "Estimada clienta: su pedido de la mochila Sendero saldrá del almacén mañana por la mañana.",
            "Si no está en casa, el repartidor dejará un aviso y volverá el día siguiente a la misma hora.",
            "Gracias por confiar en nuestra tienda de montaña desde hace más de diez años.",
        ]), "es", ("su pedido de la mochila Sendero saldrá del almacén mañana por la mañana.",
                   "Gracias por confiar en nuestra tienda de montaña desde hace más de diez años.")),
    ]


def duplicates() -> list[Doc]:
    """Sent after good(): an exact and a near duplicate of faq.md and viajes.html."""
    faq = good()[3].data.decode()
    edited = [ES[2].replace("treinta", "cuarenta"), ES[3], ES[4], ES[0]]  # one word changed
    near = make_html("Política de viajes", edited).decode()
    return [
        Doc("faq-copy.md", faq.upper().replace("\n\n", "\n").encode(), rejected=RejectReason.DUPLICATE),
        Doc("viajes-v2.html", near.encode(), rejected=RejectReason.DUPLICATE),
    ]


def hostile() -> list[Doc]:
    full_pdf = make_pdf([[ES[0]]])
    no_text = FPDF()
    no_text.add_page()
    no_text.rect(10, 10, 100, 100)
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504
    plain_zip = io.BytesIO()
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("notes.txt", "hola")
    broken_docx = io.BytesIO()
    with zipfile.ZipFile(broken_docx, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<not really xml")
    return [
        Doc("truncated.pdf", full_pdf[: len(full_pdf) // 2], rejected=RejectReason.CORRUPT),
        Doc("locked.pdf", make_pdf([[ES[0]]], encrypt=True), rejected=RejectReason.ENCRYPTED),
        Doc("bomb.docx", make_zip_bomb(), rejected=RejectReason.BOMB),
        Doc("bomb.pptx", make_zip_bomb("ppt/presentation.xml"), rejected=RejectReason.BOMB),
        Doc("bomb.xlsx", make_zip_bomb("xl/workbook.xml"), rejected=RejectReason.BOMB),
        Doc("bomb.odt", make_zip_bomb("content.xml", "application/vnd.oasis.opendocument.text"),
            rejected=RejectReason.BOMB),
        Doc("bomb.epub", make_zip_bomb("OEBPS/chapter.xhtml", "application/epub+zip"), rejected=RejectReason.BOMB),
        Doc("random.txt", os.urandom(4096), rejected=RejectReason.CORRUPT),  # named as text, and is not
        Doc("bad-utf8.txt", b"\xc3\x28\xa0\xa1\x80\x81" * 100, rejected=RejectReason.LOW_QUALITY),
        Doc("html-really.pdf", b"<!doctype html><html><body><h1>404 Not Found</h1></body></html>",
            rejected=RejectReason.LOW_QUALITY),
        Doc("deep.html", b"<html><body>" + b"<div>" * 100_000 + b"hola" + b"</div>" * 100_000 + b"</body></html>",
            rejected=RejectReason.BOMB),
        Doc("empty.txt", b"", rejected=RejectReason.EMPTY),
        Doc("blank.md", b"  \n\n\t \n", rejected=RejectReason.EMPTY),
        Doc("scan.pdf", bytes(no_text.output()), rejected=RejectReason.NO_TEXT),
        Doc("broken.jsonl", b'{"messages": [{"role": "wizard"}]}\nnot json\n', rejected=RejectReason.CORRUPT),
        Doc("old.doc", ole, rejected=RejectReason.UNSUPPORTED),
        Doc("protected.docx", ole + "EncryptedPackage".encode("utf-16-le"), rejected=RejectReason.ENCRYPTED),
        Doc("archive.docx", plain_zip.getvalue(), rejected=RejectReason.CORRUPT),  # a ZIP, but no Word document
        Doc("broken.docx", broken_docx.getvalue(), rejected=RejectReason.CORRUPT),
        Doc("short.txt", b"Hola, esto es todo.", rejected=RejectReason.LOW_QUALITY),
        Doc("symbols.txt", ("$%&/()=?*+-_.:,;<>|#@" * 40).encode(), rejected=RejectReason.LOW_QUALITY),
        Doc("image.png", b"\x89PNG\r\n\x1a\n" + os.urandom(200), rejected=RejectReason.CORRUPT),
        Doc("huge.png", make_huge_png(), rejected=RejectReason.BOMB),
    ]
