"""Formats beyond the first ones: PPTX (a page per slide, its notes, its tables), XLSX and ODS (a page
per sheet, as a Markdown table), ODT, ODP, EPUB (a page per chapter) and RTF, the zipped ones behind
the same ZIP bomb check; images through OCR (a page per frame), behind a pixel budget; and tables
as Markdown."""

from __future__ import annotations

import functools
import io
import shutil

import pytest

from samples import corpus
from services import media
from services.contracts import RejectReason
from services.normalizer import clean
from services.normalizer.extract import Rejection, extract
from services.normalizer.extract.tables import markdown_table


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
    text = clean.clean_pages(found.pages)
    for sentence in doc.sentences:
        assert sentence in text


def test_a_deck_is_a_page_per_slide_with_its_notes_and_a_workbook_a_page_per_sheet():
    kind, deck = extracted(sample("onboarding.pptx"))
    assert kind == media.PPTX and len(deck.pages) == 2
    assert deck.pages[0].startswith("Welcome to ACME\n") and deck.pages[0].endswith("front desk.")
    assert "| One | Laptop and accounts ready |" in deck.pages[1]
    kind, book = extracted(sample("tarifas.xlsx"))
    assert kind == media.XLSX and [page.split("\n")[0] for page in book.pages] == ["Tarifas", "Envíos"]
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
        text = clean.clean_pages(found.pages)
        assert all(sentence in text for sentence in doc.sentences), text
    assert len(extracted(pictures["escaneo.tiff"])[1].pages) == 2


@pytest.mark.parametrize(("name", "reason"), [("image.png", RejectReason.CORRUPT), ("huge.png", RejectReason.BOMB)])
def test_a_damaged_image_is_corrupt_and_one_too_large_to_decode_is_a_bomb(name, reason):
    with pytest.raises(Rejection) as refused:
        extracted(sample(name))
    assert refused.value.reason == reason and refused.value.message
