"""Formats beyond the first ones: PPTX (a page per slide, its notes, its tables), XLSX and ODS (a page
per sheet, as a Markdown table), ODT, ODP, EPUB (a page per chapter) and RTF, the zipped ones behind
the same ZIP bomb check; images through OCR (a page per frame), behind a pixel budget; and tables
as Markdown."""

from __future__ import annotations

import functools
import hashlib
import io
import shutil

import pytest

from samples import corpus
from services import media
from services.contracts import RejectReason
from services.normalizer import clean
from services.normalizer.extract import Rejection, extract
from services.normalizer.extract.tables import markdown_table
from services.normalizer.pipeline import normalize


@functools.cache
def samples() -> dict[str, corpus.Doc]:
    return {doc.name: doc for doc in corpus.good() + corpus.hostile()}  # the bombs take seconds to make


def sample(name: str) -> corpus.Doc:
    return samples()[name]


def extracted(doc: corpus.Doc):
    kind = media.sniff(doc.data[: media.HEAD_BYTES], doc.name, io.BytesIO(doc.data))
    return kind, extract(doc.data, kind, doc.name)


OFFICE = ["onboarding.pptx", "tarifas.xlsx", "seguridad.odt", "inventario.ods", "kickoff.odp", "guia.epub"]


@pytest.mark.parametrize("name", [*OFFICE, "carta.rtf"])
def test_every_sentence_of_each_format_comes_out(name):
    doc = sample(name)
    _, found = extracted(doc)
    text = clean.clean_pages(found.pages, found.paged)
    for sentence in doc.sentences:
        assert sentence in text


def test_sheets_that_begin_alike_keep_every_row_headers_and_footers_go_from_printed_pages_only():
    """A month per sheet, each with the same columns and products: not a page header repeated."""
    months = {month: [["Producto", "Unidades vendidas", "Tienda"],
                      *[[product, 10 * i + n, "Centro"] for n, product in enumerate(("Tienda de campaña Tramontana",
                                                                                     "Saco de dormir Cierzo"))]]
              for i, month in enumerate(("Enero", "Febrero", "Marzo"), start=1)}
    data = corpus.make_xlsx(months)
    text = normalize(data, media.sniff(data[: media.HEAD_BYTES], "ventas.xlsx", io.BytesIO(data)), "ventas.xlsx").text
    for month, rows in months.items():
        assert f"# {month}" in text and all(f"| {row[0]} | {row[1]} | {row[2]} |" in text for row in rows[1:])
    assert text.count("| Producto | Unidades vendidas | Tienda |") == 3
    printed = [f"ACME Ventas\n{month}: {rows[1][0]} {rows[1][1]}\nPágina {i}" for i, (month, rows) in
               enumerate(months.items(), start=1)]
    assert "ACME" not in clean.clean_pages(printed, paged=True) and "ACME" in clean.clean_pages(printed)


def test_a_chapter_opening_page_gives_its_heading_once_without_the_main_content_extractor(monkeypatch):
    """Books converted from the web open each chapter with a page of its heading and a navigation
    bar; trafilatura wrote the heading twice as body text, and the chapter repeats it anyway."""
    from services.normalizer.extract import html

    monkeypatch.setattr(html, "_main_text", lambda markup: pytest.fail("a title page needs no extractor"))
    opening = ('<html><body><section><h1>Capítulo 1. Normas</h1><div class="navheader"><table><tr>'
               '<td><a href="prev.html">Anterior</a></td><td><a href="next.html">Siguiente</a></td>'
               '</tr></table></div></section></body></html>').encode()
    assert html.extract(opening).pages == ["# Capítulo 1. Normas"]
    book = corpus.make_epub("Manual", [("Capítulo 1. Normas", []), ("Capítulo 1. Normas", corpus.ES[:3]),
                                       ("Capítulo 2. Horarios", corpus.ES[3:6])])
    _, found = extracted(corpus.Doc("manual.epub", book))
    text = clean.clean_pages(found.pages, found.paged)
    assert len(found.pages) == 2 and text.count("Capítulo 1. Normas") == 1 and text.count("Capítulo 2") == 1
    assert all(sentence in text for sentence in corpus.ES[:6])


def test_a_deck_is_a_page_per_slide_with_its_notes_and_a_workbook_a_page_per_sheet():
    kind, deck = extracted(sample("onboarding.pptx"))
    assert kind == media.PPTX and len(deck.pages) == 2
    assert deck.paged and deck.pages[0].startswith("# Welcome to ACME\n") and deck.pages[0].endswith("front desk.")
    assert "| One | Laptop and accounts ready |" in deck.pages[1]
    kind, book = extracted(sample("tarifas.xlsx"))
    assert kind == media.XLSX and [page.split("\n")[0] for page in book.pages] == ["# Tarifas", "# Envíos"]
    kinds = {name: extracted(sample(name))[0] for name in ("seguridad.odt", "inventario.ods", "kickoff.odp",
                                                              "guia.epub", "carta.rtf")}
    assert kinds == {"seguridad.odt": media.ODT, "inventario.ods": media.ODS, "kickoff.odp": media.ODP,
                     "guia.epub": media.EPUB, "carta.rtf": media.RTF}
    assert len(extracted(sample("guia.epub"))[1].pages) == 2  # a page per chapter


