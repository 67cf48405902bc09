"""Structure kept: headings become each chunk's section path and PDF pages and slides its page, in
every format that has them, through the normalizer's real path to a Parquet part; passages cite
the same path, even in a chunk that starts below its heading."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import docx
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from samples import corpus
from services import media
from services.contracts import TokenizerId
from services.datasets import structure
from services.datasets.parts import read_parquet
from services.normalizer.pipeline import Origin, Tokenization, prepare
from services.retrieval import passages

BODY = ("Los clientes tienen treinta días naturales para devolver un producto sin usar, con el ticket de "
        "compra o el pedido en la web, en cualquier tienda de la cadena.")
OTHER = ("Los productos perecederos y la ropa interior no se aceptan de vuelta en ningún caso, por razones "
         "de higiene y de seguridad alimentaria.")


@pytest.fixture(scope="module")
def tokenization() -> Tokenization:
    words = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))  # a token per word: easy to count
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return Tokenization(words, TokenizerId.of(0, b"words"), max_chunk_tokens=40)


def rows_of(data: bytes, name: str, tokenization: Tokenization) -> list[dict]:
    kind = media.sniff(data[: media.HEAD_BYTES], name, io.BytesIO(data))
    origin = Origin(f"folder:inbox/{name}", "f" * 64, kind, datetime(2026, 1, 2, tzinfo=UTC))
    return read_parquet(prepare(data, origin, (), tokenization).part).to_pylist()


def sections(rows: list[dict]) -> list[str]:
    return [row["section"] for row in rows]


def test_headings_nest_into_a_path_and_pages_keep_their_numbers():
    pages = ["# Manual\n\nIntro.\n## Leave\nDays off.\n\n### Sick leave\n\nA note.", "", "## Pay\n\nMonthly."]
    found = structure.paragraphs(pages, paged=True)
    assert [(p.section, p.page) for p in found] == [
        ("Manual", 1), ("Manual", 1), ("Manual > Leave", 1), ("Manual > Leave > Sick leave", 1),
        ("Manual > Leave > Sick leave", 1), ("Manual > Pay", 3), ("Manual > Pay", 3)]
    assert found[2].text == "## Leave\nDays off."  # a heading starts a paragraph even without a blank line
    assert [p.page for p in structure.paragraphs(["Uno.", "Dos."])] == [None, None]  # unpaged: no numbers
    assert structure.heading("#hashtag") is None and structure.heading("## Pay ##") == (2, "Pay")


def test_docx_heading_styles_become_the_section_path(tokenization):
    document = docx.Document()
    document.add_heading("Política de devoluciones", level=1)
    document.add_heading("Plazo", level=2)
    document.add_paragraph(BODY)
    document.add_paragraph(BODY)
    document.add_heading("Excepciones", level=2)
    document.add_paragraph(OTHER)
    buffer = io.BytesIO()
    document.save(buffer)
    rows = rows_of(buffer.getvalue(), "politica.docx", tokenization)
    assert sections(rows) == ["Política de devoluciones > Plazo", "Política de devoluciones > Plazo",
                              "Política de devoluciones > Excepciones"]
    assert rows[0]["text"].startswith("# Política de devoluciones\n\n## Plazo\n\n")  # the text keeps them
    assert {row["page"] for row in rows} == {None}  # a Word file has no fixed pages


@pytest.mark.parametrize("name", ["politica.html", "politica.md", "politica.odt"])
def test_html_markdown_and_odt_headings_become_the_section_path(name, tokenization):
    data = {
        "politica.html": corpus.make_html("Política de devoluciones", [BODY]).replace(
            b"</article>", f"<h2>Excepciones</h2><p>{OTHER}</p></article>".encode()),
        "politica.md": f"# Política de devoluciones\n\n{BODY}\n\n## Excepciones\n\n{OTHER}\n".encode(),
        "politica.odt": corpus.make_odf("text", [("h", "Política de devoluciones"), ("p", BODY),
                                                 ("h", "Excepciones"), ("p", OTHER)]),
    }[name]
    rows = rows_of(data, name, tokenization)
    expected = "Excepciones" if name == "politica.odt" else "Política de devoluciones > Excepciones"  # ODT: both level 1
    assert sections(rows) == ["Política de devoluciones", expected]


def test_pdf_pages_and_slides_are_each_chunks_page(tokenization):
    pdf = corpus.make_pdf([[BODY], [OTHER], [BODY.replace("treinta", "quince")]])
    assert [row["page"] for row in rows_of(pdf, "manual.pdf", tokenization)] == [1, 2, 3]
    deck = corpus.make_pptx([("Bienvenida", [BODY], "Notas de la primera."), ("Normas", [OTHER], "Más notas.")])
    rows = rows_of(deck, "onboarding.pptx", tokenization)
    assert [(row["section"], row["page"]) for row in rows] == [("Bienvenida", 1), ("Normas", 2)]


def test_a_passage_cites_the_heading_path_of_a_chunk_that_starts_below_it(tokenization):
    text = f"# Manual\n\n## Devoluciones\n\n{BODY}\n\n{BODY}\n\n{BODY}\n\n## Excepciones\n\n{OTHER}\n"
    rows = rows_of(text.encode(), "manual.md", tokenization)
    assert len(rows) >= 3 and not rows[1]["text"].startswith("#")  # the second chunk has no heading of its own
    found = passages.from_rows(rows)
    by_chunk = {p.chunk: p.section for p in found}
    assert by_chunk[rows[1]["chunk_index"]] == "Manual > Devoluciones"
    assert found[-1].section == "Manual > Excepciones" and found[-1].text.startswith("Excepciones\n")
