"""A document version's bytes to its dataset part: the pure part of the normalizer, run in a
worker process that can be killed.

``normalize`` turns bytes into clean text (or clean supervised examples) with its dedup
fingerprint; ``prepare`` goes on to chunks, tokens and the Parquet part, so the service
only moves bytes between Kafka, MinIO and the workers.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tokenizers import Tokenizer

from services import media
from services.contracts import RejectReason, Stability, TokenizerId
from services.datasets import parts, structure
from services.normalizer import clean, language, pii, quality
from services.normalizer.extract import Rejection, extract
from services.normalizer.fingerprint import fingerprint_fields
from services.normalizer.stability import from_front_matter
from services.normalizer.tokenize import chunk, count_tokens

MAX_TEXT_CHARS = 20_000_000


@dataclass
class NormalizedDoc:
    kind: str  # "text" or "chat"
    text: str  # the clean text; for chat, the conversations rendered, for dedup and language
    language: str
    pages: list[str] = field(default_factory=list)  # the clean text by page ('' for a page left empty)
    paged: bool = False  # the pages are numbered pages, recorded per chunk
    examples: list[list[dict[str, str]]] = field(default_factory=list)
    stability: Stability | None = None  # what the document says of itself (front matter), if anything
    pii: dict[str, int] = field(default_factory=dict)
    exact_hash: str = ""  # dedup fingerprint of ``text``
    minhash: str = ""
    attachments: list[tuple[str, bytes]] = field(default_factory=list)  # documents of their own (an email's)


def normalize(data: bytes, media_type: str, name: str, pii_kinds: tuple[str, ...] = pii.KINDS) -> NormalizedDoc:
    doc = _normalize(data, media_type, name, pii_kinds)
    doc.exact_hash, doc.minhash = fingerprint_fields(doc.text)
    return doc


def _normalize(data: bytes, media_type: str, name: str, pii_kinds: tuple[str, ...]) -> NormalizedDoc:
    extracted = extract(data, media_type, name)
    if extracted.examples:
        return _normalize_examples(extracted.examples, pii_kinds)
    said = from_front_matter(extracted.front_matter)
    pages = clean.clean_each_page(extracted.pages, extracted.paged)
    size = sum(len(page) for page in pages)
    if size > MAX_TEXT_CHARS:
        raise Rejection(RejectReason.TOO_LARGE, f"the text has {size} characters, over {MAX_TEXT_CHARS}")
    if not any(pages):
        raise Rejection(RejectReason.NO_TEXT, "no text is left after cleaning")
    pages, found = _redacted(pages, pii_kinds)
    text = clean.join(pages)
    why = quality.problem(text)
    if why is not None and not extracted.attachments:  # an email's few lines hold its attachments: kept
        raise Rejection(RejectReason.LOW_QUALITY, why)
    return NormalizedDoc("text", text, language.detect(text), pages=pages, paged=extracted.paged, pii=found,
                         stability=said, attachments=extracted.attachments)


def render_conversation(messages: list[dict[str, str]]) -> str:
    """A conversation as the text that is tokenized, detected and deduplicated: "role: content" lines."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _redacted(texts: list[str], pii_kinds: tuple[str, ...]) -> tuple[list[str], dict[str, int]]:
    """Each text with its PII redacted, and how many of each kind were found in all of them."""
    found: dict[str, int] = {}
    redacted = []
    for text in texts:
        text, counts = pii.redact(text, pii_kinds)
        redacted.append(text)
        for kind, n in counts.items():
            found[kind] = found.get(kind, 0) + n
    return redacted, found


def _normalize_examples(examples: list[list[dict[str, str]]], pii_kinds: tuple[str, ...]) -> NormalizedDoc:
    contents, found = _redacted([clean.clean_text(m["content"]) for c in examples for m in c], pii_kinds)
    redacted = iter(contents)
    cleaned = [[{"role": m["role"], "content": next(redacted)} for m in c] for c in examples]
    rendered = "\n\n".join(render_conversation(c) for c in cleaned)
    return NormalizedDoc("chat", rendered, language.detect(rendered), examples=cleaned, pii=found)


@dataclass(frozen=True)
class Origin:
    """What a part records about a document version besides its text (from the connector's event)."""

    source_id: str
    sha256: str
    media_type: str | None
    discovered_at: datetime
    stability: Stability = Stability.MASTER  # from the path rules; the document's front matter overrides it


@dataclass(frozen=True)
class Tokenization:
    tokenizer: Tokenizer
    name: TokenizerId  # recorded in every row: changes when the tokenizer does
    max_chunk_tokens: int


@dataclass(frozen=True)
class Prepared:
    """A document version ready to store: its Parquet part and what dedup and the event need."""

    exact_hash: str
    minhash: str
    info: parts.PartInfo
    part: bytes
    attachments: list[tuple[parts.Attachment, bytes]] = field(default_factory=list)  # with their raw bytes


def prepare(data: bytes, origin: Origin, pii_kinds: tuple[str, ...], tokenization: Tokenization) -> Prepared:
    doc = normalize(data, origin.media_type or "", origin.source_id, pii_kinds)
    rows = part_rows(doc, origin, tokenization)
    held = [(parts.Attachment.of(origin.source_id, name, raw,
                                 media.sniff(raw[: media.HEAD_BYTES], name, io.BytesIO(raw))), raw)
            for name, raw in doc.attachments]
    info = parts.PartInfo(len(rows), sum(r["n_tokens"] for r in rows), doc.language, tokenization.name,
                          rows[0]["stability"] if rows else origin.stability, len(held))
    return Prepared(doc.exact_hash, doc.minhash, info, parts.to_parquet(rows, [a for a, _ in held]), held)


def part_rows(doc: NormalizedDoc, origin: Origin, tokenization: Tokenization) -> list[dict]:
    common = {"source_id": origin.source_id, "sha256": origin.sha256, "language": doc.language,
              "media_type": origin.media_type, "tokenizer": tokenization.name,
              "stability": doc.stability or origin.stability,
              "discovered_at": origin.discovered_at, "normalized_at": datetime.now(UTC)}
    if doc.kind == "chat":
        rendered = [render_conversation(ex) for ex in doc.examples]
        ids = count_tokens(rendered, tokenization.tokenizer)
        return [{**common, "chunk_index": i, "kind": "chat", "text": text,
                 "messages": json.dumps(ex, ensure_ascii=False), "token_ids": tokens, "n_tokens": len(tokens)}
                for i, (ex, text, tokens) in enumerate(zip(doc.examples, rendered, ids, strict=True))]
    chunks = chunk(structure.paragraphs(doc.pages, doc.paged), tokenization.tokenizer, tokenization.max_chunk_tokens)
    return [{**common, "chunk_index": i, "kind": "text", "text": c.text, "messages": None,
             "token_ids": c.token_ids, "n_tokens": len(c.token_ids), "section": c.section or None, "page": c.page}
            for i, c in enumerate(chunks)]
