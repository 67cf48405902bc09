"""The normalizer's pure parts, without any server."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from samples import corpus
from services.contracts import RejectReason, TokenizerId
from services.datasets import structure
from services.datasets.parts import part_key, read_parquet, to_parquet, tombstone_key
from services.normalizer import clean, language, pii, quality
from services.normalizer.dedup import DedupLog
from services.normalizer.extract import Rejection
from services.normalizer.fingerprint import (
    NEAR_THRESHOLD,
    Fingerprint,
    FingerprintIndex,
    band_hashes,
    normalized_hash,
    signature,
    similarity,
)
from services.normalizer.pipeline import Origin, Tokenization, normalize, prepare
from services.normalizer.tokenize import chunk
from services.normalizer.worker import WorkerPool
from services.settings import Settings

TOKENIZER = TokenizerId.of(0, b"a test tokenizer")


def test_clean_repairs_unicode_and_whitespace():
    assert clean.clean_text("CafÃ©\x00  con\t\tleche\r\n\r\n\r\n\r\nfin") == "Café con leche\n\nfin"
    assert clean.clean_text("e\u0301") == "é"  # NFC
    assert clean.clean_text("forma-\nción continua") == "formación continua"


def test_characters_said_never_to_be_mojibake_are_never_flagged_by_ftfy_next_to_ascii():
    """clean skips ftfy's mojibake test on lines of these characters and ASCII: every string of up
    to three of them must pass the test (ftfy's longer patterns all need a character outside them)."""
    from ftfy.badness import is_bad

    alphabet = [chr(i) for i in range(128)] + list(clean.NEVER_MOJIBAKE)
    flagged = [a + b + c for a in alphabet for b in alphabet for c in ["", *alphabet] if is_bad(a + b + c)]
    assert flagged == []
    assert is_bad("Ã±") and clean.clean_text("año\naÃ±o\nniño") == "año\naño\nniño"  # a line between clean ones


def test_clean_spaces_tabs_and_hard_spaces_inside_lines_only():
    assert clean.clean_text("a \t\u00a0 b\u00a0c  d\te \n  f  \n\n\n\ng") == "a b c d e\nf\n\ng"


def test_repeated_headers_footers_and_page_numbers_go():
    body = corpus.ES[:4]
    pages = [f"ACME Manual interno\n{sentence}\nPágina {i} de 4" for i, sentence in enumerate(body, start=1)]
    text = clean.clean_pages(pages, paged=True)
    assert "ACME" not in text and "Página" not in text
    assert all(sentence in text for sentence in body)
    assert clean.clean_pages(["Solo una página\n7"]) == "Solo una página"


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("write to ana.lopez+rrhh@acme.example today", "write to [EMAIL] today", "email"),
        ("IBAN ES91 2100 0418 4502 0005 1332.", "IBAN [IBAN].", "iban"),
        ("card 4111-1111-1111-1111 ok", "card [CARD] ok", "card"),
        ("DNI 12345678Z", "DNI [DNI]", "dni"),
        ("NIE Y-1234567-X", "NIE [NIE]", "nie"),
        ("server 10.0.0.1 and fe80::1ff:fe23:4567:890a", "server [IP] and [IP]", "ip"),
        ("llama al +34 612 345 678", "llama al [PHONE]", "phone"),
    ],
)
def test_pii_is_redacted_to_typed_placeholders(text, expected, kind):
    redacted, counts = pii.redact(text)
    assert redacted == expected and counts.get(kind)


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 fails Luhn",
    "IBAN ES00 2100 0418 4502 0005 1332 has a bad checksum",
    "DNI 12345678A has the wrong letter",
    "version 1.2.3.4.5 and 999.1.1.1 are not addresses",
    "in 2026 we sold 1500 units",
])
def test_pii_leaves_lookalikes_alone(text):
    redacted, counts = pii.redact(text, kinds=("iban", "card", "dni", "ip"))
    assert redacted == text and not counts


def test_pii_kinds_are_configurable():
    assert pii.redact("a@b.example 12345678Z", kinds=("dni",))[0] == "a@b.example [DNI]"


