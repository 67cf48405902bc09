"""A document's bytes to clean text (or clean supervised examples): the pure part of the
normalizer, run in a worker process that can be killed."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.contracts import RejectReason
from services.normalizer import clean, language, pii, quality
from services.normalizer.dedup import fingerprint_fields
from services.normalizer.extract import Rejection, extract

MAX_TEXT_CHARS = 20_000_000


@dataclass
class NormalizedDoc:
    kind: str  # "text" or "chat"
    text: str  # the clean text; for chat, the conversations rendered, for dedup and language
    language: str
    examples: list[list[dict[str, str]]] = field(default_factory=list)
    pii: dict[str, int] = field(default_factory=dict)
    exact_hash: str = ""  # dedup fingerprint of ``text``
    minhash: str = ""


def normalize(data: bytes, media_type: str, name: str, pii_kinds: tuple[str, ...] = pii.KINDS) -> NormalizedDoc:
    doc = _normalize(data, media_type, name, pii_kinds)
    doc.exact_hash, doc.minhash = fingerprint_fields(doc.text)
    return doc


def _normalize(data: bytes, media_type: str, name: str, pii_kinds: tuple[str, ...]) -> NormalizedDoc:
    extracted = extract(data, media_type, name)
    if extracted.examples:
        return _normalize_examples(extracted.examples, pii_kinds)
    text = clean.clean_pages(extracted.pages)
    if len(text) > MAX_TEXT_CHARS:
        raise Rejection(RejectReason.TOO_LARGE, f"the text has {len(text)} characters, over {MAX_TEXT_CHARS}")
    if not text:
        raise Rejection(RejectReason.NO_TEXT, "no text is left after cleaning")
    text, found = pii.redact(text, pii_kinds)
    why = quality.problem(text)
    if why is not None:
        raise Rejection(RejectReason.LOW_QUALITY, why)
    return NormalizedDoc("text", text, language.detect(text), pii=found)


def _normalize_examples(examples: list[list[dict[str, str]]], pii_kinds: tuple[str, ...]) -> NormalizedDoc:
    found: dict[str, int] = {}
    cleaned = []
    for conversation in examples:
        messages = []
        for message in conversation:
            content, counts = pii.redact(clean.clean_text(message["content"]), pii_kinds)
            for kind, n in counts.items():
                found[kind] = found.get(kind, 0) + n
            messages.append({"role": message["role"], "content": content})
        cleaned.append(messages)
    rendered = "\n\n".join("\n".join(f"{m['role']}: {m['content']}" for m in c) for c in cleaned)
    return NormalizedDoc("chat", rendered, language.detect(rendered), examples=cleaned, pii=found)