@pytest.mark.parametrize("name", ["bomb.pptx", "bomb.xlsx", "bomb.odt", "bomb.epub"])
def test_zip_bombs_of_every_format_are_not_opened(name):
    with pytest.raises(Rejection) as refused:
        extracted(sample(name))
    assert refused.value.reason == RejectReason.BOMB


@pytest.mark.parametrize("name", OFFICE)
def test_a_damaged_zipped_file_is_corrupt_and_says_so(name):
    data = sample(name).data
    broken = data[:200] + bytes(len(data) - 400) + data[-200:]  # its parts zeroed, its directory kept
    with pytest.raises(Rejection) as refused:
        extract(broken, media.sniff(broken[: media.HEAD_BYTES], name, io.BytesIO(broken)), name)
    assert refused.value.reason == RejectReason.CORRUPT and refused.value.message


def test_tables_become_markdown_without_empty_rows_or_columns():
    assert markdown_table([["Zona", "", "Plazo"], ["", "", ""], ["Norte | Sur", None, "2 días"]]) == (
        "| Zona | Plazo |\n| --- | --- |\n| Norte \\| Sur | 2 días |")
    assert markdown_table([["", ""]]) == ""


def test_a_photo_and_a_multi_page_scan_are_read_by_ocr_a_page_per_frame():
    pictures = {doc.name: doc for doc in corpus.pictures()}
    if shutil.which("tesseract") is None:  # the corpus then expects no_text, and says why
        with pytest.raises(Rejection) as refused:
            extracted(pictures["nota.jpg"])
        assert refused.value.reason == RejectReason.NO_TEXT and "Tesseract" in refused.value.message
        return
    for doc in pictures.values():
        _, found = extracted(doc)
        text = clean.clean_pages(found.pages, found.paged)
        assert all(sentence in text for sentence in doc.sentences), text
    assert len(extracted(pictures["escaneo.tiff"])[1].pages) == 2


@pytest.mark.parametrize(("name", "reason"), [("image.png", RejectReason.CORRUPT), ("huge.png", RejectReason.BOMB)])
def test_a_damaged_image_is_corrupt_and_one_too_large_to_decode_is_a_bomb(name, reason):
    with pytest.raises(Rejection) as refused:
        extracted(sample(name))
    assert refused.value.reason == reason and refused.value.message


def test_an_email_is_its_subject_sender_date_and_body_and_its_attachments_come_apart():
    forwarded = corpus.make_eml("Notas de la reunión", "Resumen adjunto.", [("notas.txt", b"Notas.")])
    pdf = corpus.make_pdf([[corpus.EN[0]]])
    mail = corpus.make_eml("Calendario de vacaciones", " ".join(corpus.ES),
                           [("informe.pdf", pdf), ("fwd.eml", forwarded), ("informe.pdf", b"%PDF-")])
    kind, found = extracted(corpus.Doc("aviso.eml", mail))
    assert kind == media.EML == media.sniff(mail[: media.HEAD_BYTES], "aviso")  # its headers say it, not its name
    text = clean.clean_pages(found.pages, found.paged)
    assert text.startswith("# Calendario de vacaciones\nFrom: Personal <personal@acme.example>\n")
    assert "Date: Tue, 01 Dec 2026 09:30:00 +0100" in text and corpus.ES[-1] in text
    assert [name for name, _ in found.attachments] == ["informe.pdf", "Notas de la reunión.eml", "informe (2).pdf"]
    assert found.attachments[0][1] == pdf  # the bytes as sent, decoded from base64
    inner = extract(found.attachments[1][1], media.EML, "fwd.eml")
    assert inner.attachments == [("notas.txt", b"Notas.")]
    html_mail = corpus.make_eml("Aviso", "Hola <b>equipo</b>, la oficina cierra el viernes.", html=True)
    assert extracted(corpus.Doc("h.eml", html_mail))[1].pages[0].endswith("\n\nHola equipo, la oficina cierra el viernes.")
    assert media.sniff(b"Nota: esto es\nuna prueba\n", "nota.txt") == media.TEXT  # one "field" is no email