def test_quality_and_language():
    assert quality.problem(" ".join(corpus.ES)) is None
    assert "too short" in quality.problem("hola mundo")
    assert "symbols" in quality.problem("1234 5678 !!!! ???? " * 10 + "palabra")
    assert "repeated" in quality.problem("\n".join(["línea repetida con varias palabras aquí"] * 30))
    assert language.detect(" ".join(corpus.ES)) == "es" and language.detect(" ".join(corpus.EN)) == "en"
    assert language.detect("1234 !!") == language.UNKNOWN


def test_dedup_hashes_and_signatures():
    text = " ".join(corpus.ES * 3)
    assert normalized_hash(text) == normalized_hash(text.upper().replace(" ", "  ") + "!")
    near = text.replace("treinta", "cuarenta")
    other = " ".join(corpus.EN * 3)
    assert similarity(signature(text), signature(near)) >= NEAR_THRESHOLD
    assert similarity(signature(text), signature(other)) < 0.2
    assert len(set(band_hashes(signature(text))) & set(band_hashes(signature(near)))) > 0
    fingerprint = Fingerprint.of("s:a", "f" * 64, text)
    assert (fingerprint.sig() == signature(text)).all()
    assert Fingerprint.model_validate_json(fingerprint.model_dump_json()) == fingerprint


def test_dedup_index_knows_which_versions_claimed():
    """Only a claimed version may have a part: the normalizer asks storage about no other."""
    index = DedupLog(Settings(), broker=None)
    fingerprint = Fingerprint.of("s:a", "a" * 64, " ".join(corpus.ES))
    assert not index.claimed("s:a", "a" * 64)
    index.apply("s:a", fingerprint.model_dump_json().encode(), offset=7)
    assert index.claimed("s:a", "a" * 64)
    assert not index.claimed("s:a", "b" * 64)  # a new version of the document
    assert not index.claimed("s:b", "a" * 64)
    index.apply("s:a", None, offset=8)  # deleted: its fingerprint compacts away
    assert not index.claimed("s:a", "a" * 64)


def test_a_duplicate_is_only_of_a_document_before_it():
    text = " ".join(corpus.ES * 3)
    index = FingerprintIndex()
    first, copy = Fingerprint.of("s:first", "a" * 64, text), Fingerprint.of("s:copy", "b" * 64, text.upper())
    near = Fingerprint.of("s:near", "c" * 64, text.replace("treinta", "cuarenta"))
    index.put(3, first)
    index.put(5, copy)
    index.put(9, near)
    assert index.earlier_duplicate(copy, 5).of == "s:first" and index.earlier_duplicate(copy, 5).similarity == 1.0
    assert index.earlier_duplicate(first, 3) is None  # nothing came before it
    found = index.earlier_duplicate(near, 9)
    assert found.of == "s:first" and NEAR_THRESHOLD <= found.similarity < 1.0
    index.remove("s:first")
    assert index.earlier_duplicate(copy, 5) is None and index.earlier_duplicate(near, 9).of == "s:copy"
    index.put(12, Fingerprint.of("s:near", "d" * 64, " ".join(corpus.EN * 3)))  # a new version, another text
    assert len(index) == 2 and index.holds("s:near", "d" * 64) and not index.holds("s:near", "c" * 64)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus.ES + corpus.EN, trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<unk>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def test_chunks_pack_paragraphs_and_cut_long_ones(tokenizer):
    paragraphs = corpus.ES + corpus.EN
    text = "\n\n".join(paragraphs)
    chunks = chunk(structure.paragraphs([text]), tokenizer, max_tokens=60)
    assert all(0 < len(c.token_ids) <= 60 for c in chunks)
    assert len(chunks) < len(paragraphs)  # short paragraphs share chunks
    assert sum(len(c.token_ids) for c in chunks) == sum(
        len(tokenizer.encode(p, add_special_tokens=False).ids) for p in paragraphs)
    long = " ".join(corpus.ES * 10)
    pieces = chunk(structure.paragraphs([long]), tokenizer, max_tokens=50)
    assert len(pieces) > 1 and all(len(p.token_ids) <= 50 for p in pieces)
    assert tokenizer.decode(pieces[0].token_ids).strip() == pieces[0].text.strip()


