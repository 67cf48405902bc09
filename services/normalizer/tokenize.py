"""Chunking and tokenization with the base model's fast tokenizer, in batches.

Paragraphs are packed whole into chunks of at most ``max_tokens``; a paragraph longer than
that is cut at token boundaries. Tokens are counted once per paragraph, in one batch call.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer


@dataclass(frozen=True)
class Chunk:
    text: str
    token_ids: list[int]


def chunk(text: str, tokenizer: Tokenizer, max_tokens: int) -> list[Chunk]:
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    encodings = tokenizer.encode_batch(paragraphs, add_special_tokens=False)
    chunks: list[Chunk] = []
    texts: list[str] = []
    ids: list[int] = []
    for paragraph, encoding in zip(paragraphs, encodings, strict=True):
        if len(encoding.ids) > max_tokens:
            if texts:
                chunks.append(Chunk("\n\n".join(texts), ids))
                texts, ids = [], []
            chunks.extend(_split_long(paragraph, encoding, max_tokens))
            continue
        if ids and len(ids) + len(encoding.ids) > max_tokens:
            chunks.append(Chunk("\n\n".join(texts), ids))
            texts, ids = [], []
        texts.append(paragraph)
        ids = ids + encoding.ids
    if texts:
        chunks.append(Chunk("\n\n".join(texts), ids))
    return chunks


def _split_long(paragraph: str, encoding, max_tokens: int) -> list[Chunk]:
    pieces = []
    for start in range(0, len(encoding.ids), max_tokens):
        window = slice(start, start + max_tokens)
        offsets = encoding.offsets[window]
        pieces.append(Chunk(paragraph[offsets[0][0] : offsets[-1][1]], encoding.ids[window]))
    return pieces


def count_tokens(texts: list[str], tokenizer: Tokenizer) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
