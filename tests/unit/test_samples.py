"""The sample documents in samples/ (the demo's inbox and the end-to-end test's second round)
pass the normalizer's pure pipeline as they are: no rejection, the language their name says,
no near duplicates of each other, PII only where it was planted, every format covered, and
the Q&A files parse and state facts found in the documents they name."""

from __future__ import annotations

import io
import itertools
import json
import re
import sys
from importlib import resources
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from services import media
from services.datasets import structure
from services.normalizer.fingerprint import NEAR_THRESHOLD, signature, similarity
from services.normalizer.pipeline import NormalizedDoc, normalize
from services.normalizer.tokenize import chunk, count_tokens
from services.settings import Settings
from services.tuning.evaluate import contains_answer, read_qa

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
FOLDERS = ("inbox", "more")
NAME = re.compile(r"^[a-z0-9_]+_(es|en)\.(pdf|docx|html|md|txt|jsonl)$")
# planted on purpose, to show redaction; any other PII found is a fact the model would lose
PLANTED_PII = {
    "inbox/manual_empleado_es.pdf": {"email": 1, "phone": 1},
    "inbox/chats_atencion_cliente_es.jsonl": {"email": 1},
}
EVERY_FORMAT = {media.PDF, media.DOCX, media.HTML, media.MARKDOWN, media.TEXT, media.JSONL}


def _files(folder: str) -> list[Path]:
    return sorted(p for p in (SAMPLES / folder).rglob("*") if p.is_file())


FILES = [p for folder in FOLDERS for p in _files(folder)]
IDS = [f"{p.parent.name}/{p.name}" for p in FILES]


def _media_type(path: Path) -> str:
    data = path.read_bytes()
    return media.sniff(data[: media.HEAD_BYTES], path.name, io.BytesIO(data))


@pytest.fixture(scope="module")
def normalized() -> dict[str, NormalizedDoc]:
    """Every sample through the pipeline once (a Rejection fails the test that asks)."""
    out = {}
    for path, name in zip(FILES, IDS, strict=True):
        out[name] = normalize(path.read_bytes(), _media_type(path), path.name)
    return out


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """A byte-level BPE like afina-tiny's (services/tuning/tiny.py), without importing torch."""
    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = resources.files("services.tuning").joinpath("sample_text.txt").read_text(encoding="utf-8")
    tok.train_from_iterator(text.splitlines(), trainers.BpeTrainer(
        vocab_size=2048, special_tokens=["<|unk|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def test_the_samples_are_there_and_named_by_language():
    inbox, more = _files("inbox"), _files("more")
    assert 16 <= len(inbox) <= 24 and 3 <= len(more) <= 5
    bad = [name for name in IDS if not NAME.match(name.split("/")[1])]
    assert not bad, f"sample names must end in _es or _en and a supported extension: {bad}"
    languages = [NAME.match(p.name).group(1) for p in inbox]
    assert abs(languages.count("es") - languages.count("en")) <= 4


def test_every_format_is_covered():
    assert {_media_type(p) for p in _files("inbox")} == EVERY_FORMAT
    assert len({_media_type(p) for p in _files("more")}) >= 3


@pytest.mark.parametrize("name", IDS)
def test_each_sample_is_accepted_in_its_language(name, normalized, tokenizer):
    doc = normalized[name]
    assert doc.language == NAME.match(name.split("/")[1]).group(1)
    assert doc.kind == ("chat" if name.endswith(".jsonl") else "text")
    assert 200 <= len(doc.text.split()) <= 2000, "a few hundred to ~1500 words each"
    assert doc.pii == PLANTED_PII.get(name, {}), "PII other than the planted examples"
    if doc.kind == "chat":
        assert doc.examples and all(ex[-1]["role"] == "assistant" for ex in doc.examples)
        assert all(count_tokens(["\n".join(m["content"] for m in ex) for ex in doc.examples], tokenizer))
    else:
        chunks = chunk(structure.paragraphs(doc.pages, doc.paged), tokenizer, Settings().normalizer.max_chunk_tokens)
        assert chunks and all(c.token_ids for c in chunks)


def test_html_boilerplate_is_left_out(normalized):
    for name, doc in normalized.items():
        if name.endswith(".html"):
            assert not re.search(r"cookie|Basket|Cesta|Sign up|Suscribirme|Mi cuenta|My account", doc.text), name


def test_pdf_page_headers_and_footers_are_dropped(normalized):
    for name, doc in normalized.items():
        if name.endswith(".pdf"):
            assert not re.search(r"(Página|Page) \d+ (de|of) \d+", doc.text), name


def test_no_two_samples_are_duplicates(normalized):
    exact = [doc.exact_hash for doc in normalized.values()]
    assert len(set(exact)) == len(exact)
    signatures = {name: signature(doc.text) for name, doc in normalized.items()}
    worst = max(itertools.combinations(signatures, 2), key=lambda pair: similarity(*(signatures[n] for n in pair)))
    score = similarity(signatures[worst[0]], signatures[worst[1]])
    assert score < NEAR_THRESHOLD / 2, f"{worst} are {score:.0%} alike (the normalizer drops from {NEAR_THRESHOLD:.0%})"


@pytest.mark.parametrize("qa_file", ["qa.jsonl", "qa_more.jsonl", "qa_news.jsonl"])
def test_qa_lines_parse_and_their_answers_are_in_the_documents(qa_file, normalized):
    items = read_qa(SAMPLES / qa_file)
    sources = [json.loads(line)["source"] for line in (SAMPLES / qa_file).read_text(encoding="utf-8").splitlines()
               if line.strip()]
    assert len(items) >= (10 if qa_file == "qa.jsonl" else 3)
    for item, source in zip(items, sources, strict=True):
        assert item.prompt.strip() and 0 < len(item.expected.split()) <= 6 and item.language in ("es", "en")
        assert contains_answer(normalized[source].text, [item.expected]), (item, source)
        if qa_file == "qa.jsonl":
            assert source.startswith("inbox/"), "first-round answers come from the inbox"
        if qa_file == "qa_news.jsonl":
            assert source.startswith("news/"), "these answers come from volatile documents (retrieval only)"
    training = " ".join(doc.text for doc in normalized.values())
    assert not [i.prompt for i in items if contains_answer(training, [i.prompt])], \
        "Q&A prompts must not be copied from training data"


def test_generated_files_match_their_sources(normalized, monkeypatch):
    """PDF/DOCX in the repo were made from samples/src as it is now (text compared, not bytes:
    other library or font versions may lay out the same text differently)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    make = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, make)  # dataclasses look their module up
    spec.loader.exec_module(make)
    if make._font_path("DejaVuSans.ttf") is None:
        pytest.skip("DejaVu Sans is not installed: the PDFs would be made with another font")
    for source in make.sources():
        name = str(source.output.relative_to(SAMPLES))
        fresh = normalize(make.render(source), _media_type(source.output), source.output.name)
        assert fresh.text == normalized[name].text, f"{name} is stale: run samples/make_samples.py"