def test_part_keys_are_deterministic_and_ordered():
    from datetime import UTC, datetime

    t1, t2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    assert part_key("s:a", t1, "f" * 64) == part_key("s:a", t1, "f" * 64)
    assert part_key("s:a", t1, "f" * 64).rsplit("/", 1)[0] == tombstone_key("s:a", t2).rsplit("/", 1)[0]
    assert part_key("s:a", t1, "f" * 64) < tombstone_key("s:a", t2)
    row = {"source_id": "s:a", "sha256": "f" * 64, "chunk_index": 0, "kind": "text", "text": "hola",
           "messages": None, "token_ids": [1, 2], "n_tokens": 2, "language": "es", "media_type": "text/plain",
           "tokenizer": "v0", "stability": "volatile", "section": "Política > Plazos", "page": 3,
               "discovered_at": t1, "normalized_at": t2}
    assert read_parquet(to_parquet([row])).to_pylist() == [row]


def test_prepare_turns_bytes_into_the_part(tokenizer):
    """The worker's whole job: clean text, chunked and tokenized, in a Parquet part with its origin."""
    when = datetime(2026, 1, 2, tzinfo=UTC)
    origin = Origin("folder:inbox/es.txt", "e" * 64, "text/plain", when)
    text = "\n\n".join(corpus.ES)
    prepared = prepare(text.encode(), origin, (), Tokenization(tokenizer, TOKENIZER, 40))
    rows = read_parquet(prepared.part).to_pylist()
    assert len(rows) == prepared.info.chunks > 1  # 40 tokens at most per chunk: several
    assert [r["chunk_index"] for r in rows] == list(range(len(rows)))
    assert sum(r["n_tokens"] for r in rows) == prepared.info.tokens
    assert all(r["token_ids"] == tokenizer.encode(r["text"], add_special_tokens=False).ids or
               len(r["token_ids"]) == 40 for r in rows)
    assert {(r["source_id"], r["sha256"], r["tokenizer"], r["language"], r["discovered_at"]) for r in rows} == {
        (origin.source_id, origin.sha256, TOKENIZER, "es", when)}
    assert prepared.info.language == "es" and prepared.info.tokenizer == TOKENIZER
    doc = normalize(text.encode(), "text/plain", "x")
    assert (prepared.exact_hash, prepared.minhash) == (normalized_hash(doc.text), doc.minhash)


async def test_workers_prepare_with_the_tokenizer_they_were_started_with(tokenizer):
    pool = WorkerPool(workers=1, timeout_s=20, memory_bytes=1024**3, tokenization=Tokenization(tokenizer, TOKENIZER, 64))
    try:
        origin = Origin("folder:inbox/en.txt", "f" * 64, "text/plain", datetime(2026, 1, 2, tzinfo=UTC))
        prepared = await pool.run(" ".join(corpus.EN).encode(), origin, ())
        rows = read_parquet(prepared.part).to_pylist()
        assert prepared.info.language == "en" and {r["tokenizer"] for r in rows} == {TOKENIZER}
        assert [t for r in rows for t in r["token_ids"]] == [
            t for c in chunk(structure.paragraphs([" ".join(corpus.EN)]), tokenizer, 64) for t in c.token_ids]
    finally:
        pool.close()


def _language_model_loaded(*_args):
    import py3langid.langid

    return py3langid.langid.IDENTIFIER is not None


async def test_workers_start_warm():
    """The parsers and the language model are loaded when the pool starts, not on the first document."""
    pool = WorkerPool(workers=1, timeout_s=20, memory_bytes=1024**3, job=_language_model_loaded)
    try:
        await pool.start()
        assert await pool.run(b"x", "text/plain", "x", ()) is True
    finally:
        pool.close()


HOSTILE = b"hostile"


