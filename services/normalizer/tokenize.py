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
        paragraph_ids = encoding.ids  # each read of .ids or .offsets copies the whole list: once
        if len(paragraph_ids) > max_tokens:
            if texts:
                chunks.append(Chunk("\n\n".join(texts), ids))
                texts, ids = [], []
            chunks.extend(_split_long(paragraph, paragraph_ids, encoding.offsets, max_tokens))
            continue
        if ids and len(ids) + len(paragraph_ids) > max_tokens:
            chunks.append(Chunk("\n\n".join(texts), ids))
            texts, ids = [], []
        texts.append(paragraph)
        ids.extend(paragraph_ids)
    if texts:
        chunks.append(Chunk("\n\n".join(texts), ids))
    return chunks


def _split_long(paragraph: str, ids: list[int], offsets: list[tuple[int, int]], max_tokens: int) -> list[Chunk]:
    pieces = []
    for start in range(0, len(ids), max_tokens):
        window = slice(start, start + max_tokens)
        span = offsets[window]
        pieces.append(Chunk(paragraph[span[0][0] : span[-1][1]], ids[window]))
    return pieces


def count_tokens(texts: list[str], tokenizer: Tokenizer) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