def test_an_email_with_only_attachments_is_kept_and_its_part_lists_them():
    from datetime import UTC, datetime

    from tokenizers import Tokenizer, models, pre_tokenizers

    from services.contracts import TokenizerId
    from services.datasets import parts
    from services.normalizer.pipeline import Origin, Tokenization, prepare

    words = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    pdf = corpus.make_pdf([[corpus.EN[0]]])
    mail = corpus.make_eml("Informe", "", [("informe.pdf", pdf)])  # "see attached": no body at all
    origin = Origin("folder:inbox/aviso.eml", "f" * 64, media.EML, datetime(2026, 12, 1, tzinfo=UTC))
    prepared = prepare(mail, origin, (), Tokenization(words, TokenizerId.of(0, b"words"), 64))
    (attachment, data), = prepared.attachments
    assert data == pdf and prepared.info.attachments == 1
    assert attachment == parts.Attachment("folder:inbox/aviso.eml#informe.pdf", hashlib.sha256(pdf).hexdigest(),
                                          len(pdf), media.PDF)
    assert parts.attachments_of(prepared.part) == [attachment]  # the part says what it holds
    assert parts.PartInfo.from_metadata(prepared.info.as_metadata()).attachments == 1


def test_an_email_with_too_many_attachments_is_refused():
    mail = corpus.make_eml("Spam", "Muchos adjuntos.", [(f"a{n}.txt", b"x") for n in range(101)])
    with pytest.raises(Rejection) as refused:
        extracted(corpus.Doc("spam.eml", mail))
    assert refused.value.reason == RejectReason.TOO_LARGE and "100 attachments" in refused.value.message


MANUAL_CHAPTER = """<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<!DOCTYPE html><html><head><title>Chapter 14. Redistributing</title></head><body>
<div class="navheader"><table><tr><td><a href="13.html">Prev</a></td><td><a href="15.html">Next</a></td></tr></table></div>
<div class="chapter"><div class="titlepage"><h1 class="title"><a id="c14"></a>Chapter 14. Redistributing</h1></div>
<div class="toc"><p><b>Table of Contents</b></p><ul><li><a href="#a">14.1. Can I sell CDs?</a></li>
<li><a href="#b">14.2. Can I add my program?</a></li></ul></div>
<div class="section"><div class="titlepage"><h2 class="title"><a id="a"></a>14.1. Can I sell CDs?</h2></div>
<p>Go ahead. You do not need permission to distribute anything we have <em>released</em>, so that you can
master your CD as soon as the beta test ends.</p>
<p>Run <code class="literal">while dquilt push; do dquilt
refresh; done</code> until every patch applies.</p></div>
<div class="section"><div class="titlepage"><h2 class="title"><a id="b"></a>14.2. Can I add my program?</h2></div>
<p>Go right ahead. The package tool is free software; the packages may or may not be free software, it can
install them all.</p></div></div>
<div class="navfooter"><table><tr><td><a href="13.html">Chapter 13. Contributing</a></td><td><a href="index.html">Home</a></td></tr></table></div>
</body></html>"""


def test_a_page_that_is_all_content_keeps_every_heading_and_section_and_its_inline_code_in_place():
    kind, found = extracted(corpus.Doc("redistributing.en.html", MANUAL_CHAPTER.encode()))
    text = clean.clean_pages(found.pages, found.paged)
    assert kind == media.HTML
    assert "# Chapter 14. Redistributing" in text and "## 14.2. Can I add my program?" in text
    assert "The package tool is free software" in text  # the last section, which trafilatura alone drops
    assert "anything we have released, so that" in text  # no Markdown emphasis
    assert "Run while dquilt push; do dquilt refresh; done until every patch applies." in text  # no code fence
    for navigation in ("Prev", "Chapter 13. Contributing", "14.1. Can I sell CDs?\n- 14.2"):
        assert navigation not in text


TEASERS_PAGE = ("<html><body><div class='content'><h1>Returns</h1>"
                + "".join(f"<p>Rule {i}: customers may return items within thirty days of purchase in any shop.</p>"
                          for i in range(4))
                + "</div><div>" + "".join(f"<div><a href='/p{i}'>Read more about story number {i} of the week here"
                                          "</a> posted by someone on a day</div>" for i in range(30))
                + "</div></body></html>")


def test_trafilatura_reads_only_the_pages_the_fast_extractor_does_not_find_all_content(monkeypatch):
    from services.normalizer.extract import html

    asked = []
    slow = html._main_text
    monkeypatch.setattr(html, "_main_text", lambda markup: asked.append(markup) or slow(markup))
    text = html.extract(MANUAL_CHAPTER.encode()).pages[0]
    assert "## 14.2. Can I add my program?" in text and "The package tool is free software" in text
    assert asked == []  # all content: Resiliparse's extractor held every word, trafilatura was not run
    # teasers, mostly links, that the fast extractor keeps as content: trafilatura's link rules drop them
    text = html.extract(TEASERS_PAGE.encode()).pages[0]
    assert len(asked) == 1
    assert "Rule 3: customers may return items within thirty days" in text and "story number" not in text