def _sleeps(data, *args):
    if data == HOSTILE:
        time.sleep(60)
    return normalize(data, *args)


def _allocates(data, *args):
    if data == HOSTILE:
        return bytearray(8 * 1024**3)  # 8 GiB: over the worker's address-space limit
    return normalize(data, *args)


def _crashes(data, *args):
    if data == HOSTILE:
        import os

        os._exit(3)
    return normalize(data, *args)


@pytest.mark.parametrize(
    ("job", "reason"),
    [(_sleeps, RejectReason.TIMEOUT), (_allocates, RejectReason.BOMB), (_crashes, RejectReason.BOMB)],
)
async def test_worker_limits_cost_one_rejection(job, reason):
    pool = WorkerPool(workers=1, timeout_s=2, memory_bytes=2 * 1024**3, job=job)
    try:
        with pytest.raises(Rejection) as err:
            await pool.run(HOSTILE, "text/plain", "x", ())
        assert err.value.reason is reason
        # the same pool still works after its worker was killed
        doc = await pool.run(" ".join(corpus.EN).encode(), "text/plain", "en.txt", ())
        assert doc.language == "en"
    finally:
        pool.close()


async def test_unacknowledged_outcomes_are_published_again_in_order(monkeypatch):
    """Outcomes go out without waiting for each ack; the batch waits for all before it commits,
    and should one have failed, publishes the batch's outcomes again, in order."""
    import asyncio

    from services.contracts import DocumentNormalized
    from services.normalizer import service

    published: list[tuple[str, bool]] = []
    acks: list[asyncio.Future] = []

    async def publish(_broker, event, key, *, confirm=True):
        published.append((key, confirm))
        if confirm:
            return None
        acks.append(asyncio.get_running_loop().create_future())
        return acks[-1]

    monkeypatch.setattr(service, "publish_event", publish)
    normalizer = object.__new__(service.Normalizer)
    normalizer.broker, normalizer._unconfirmed = None, []
    events = [DocumentNormalized(source_id=f"s:{i}", sha256=None, part_key=f"k{i}", deleted=True) for i in range(3)]
    for event in events:
        await normalizer._announce(event)
    assert published == [("s:0", False), ("s:1", False), ("s:2", False)]
    confirming = asyncio.ensure_future(normalizer._confirm_announcements())
    await asyncio.sleep(0)
    assert not confirming.done()  # the batch is not committed before the broker has its outcomes
    acks[0].set_result(None)
    acks[1].set_exception(ConnectionError("broker gone"))
    acks[2].set_result(None)
    await confirming
    assert published[3:] == [("s:0", True), ("s:1", True), ("s:2", True)]
    assert normalizer._unconfirmed == []


def test_terminal_escapes_and_stray_controls_go_and_page_breaks_become_line_breaks():
    raw = "Política de \x1b[1;31mdevoluciones\x1b[0m\x07 treinta días.\x0cSegunda página\x0bsigue"
    assert clean.clean_text(raw) == "Política de devoluciones treinta días.\nSegunda página\nsigue"


@pytest.mark.parametrize(("data", "name", "says"), [
    (b"PK\x03\x04" + b"\x00" * 40, "truncated.docx", "ZIP container is damaged or truncated"),
    (None, "archive.docx", "ZIP archive without word/document.xml"),
    (bytes(range(256)) * 8, "random.docx", "no ZIP container"),
    (bytes(range(256)) * 8, "random.pdf", "no %PDF- header"),
    (bytes(range(256)) * 8, "random.txt", "binary, not text"),
])
def test_a_file_named_as_a_format_afina_reads_but_not_in_it_is_corrupt_and_says_why(data, name, says):
    import io
    import zipfile

    from services import media
    from services.normalizer.extract import extract

    if data is None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("notes.txt", "hola")
        data = buffer.getvalue()
    with pytest.raises(Rejection) as rejected:
        extract(data, media.sniff(data[: media.HEAD_BYTES], name, io.BytesIO(data)), name)
    assert rejected.value.reason == RejectReason.CORRUPT and says in rejected.value.message, rejected.value.message
    with pytest.raises(Rejection) as unnamed:  # the same bytes under no known name: unsupported
        extract(data, media.sniff(data[: media.HEAD_BYTES], "blob", io.BytesIO(data)), "blob")
    assert unnamed.value.reason == RejectReason.UNSUPPORTED


