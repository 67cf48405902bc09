"""Packing and chat masking: which tokens carry loss, exactly."""

from __future__ import annotations

import pytest

from services.tuning import tiny
from services.tuning.batches import IGNORE, chat_example, pack


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.build_tokenizer(tiny.sample_text(), tiny.TinyRecipe())


def test_pack_fills_blocks_without_padding_inside():
    blocks = pack([[1, 2, 3], [4, 5], [6, 7, 8, 9]], length=4, eos_id=0)
    assert [b for b, _ in blocks] == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]
    assert all(labels == block for block, labels in blocks)  # every position learns
    (block, labels), = pack([[1, 2]], length=5, eos_id=0)
    assert block == [1, 2, 0, 0, 0] and labels == [1, 2, 0, IGNORE, IGNORE]


def test_chat_loss_only_on_the_assistant_answers(tokenizer):
    messages = [{"role": "system", "content": "Eres el asistente de Luminara."},
                {"role": "user", "content": "¿Cuántos días de vacaciones tengo?"},
                {"role": "assistant", "content": "Tienes veintitrés días."},
                {"role": "user", "content": "Thanks!"},
                {"role": "assistant", "content": "You are welcome."}]
    ids, labels = chat_example(tokenizer, messages, max_length=512)
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(messages, tokenize=False)
    learned = [i for i, label in zip(ids, labels) if label != IGNORE]
    assert tokenizer.decode(learned) == "Tienes veintitrés días.<|eos|>\nYou are welcome.<|eos|>\n"
    assert all(label in (IGNORE, token) for token, label in zip(ids, labels))
    assert "<|assistant|>" not in tokenizer.decode(learned)  # the header is given, not learned
    short_ids, short_labels = chat_example(tokenizer, messages, max_length=10)
    assert len(short_ids) == len(short_labels) == 10
