"""Chunking and tokenization with the base model's fast tokenizer, in batches.

Paragraphs are packed whole into chunks of at most ``max_tokens``; a paragraph longer than
that is cut at token boundaries. Tokens are counted once per paragraph, in one batch call.
A chunk carries the section and page of its first paragraph, so a passage can be cited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from services.datasets.structure import Paragraph


@dataclass(frozen=True)
class Chunk:
    text: str
    token_ids: list[int]
    section: str = ""
    page: int | None = None


def chunk(paragraphs: Sequence[Paragraph], tokenizer: Tokenizer, max_tokens: int) -> list[Chunk]:
    encodings = tokenizer.encode_batch([p.text for p in paragraphs], add_special_tokens=False)
    chunks: list[Chunk] = []
    current: list[tuple[Paragraph, list[int]]] = []
    held = 0  # tokens in ``current``

    def close(carry_headings: bool) -> None:
        nonlocal held
        # headings at a chunk's end belong with the text below them, in the next chunk
        carried = []
        while carry_headings and len(current) > 1 and current[-1][0].heading_only:
            carried.insert(0, current.pop())
        if current:
            cited = next((p for p, _ in current if not p.heading_only), current[0][0])
            chunks.append(Chunk("\n\n".join(p.text for p, _ in current), [t for _, ids in current for t in ids],
                                cited.section, cited.page))
        current[:] = carried
        held = sum(len(ids) for _, ids in carried)

    for paragraph, encoding in zip(paragraphs, encodings, strict=True):
        ids = encoding.ids  # each read of .ids or .offsets copies the whole list: once
        if len(ids) > max_tokens:
            close(carry_headings=False)
            chunks.extend(_split_long(paragraph, ids, encoding.offsets, max_tokens))
            continue
        if current and held + len(ids) > max_tokens:
            close(carry_headings=True)
            if current and held + len(ids) > max_tokens:
                close(carry_headings=False)
        current.append((paragraph, ids))
        held += len(ids)
    close(carry_headings=False)
    return chunks


def _split_long(paragraph: Paragraph, ids: list[int], offsets: list[tuple[int, int]], max_tokens: int) -> list[Chunk]:
    pieces = []
    for start in range(0, len(ids), max_tokens):
        window = slice(start, start + max_tokens)
        span = offsets[window]
        pieces.append(Chunk(paragraph.text[span[0][0] : span[-1][1]], ids[window], paragraph.section, paragraph.page))
    return pieces


def count_tokens(texts: list[str], tokenizer: Tokenizer) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
