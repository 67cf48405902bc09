"""Training examples packed into full sequences: documents as one stream cut into blocks, chat
examples (loss on the assistant's tokens only) side by side in blocks of their own. Labels use
-100 for tokens that carry no loss (the PyTorch default ignore index of cross-entropy).

Packing never lets one document see another: each block carries position ids that restart at 0
where a document (or an example) starts, and transformers turns restarting positions (with no 2D
attention mask and no cache) into a block-diagonal causal mask, for eager, SDPA and flash
attention alike. The first token of a document is not learned from the end of the one before.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

IGNORE = -100


@dataclass(frozen=True)
class Block:
    ids: list[int]
    labels: list[int]
    positions: list[int]  # 0 where a document starts: attention stays inside each document


def pack(documents: Iterable[list[int]], length: int, eos_id: int) -> list[Block]:
    """Concatenate documents (each ended by eos) and cut the stream into blocks of ``length``.

    No padding inside the stream: every position of a block is a real token. The last, partial
    block is padded with eos, and its padding carries no loss.
    """
    stream: list[tuple[int, int]] = []  # (token, position in its document)
    for ids in documents:
        stream.extend((token, i) for i, token in enumerate([*ids, eos_id]))
    blocks = []
    for start in range(0, len(stream), length):
        piece = stream[start : start + length]
        positions = [p for _, p in piece]
        positions[0] = 0  # a document cut at the block's start goes on as a sequence of its own
        positions = _restarted(positions)
        ids = [t for t, _ in piece]
        labels = [IGNORE if p == 0 else t for t, p in zip(ids, positions)]
        padding = length - len(piece)
        blocks.append(Block(ids + [eos_id] * padding, labels + [IGNORE] * padding,
                            positions + list(range(padding))))
    return blocks


def pack_examples(examples: Iterable[tuple[list[int], list[int]]], length: int,
                  pad_id: int) -> tuple[list[Block], int]:
    """Chat examples side by side in blocks of ``length``, and how many were longer than a block
    and cut to it (the caller reports them).

    Best-fit decreasing: the longest example first, each into the fullest block it still fits.
    Packed in order, a block closed when the next example did not fit, and the samples' question
    and recitation blocks were about 78% tokens and 22% padding; a padded position costs a whole
    token of compute and teaches nothing."""
    fitted, cut = [], 0
    for ids, labels in examples:
        if len(ids) > length:
            cut += 1
            ids, labels = ids[:length], labels[:length]
        fitted.append((ids, labels))
    members: list[list[tuple[list[int], list[int]]]] = []
    room: list[tuple[int, int]] = []  # (free positions, block index), sorted
    for example in sorted(fitted, key=lambda example: len(example[0]), reverse=True):  # stable: ties keep order
        at = bisect.bisect_left(room, (len(example[0]), -1))
        if at == len(room):
            free, index = length, len(members)
            members.append([])
        else:
            free, index = room.pop(at)
        members[index].append(example)
        bisect.insort(room, (free - len(example[0]), index))
    return [_example_block(block, length, pad_id) for block in members], cut


def _example_block(examples: list[tuple[list[int], list[int]]], length: int, pad_id: int) -> Block:
    """Examples one after another, each from position 0 and its first token not learned, then padding."""
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example_ids, example_labels in examples:
        ids += example_ids
        labels += [IGNORE, *example_labels[1:]]
        positions += list(range(len(example_ids)))
    padding = length - len(ids)
    return Block(ids + [pad_id] * padding, labels + [IGNORE] * padding, positions + list(range(padding)))


def _restarted(positions: list[int]) -> list[int]:
    """Positions counted from each document's first token in the block."""
    out, start = [], 0
    for i, position in enumerate(positions):
        if position == 0:
            start = i
        out.append(i - start)
    return out


def chat_example(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids of a conversation rendered with the tokenizer's chat template, and labels that
    are -100 everywhere except the assistant's answers (content and end of turn)."""
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for i, message in enumerate(messages):
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if message["role"] == "assistant":
            # the turn's header ("<|assistant|>\n") is given, not learned
            header_end = len(tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True))
            segments = [(upto[len(rendered):header_end], False), (upto[header_end:], True)]
        else:
            segments = [(upto[len(rendered):], False)]
        for text, learned in segments:
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids.extend(piece)
            labels.extend(piece if learned else [IGNORE] * len(piece))
        rendered = upto
    return ids, labels