HANDBOOK_PAGE = """<!DOCTYPE html><html><head><title>Handbook</title></head><body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/a">About us</a></li></ul></nav>
<aside class="sidebar"><ul><li><a href="/x">Other handbook pages</a></li><li><a href="/y">Contact the team</a></li></ul></aside>
<div class="cookie-note">We use cookies to improve your experience of this website, see our policy.</div>
<div class="document"><div class="body" role="main"><h1>Returns policy</h1>
<p>Customers can return any product within thirty days of purchase, with the receipt or the order number.</p>
<div class="admonition note"><p class="admonition-title">Note</p><p>Products bought in the outlet can only be exchanged.</p></div>
<p>Refunds are paid to the original payment method within five working days after the product arrives.</p>
<aside class="tip"><p>Tip: keep the original box, or a returned product loses ten percent of its value.</p></aside>
<div class="sidebar"><p>The returns desk is on the second floor, next to the lifts.</p></div>
<p>Exchanges for another size are free and can be done in any shop of the company.</p>
</div></div><footer><p>Copyright 2026 Company</p></footer></body></html>"""


def test_html_keeps_the_pages_own_notes_tips_and_sidebars_but_not_navigation_or_banners():
    from services.normalizer.extract import html

    text = html.extract(HANDBOOK_PAGE.encode()).pages[0]
    for sentence in ("thirty days of purchase", "outlet can only be exchanged", "loses ten percent",
                     "second floor, next to the lifts", "five working days", "another size are free"):
        assert sentence in text, f"{sentence!r} was dropped"
    for boilerplate in ("Other handbook pages", "About us", "cookies", "Copyright"):
        assert boilerplate not in text, f"{boilerplate!r} was kept"


def two_page_pdf() -> bytes:
    from fpdf import FPDF

    made = FPDF()
    for page in range(2):
        made.add_page()
        made.set_font("helvetica", size=12)
        made.cell(text=f"Las devoluciones se aceptan durante treinta dias, pagina {page}.")
    return bytes(made.output())


def test_a_pdf_whose_xref_and_trailer_are_damaged_is_read_from_its_intact_objects():
    from services.normalizer.extract import pdf

    data = two_page_pdf()
    objects_end, trailer = data.find(b"\nxref"), data.find(b"trailer")
    damaged = {
        "no table nor trailer": data[:objects_end],
        "a trailer without its keyword": data[:trailer] + data[data.find(b"startxref"):],
        "a trailer naming a missing root": data[:trailer] + b"trailer\n<< /Size 99 /Root 99 0 R >>\nstartxref\n"
                                           + str(objects_end + 1).encode() + b"\n%%EOF\n",
        "garbage for a table": data[:objects_end] + b"\nxref\n" + b"\x00\xff" * 200 + b"\n%%EOF",
    }
    for what, broken in damaged.items():
        pages = pdf.extract(broken).pages
        assert [p.strip() for p in pages] == [f"Las devoluciones se aceptan durante treinta dias, pagina {n}."
                                              for n in (0, 1)], what
    with pytest.raises(Rejection) as cut:  # cut inside an object: not read in part
        pdf.extract(data[: objects_end - 30])
    assert cut.value.reason == RejectReason.CORRUPT and "cut short" in cut.value.message


def test_a_markdown_table_is_judged_by_its_cells_not_its_pipes():
    from services.normalizer.extract import tables

    rows = [["Producto", "Precio", "Notas"]] + [[f"Artículo {n}", f"{n}9 EUR", f"Se envía en {n} días laborables "
                                                 "a toda la península."] for n in range(1, 8)]
    assert quality.problem(tables.markdown_table(rows)) is None
    assert quality.problem(tables.markdown_table([["1", "2", "3"]] * 30)) is not None  # digits, not prose