def test_markdown_escapes_and_links_whose_address_has_parentheses_are_plain_text():
    from services.normalizer.extract.text import strip_markdown

    assert strip_markdown(r"use 1.0-1\~rc1, not \*this\*") == "use 1.0-1~rc1, not *this*"
    assert strip_markdown("written in [C](http://es.wikipedia.org/wiki/C_(lenguaje)) and **C++**") == \
        "written in C and C++"


def test_clean_repairs_only_lines_that_need_it_as_ftfy_would_the_whole_text():
    assert clean.clean_text("“Quoted” text\nCafÃ© con leche\nfish &amp; chips") == \
        '"Quoted" text\nCafé con leche\nfish & chips'
    assert clean.clean_text("<b>entities in markup</b>\nfish &amp; chips") == \
        "<b>entities in markup</b>\nfish &amp; chips"  # a text with markup keeps its entities, as fix_text does


def test_a_blank_pdf_page_is_not_rendered_for_ocr_a_scanned_one_is(monkeypatch):
    from fpdf import FPDF

    from services.normalizer.extract import ocr, pdf

    read = []
    monkeypatch.setattr(ocr, "tesseract", lambda: "tesseract")
    monkeypatch.setattr(ocr, "read", lambda picture: read.append(picture.size) or "La oficina abre a las ocho.")
    made = FPDF()
    made.set_font("helvetica", size=11)
    made.add_page()
    made.multi_cell(0, 6, text=corpus.EN[0])
    made.add_page()  # a scan: a picture of text, no text layer
    picture = io.BytesIO()
    scan = corpus.text_picture(corpus.OCR_LINES)
    scan.save(picture, format="PNG")
    made.image(picture, x=0, y=0, w=210)
    made.add_page()  # blank
    made.add_page()  # a cover: a small low-resolution logo (72 dpi), no text layer
    logo = io.BytesIO()
    scan.resize((200, 100)).save(logo, format="PNG")
    made.image(logo, x=50, y=50, w=200 / 72 * 25.4)
    merged = io.BytesIO(bytes(made.output()))
    found = pdf.extract(merged.getvalue())
    assert len(found.pages) == 4 and len(read) == 2  # the scan and the cover: not the text page, not the blank one
    assert found.pages[1] == "La oficina abre a las ocho." and not found.pages[2].strip()
    # each rendered at its picture's own resolution (the scan's, about 200 dpi), never under 150 dpi
    assert abs(read[0][0] - scan.width) <= 2
    assert abs(read[1][0] - round(210 / 25.4 * pdf.OCR_DPI[0])) <= 2


def test_an_outlook_message_is_read_like_an_email_and_its_attachments_come_apart():
    from samples.outlook import make_msg

    pdf = corpus.make_pdf([[corpus.EN[0]]])
    message = make_msg("Calendario de vacaciones", "Personal <personal@acme.example>", " ".join(corpus.ES),
                       [("informe.pdf", pdf), ("informe.pdf", b"otra")])
    kind, found = extracted(corpus.Doc("aviso.msg", message))
    assert kind == media.MSG
    text = clean.clean_pages(found.pages, found.paged)
    assert text.startswith("# Calendario de vacaciones\nFrom: Personal <personal@acme.example>\n\n")
    assert corpus.ES[-1] in text
    assert found.attachments == [("informe.pdf", pdf), ("informe (2).pdf", b"otra")]
    legacy = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 1024  # an OLE file, but no message
    with pytest.raises(Rejection) as refused:
        extracted(corpus.Doc("aviso.msg", legacy))
    assert refused.value.reason == RejectReason.CORRUPT and "no message properties" in refused.value.message


def test_a_docx_word_split_across_runs_comes_out_whole():
    """Word splits a word into runs where its formatting, spell-check marks or a bookmark change
    ("plac" + "ed"): the runs' text joins without a space."""
    import docx
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    document = docx.Document()
    paragraph = document.add_paragraph()
    paragraph.add_run("The forms are plac")
    for tag in ("w:proofErr", "w:bookmarkStart", "w:bookmarkEnd"):
        marker = OxmlElement(tag)
        marker.set(qn("w:id" if tag != "w:proofErr" else "w:type"), "0" if tag != "w:proofErr" else "spellStart")
        paragraph._p.append(marker)
    paragraph.add_run("ed").bold = True
    paragraph.add_run(" in separate folders, one per customer, and kept for five years.")
    buffer = io.BytesIO()
    document.save(buffer)
    _, found = extracted(corpus.Doc("forms.docx", buffer.getvalue()))
    assert "The forms are placed in separate folders" in clean.clean_pages(found.pages, found.paged)
