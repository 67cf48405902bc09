"""Packing and chat masking: which tokens carry loss, exactly, and that packed documents never see
each other."""

from __future__ import annotations

import pytest
import torch

from services.tuning import tiny
from services.tuning.batches import IGNORE, chat_example, pack, pack_examples


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.build_tokenizer(tiny.sample_text(), tiny.TinyRecipe())


def test_pack_fills_blocks_without_padding_inside():
    blocks = pack([[1, 2, 3], [4, 5], [6, 7, 8, 9]], length=4, eos_id=0)
    assert [b.ids for b in blocks] == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]
    assert [b.positions for b in blocks] == [[0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 2, 3]]
    # every position learns, but a document's first token is not predicted from the one before it
    assert [b.labels for b in blocks] == [[IGNORE, 2, 3, 0], [IGNORE, 5, 0, IGNORE], [IGNORE, 8, 9, 0]]
    (block,) = pack([[1, 2]], length=5, eos_id=0)
    assert block.ids == [1, 2, 0, 0, 0] and block.labels == [IGNORE, 2, 0, IGNORE, IGNORE]


def test_chat_examples_are_packed_side_by_side_and_a_long_one_is_reported():
    examples = [([1, 2, 3], [IGNORE, IGNORE, 3]), ([4, 5], [IGNORE, 5]), ([6, 7, 8, 9, 10, 11], [IGNORE] * 5 + [11])]
    blocks, cut = pack_examples(examples, length=5, pad_id=0)
    assert [b.ids for b in blocks] == [[6, 7, 8, 9, 10], [1, 2, 3, 4, 5]]
    assert [b.positions for b in blocks] == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 1]]
    assert blocks[1].labels == [IGNORE, IGNORE, 3, IGNORE, 5] and cut == 1


def test_chat_examples_fill_the_fullest_block_they_fit_not_only_the_last():
    """In order, 3, 4, 2, 1 tokens in blocks of 5 took three blocks ([3], [4], [2, 1]); the longest
    first, each in the fullest block with room, they take two, and every example is there once."""
    examples = [([i] * n, [IGNORE] + [i] * (n - 1)) for i, n in ((1, 3), (2, 4), (3, 2), (4, 1))]
    blocks, cut = pack_examples(examples, length=5, pad_id=0)
    assert [b.ids for b in blocks] == [[2, 2, 2, 2, 4], [1, 1, 1, 3, 3]]
    assert [b.positions for b in blocks] == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    assert blocks[1].labels == [IGNORE, 1, 1, IGNORE, 3] and cut == 0


def test_a_packed_document_gets_the_logits_it_gets_alone(tokenizer):
    torch.manual_seed(0)
    model = tiny.build_model(tokenizer, tiny.TinyRecipe(layers=2)).eval()
    first, second = tokenizer("Las vacaciones son de veintitrés días.")["input_ids"], tokenizer(
        "El horario es de nueve a seis, de lunes a viernes.")["input_ids"]
    (block,) = pack([first, second], length=len(first) + len(second) + 4, eos_id=tokenizer.eos_token_id)
    with torch.no_grad():
        packed = model(input_ids=torch.tensor([block.ids]), position_ids=torch.tensor([block.positions]),
                       use_cache=False).logits[0]
        alone = model(input_ids=torch.tensor([second]), use_cache=False).logits[0]
        unmasked = model(input_ids=torch.tensor([block.ids]), use_cache=False).logits[0]
    start = len(first) + 1  # after the first document and its eos
    assert torch.allclose(packed[start : start + len(second)], alone, atol=1e-5)
    assert not torch.allclose(unmasked[start : start + len(second)], alone, atol=1e-3)  # without it, it would see


def test_chat_loss_only_on_the_assistant_answers(tokenizer):
    messages = [{"role": "system", "content": "Eres el asistente de Luminara."},
                {"role": "user", "content": "¿Cuántos días de vacaciones tengo?"},
                {"role": "assistant", "content": "Tienes veintitrés días."},
                {"role": "user", "content": "Thanks!"},
                {"role": "assistant", "content": "You are welcome."}]
    ids, labels = chat_example(tokenizer, messages)
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(messages, tokenize=False)
    learned = [i for i, label in zip(ids, labels) if label != IGNORE]
    assert tokenizer.decode(learned) == "Tienes veintitrés días.<|eos|>\nYou are welcome.<|eos|>\n"
    assert all(label in (IGNORE, token) for token, label in zip(ids, labels))
    assert "<|assistant|>" not in tokenizer.decode(learned)  # the header is given, not learned
