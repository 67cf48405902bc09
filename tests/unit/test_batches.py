"""Packing and chat masking: which tokens carry loss, exactly, and that packed documents never see
each other."""

from __future__ import annotations

import pytest
import torch

from services.tuning import tiny
from services.tuning.batches import IGNORE, additive, chat_example, chat_start, model_inputs, pack, pack_examples
from services.tuning.train import block_loss


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


def test_examples_that_start_alike_hold_the_start_once_per_block():
    start = [7, 8]
    examples = [([7, 8, 1, 1], [IGNORE, IGNORE, IGNORE, 1]), ([7, 8, 2, 2, 2], [IGNORE, IGNORE, 2, 2, 2]),
                ([9, 3], [IGNORE, 3])]
    blocks, cut = pack_examples(examples, length=6, pad_id=0, start=start)
    assert [b.ids for b in blocks] == [[9, 3, 0, 0, 0, 0], [7, 8, 2, 2, 2, 0], [7, 8, 1, 1, 0, 0]]
    assert [b.shared for b in blocks] == [0, 2, 2]
    # after the start, an example's positions and labels are those it has alone
    assert blocks[2].positions == [0, 1, 2, 3, 2, 3] and blocks[2].labels == [IGNORE, IGNORE, IGNORE, 1, IGNORE, IGNORE]
    (together,), _ = pack_examples(examples[:2], length=9, pad_id=0, start=start)
    assert together.ids == [7, 8, 2, 2, 2, 1, 1, 0, 0] and together.positions == [0, 1, 2, 3, 4, 2, 3, 2, 3]
    assert together.labels == [IGNORE, IGNORE, 2, 2, 2, IGNORE, 1, IGNORE, IGNORE]


def test_an_example_after_a_shared_start_gets_the_logits_it_gets_alone(tokenizer):
    torch.manual_seed(0)
    model = tiny.build_model(tokenizer, tiny.TinyRecipe(layers=2)).eval()
    chats = [[{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
             for question, answer in (("¿Cuántos días de vacaciones tengo?", "Veintitrés."),
                                      ("¿A qué hora abre la oficina?", "A las nueve."))]
    second, first = (chat_example(tokenizer, chat) for chat in chats)
    start = chat_start(tokenizer)
    assert start and first[0][: len(start)] == start and second[0][: len(start)] == start
    assert len(first[0]) > len(second[0])  # the longer is packed first
    (block,), _ = pack_examples([first, second], length=len(first[0]) + len(second[0]), pad_id=0, start=start)
    after = len(first[0])  # the start once, then the first example's rest, then the second's
    assert block.shared == len(start)
    assert block.ids == first[0] + second[0][len(start):] + [0] * len(start)
    rest = slice(len(start), len(second[0]))
    for attention in ("sdpa", "eager"):  # a boolean mask, and one added to the scores
        model.set_attn_implementation(attention)
        with torch.no_grad():
            packed = model(**model_inputs([block], "cpu", additive(model)), use_cache=False).logits[0]
            alone = model(input_ids=torch.tensor([second[0]]), use_cache=False).logits[0]
            unmasked = model(input_ids=torch.tensor([block.ids]), position_ids=torch.tensor([block.positions]),
                             use_cache=False).logits[0]
        assert torch.allclose(packed[after : after + len(second[0]) - len(start)], alone[rest], atol=1e-5), attention
        assert not torch.allclose(unmasked[after : after + len(second[0]) - len(start)], alone[rest], atol=1e-3)


def test_the_loss_on_labeled_positions_alone_is_the_loss_on_every_position(tokenizer):
    torch.manual_seed(0)
    model = tiny.build_model(tokenizer, tiny.TinyRecipe(layers=2)).eval()
    examples = [chat_example(tokenizer, [{"role": "user", "content": f"¿Pregunta {i}?"},
                                         {"role": "assistant", "content": "Respuesta " * i}]) for i in range(1, 6)]
    blocks, _ = pack_examples(examples, length=64, pad_id=tokenizer.pad_token_id)
    labels = torch.tensor([block.labels for block in blocks])
    with torch.no_grad():
        everywhere = model(**model_inputs(blocks, "cpu"), labels=labels, use_cache=False).loss
        labeled, n = block_loss(model, blocks, "cpu")
    assert n == int((labels[:, 1:] != IGNORE).sum()) and 0 < n < labels.numel() / 2
    assert torch.allclose(labeled, everywhere, atol=1e-5)


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
