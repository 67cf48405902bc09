"""Training examples packed into full sequences: documents as one stream cut into blocks, chat
examples (loss on the assistant's tokens only) side by side in blocks of their own. Labels use
-100 for tokens that carry no loss (the PyTorch default ignore index of cross-entropy).

Packing never lets one document see another: each block carries position ids that restart at 0
where a document (or an example) starts, and transformers turns restarting positions (with no 2D
attention mask and no cache) into a block-diagonal causal mask, for eager, SDPA and flash
attention alike. The first token of a document is not learned from the end of the one before.

Chat examples that start alike (a chat template's default system prompt and user header, 24 of SmolLM2's tokens,
a fifth of the samples' question blocks) share that start: a block holds it once, every example
after it attends to it and to itself (``attention_mask``), and its positions go on from it as they
would alone, so each example gets exactly the logits it gets alone.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

IGNORE = -100


@dataclass(frozen=True)
class Block:
    ids: list[int]
    labels: list[int]
    positions: list[int]  # 0 where a document starts: attention stays inside each document
    shared: int = 0  # the examples' common start: the block's first tokens, seen by every example after them


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
                  pad_id: int, start: Sequence[int] = ()) -> tuple[list[Block], int]:
    """Chat examples side by side in blocks of ``length``, and how many were longer than a block
    and cut to it (the caller reports them). Examples that begin with ``start`` (``chat_start``)
    hold it once per block: the blocks that share it come after those of the other examples.

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
    start = list(start)
    begins = [bool(start) and ids[: len(start)] == start and len(ids) > len(start) for ids, _ in fitted]
    alone = [example for example, shares in zip(fitted, begins) if not shares]
    rest = [(ids[len(start):], labels[len(start):]) for (ids, labels), shares in zip(fitted, begins) if shares]
    return ([_example_block(block, length, pad_id) for block in _best_fit(alone, length)]
            + [_example_block(block, length, pad_id, start) for block in _best_fit(rest, length - len(start))]), cut


def _best_fit(examples: list[tuple[list[int], list[int]]], room: int) -> list[list[tuple[list[int], list[int]]]]:
    """The examples in groups of at most ``room`` tokens, best-fit decreasing."""
    members: list[list[tuple[list[int], list[int]]]] = []
    free: list[tuple[int, int]] = []  # (free positions, group index), sorted
    for example in sorted(examples, key=lambda example: len(example[0]), reverse=True):  # stable: ties keep order
        at = bisect.bisect_left(free, (len(example[0]), -1))
        if at == len(free):
            left, index = room, len(members)
            members.append([])
        else:
            left, index = free.pop(at)
        members[index].append(example)
        bisect.insort(free, (left - len(example[0]), index))
    return members


def _example_block(examples: list[tuple[list[int], list[int]]], length: int, pad_id: int,
                   start: list[int] | None = None) -> Block:
    """Examples one after another, then padding. Without a shared ``start``, each from position 0
    and its first token not learned; after one, each from the position that follows it, as alone."""
    start = start or []
    ids, labels, positions = list(start), [IGNORE] * len(start), list(range(len(start)))
    for example_ids, example_labels in examples:
        ids += example_ids
        labels += example_labels if start else [IGNORE, *example_labels[1:]]
        positions += list(range(len(start), len(start) + len(example_ids)))
    padding = length - len(ids)
    return Block(ids + [pad_id] * padding, labels + [IGNORE] * padding,
                 positions + list(range(len(start), len(start) + padding)), shared=len(start))


def attention_mask(blocks: list[Block]) -> torch.Tensor:
    """Which token each token sees, (batch, 1, length, length), True where it attends: those before
    it in its own document or example, and the block's shared start."""
    rows = []
    for block in blocks:
        positions, index = torch.tensor(block.positions), torch.arange(len(block.positions))
        begins = (index == 0) | ((index >= block.shared) & (positions == block.shared))
        segment = torch.cumsum(begins, 0)
        seen = (segment[:, None] == segment[None, :]) | (index[None, :] < block.shared)
        rows.append(seen & (index[None, :] <= index[:, None]))
    return torch.stack(rows)[:, None]


def additive(model) -> torch.dtype | None:
    """The dtype of an attention mask added to the scores, for a model with eager attention; None
    for SDPA, which takes a boolean mask."""
    return model.dtype if model.config._attn_implementation == "eager" else None


def model_inputs(blocks: list[Block], device: str, mask_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """A micro-batch's input ids and position ids, and the attention mask where a block shares a
    start (positions alone cannot say it): boolean, or added to the scores in ``mask_dtype``
    (``additive(model)``)."""
    inputs = {"input_ids": torch.tensor([block.ids for block in blocks], device=device),
              "position_ids": torch.tensor([block.positions for block in blocks], device=device)}
    if any(block.shared for block in blocks):
        mask = attention_mask(blocks).to(device)
        if mask_dtype is not None:
            mask = torch.zeros(mask.shape, dtype=mask_dtype, device=device).masked_fill(~mask, torch.finfo(mask_dtype).min)
        inputs["attention_mask"] = mask
    return inputs


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


def chat_start(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokens every conversation the chat template renders begins with when it has no system
    message of its own: the default system prompt and the user turn's header, for SmolLM2."""
    first, second = (chat_example(tokenizer, [{"role": "user", "content": text}])[0] for text in ("a", "b"))
    same = 0
    while same < min(len(first), len(second)) and first[same] == second[same]:
        same += 1
    return first[:same]
