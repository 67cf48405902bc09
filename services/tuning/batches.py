"""Training examples: documents packed into full sequences, chat examples with loss on the
assistant's tokens only. Labels use -100 for tokens that carry no loss (the PyTorch default
ignore index of cross-entropy)."""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerBase

IGNORE = -100


def pack(documents: Iterable[list[int]], length: int, eos_id: int) -> list[tuple[list[int], list[int]]]:
    """Concatenate documents (each ended by eos) and cut the stream into blocks of ``length``.

    No padding inside the stream: every position of a block is a real token that carries
    loss. The last, partial block is padded with eos and its padding carries none.
    """
    stream: list[int] = []
    for ids in documents:
        stream.extend(ids)
        stream.append(eos_id)
    blocks = []
    for start in range(0, len(stream), length):
        block = stream[start : start + length]
        labels = list(block) + [IGNORE] * (length - len(block))
        blocks.append((block + [eos_id] * (length - len(block)), labels))
    return blocks


def chat_example(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]],
                 max_length: int) -> tuple[list[int], list[int]]:
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
    return ids[:max_length], labels[:max_length]
