"""The inference service's pure logic: sampling, stop sequences and streamed text, the batching
queue, request checks, the loaded-versions bookkeeping and the decoding loop on a small random model."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

import pytest
import torch

from services.inference.batching import BatchQueue, Concurrency, QueueFull
from services.inference.detokenize import Detokenizer, find_stop, held_back
from services.inference.engine import LoadedVersions
from services.inference.generation import (
    Finish,
    Job,
    Result,
    Vocabulary,
    left_padded,
    run_batch,
)
from services.inference.params import (
    InvalidArgument,
    Limits,
    check_prompt_length,
    parse,
)
from services.inference.sampling import (
    SamplingParams,
    choose,
    filtered_logits,
    generator_for,
)
from services.inference.stubs import load

pb, _ = load()


# -- sampling ------------------------------------------------------------------------------------
def test_greedy_takes_the_most_likely_token_of_each_row():
    logits = torch.tensor([[0.1, 3.0, 0.2], [2.0, 0.0, 1.0]])
    params = [SamplingParams(temperature=0)] * 2
    assert choose(logits, params, [generator_for(p) for p in params]) == [1, 0]


def test_top_k_and_top_p_keep_only_the_head_of_the_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3))
    params = [SamplingParams(top_k=2), SamplingParams(top_p=0.6), SamplingParams(top_p=0.5)]
    kept = filtered_logits(logits, params).isfinite()
    assert kept.tolist() == [[True, True, False, False], [True, True, False, False], [True, False, False, False]]
    assert filtered_logits(logits, [SamplingParams()] * 3).isfinite().all()  # neither: all tokens stay


def test_top_k_and_top_p_follow_each_rows_own_order():
    logits = torch.log(torch.tensor([[0.05, 0.15, 0.3, 0.5]]))
    assert filtered_logits(logits, [SamplingParams(top_k=1)]).isfinite().tolist() == [[False, False, False, True]]


def test_a_seed_samples_the_same_tokens_whatever_the_batch():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    alone = [choose(logits[1:2], [SamplingParams(seed=7)], [g])[0]
             for g in [generator_for(SamplingParams(seed=7))] for _ in range(20)]
    params = [SamplingParams(seed=1), SamplingParams(seed=7), SamplingParams(temperature=0)]
    generators = [generator_for(p) for p in params]
    batched = [choose(logits, params, generators)[1] for _ in range(20)]
    assert alone == batched
    other = generator_for(SamplingParams(seed=8))
    assert [choose(logits[1:2], [SamplingParams(seed=8)], [other])[0] for _ in range(20)] != alone


def test_sampling_follows_the_tempered_distribution():
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = torch.log(probs)[None, :]
    params = [SamplingParams(seed=3, temperature=1.0)]
    generator = generator_for(params[0])
    counts = Counter(choose(logits, params, [generator])[0] for _ in range(3000))
    assert all(abs(counts[i] / 3000 - p) < 0.04 for i, p in enumerate(probs.tolist()))
    hot = [SamplingParams(seed=3, temperature=100.0)]  # nearly uniform
    generator = generator_for(hot[0])
    counts = Counter(choose(logits, hot, [generator])[0] for _ in range(3000))
    assert all(abs(counts[i] / 3000 - 1 / 3) < 0.04 for i in range(3))


# -- streamed text and stop sequences -------------------------------------------------------------
def _chars(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


def _stream(text: str, stops: list[str]) -> tuple[list[str], Detokenizer]:
    detok = Detokenizer(_chars, stops)
    deltas = []
    for ch in text:
        deltas.append(detok.push(ord(ch)))
        if detok.stopped:
            break
    deltas.append(detok.finish())
    return [d for d in deltas if d], detok


def test_a_stop_sequence_ends_the_text_and_never_reaches_the_caller():
    deltas, detok = _stream("hello END world", ["END"])
    assert detok.stopped and detok.text == "hello " and "".join(deltas) == "hello "
    assert all("E" not in d for d in deltas)


def test_text_that_may_begin_a_stop_sequence_is_held_back_until_it_does_not():
    detok = Detokenizer(_chars, ["<stop>"])
    assert [detok.push(ord(c)) for c in "ab<st"] == ["a", "b", "", "", ""]
    assert detok.push(ord("x")) == "<stx"  # not a stop after all: released whole
    deltas, detok = _stream("ab<st", ["<stop>"])
    assert "".join(deltas) == "ab<st" and not detok.stopped  # the end of generation releases it


def test_the_earliest_of_several_stop_sequences_wins():
    assert find_stop("one two three", ["three", "two"]) == 4
    assert find_stop("abc", ["x"]) is None
    assert held_back("abc\n\n", ["\n\n\n", "c\n"]) == 2
    assert held_back("abc", []) == 0
    deltas, detok = _stream("a, b. c", [".", ","])
    assert detok.text == "a"


def test_an_incomplete_utf8_character_is_held_until_complete():
    data = "ñandú".encode()

    def decode(ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    detok = Detokenizer(decode)
    deltas = [detok.push(b) for b in data] + [detok.finish()]
    assert "".join(deltas) == "ñandú" and all("\ufffd" not in d for d in deltas)


# -- the batching queue ---------------------------------------------------------------------------
async def test_a_lone_request_starts_at_once():
    queue: BatchQueue[str] = BatchQueue(max_size=8, max_batch=4, max_wait_s=5.0)
    queue.put("a", key=1)
    started = time.monotonic()
    assert await queue.next_batch() == (1, ["a"])
    assert time.monotonic() - started < 1.0


async def test_a_batch_waits_for_as_many_as_were_recently_in_flight_but_no_longer_than_the_wait():
    queue: BatchQueue[str] = BatchQueue(max_size=8, max_batch=8, max_wait_s=0.2)
    for item in "abc":  # three in flight together: the next batches expect three
        queue.put(item, key=0)
    assert await queue.next_batch() == (0, ["a", "b", "c"])
    assert queue.running == 3
    queue.running = 0  # that batch ended
    queue.put("d", key=0)
    asyncio.get_running_loop().call_later(0.05, queue.put, "e", 0)
    asyncio.get_running_loop().call_later(0.06, queue.put, "f", 0)
    started = time.monotonic()
    assert await queue.next_batch() == (0, ["d", "e", "f"])
    assert 0.04 < time.monotonic() - started < 0.19  # started when the third came, before the wait ran out
    queue.running = 0
    queue.put("g", key=0)
    started = time.monotonic()
    assert await queue.next_batch() == (0, ["g"])
    assert 0.15 < time.monotonic() - started < 1.0  # nobody else came: the wait ran out


async def test_batches_hold_one_version_in_arrival_order_up_to_the_maximum():
    queue: BatchQueue[str] = BatchQueue(max_size=16, max_batch=2, max_wait_s=0)
    for item, key in [("a", 1), ("b", 2), ("c", 1), ("d", 1), ("e", 2)]:
        queue.put(item, key)
    batches = [await queue.next_batch() for _ in range(3)]
    assert batches == [(1, ["a", "c"]), (2, ["b", "e"]), (1, ["d"])]


async def test_a_full_queue_refuses_and_requests_whose_caller_left_are_dropped():
    gone: set[str] = set()
    queue: BatchQueue[str] = BatchQueue(max_size=2, max_batch=4, max_wait_s=0, alive=lambda item: item not in gone)
    queue.put("a", 0)
    queue.put("b", 0)
    with pytest.raises(QueueFull):
        queue.put("c", 0)
    gone.add("a")
    queue.put("c", 0)  # the dead one made room
    assert await queue.next_batch() == (0, ["b", "c"])


def test_expected_concurrency_is_forgotten_after_the_window():
    now = [0.0]
    seen = Concurrency(window_s=1.0, clock=lambda: now[0])
    seen.observe(5)
    seen.observe(2)
    assert seen.expected == 5
    now[0] = 1.5
    assert seen.expected == 1
    seen.observe(2)
    assert seen.expected == 2


# -- request checks -------------------------------------------------------------------------------
LIMITS = Limits(max_new_tokens=64, max_prompt_tokens=100)


def _request(**fields) -> pb.GenerateRequest:
    return pb.GenerateRequest(prompt="hola", **fields)


def test_a_request_gets_the_defaults_for_what_it_leaves_unset():
    params = parse(_request(), LIMITS)
    assert (params.max_new_tokens, params.sampling, params.version, params.stop) == (64, SamplingParams(), None, ())
    params = parse(_request(temperature=0, seed=5, model_version=0, stop=["\n"], top_k=3, max_new_tokens=2), LIMITS)
    assert params.sampling == SamplingParams(temperature=0, top_k=3, seed=5) and params.version == 0
    chat = pb.GenerateRequest(chat=pb.Chat(messages=[pb.ChatMessage(role="user", content="hola")]))
    assert parse(chat, LIMITS).messages == (("user", "hola"),)


@pytest.mark.parametrize(("request_", "field"), [
    (pb.GenerateRequest(), "prompt or chat"),
    (pb.GenerateRequest(prompt=""), "prompt"),
    (pb.GenerateRequest(chat=pb.Chat()), "chat.messages"),
    (pb.GenerateRequest(chat=pb.Chat(messages=[pb.ChatMessage(role="robot", content="x")])), "chat.messages[0].role"),
    (_request(max_new_tokens=0), "max_new_tokens"),
    (_request(max_new_tokens=65), "max_new_tokens"),
    (_request(temperature=-1), "temperature"),
    (_request(temperature=math.nan), "temperature"),
    (_request(top_p=0), "top_p"),
    (_request(top_p=1.5), "top_p"),
    (_request(stop=["x"] * 17), "stop"),
    (_request(stop=["ok", ""]), "stop[1]"),
])
def test_a_bad_request_is_refused_naming_the_field(request_, field):
    with pytest.raises(InvalidArgument) as refused:
        parse(request_, LIMITS)
    assert str(refused.value).startswith(f"{field}:")


def test_a_prompt_must_leave_room_for_a_token_in_the_context():
    check_prompt_length(100, LIMITS, context=512)
    with pytest.raises(InvalidArgument, match="prompt: 101 tokens, more than the 100"):
        check_prompt_length(101, LIMITS, context=512)
    with pytest.raises(InvalidArgument, match="more than the 49"):
        check_prompt_length(50, LIMITS, context=50)


# -- loaded versions --------------------------------------------------------------------------------
def test_the_least_recently_used_adapters_nobody_uses_are_unloaded_beyond_the_capacity():
    loaded = LoadedVersions(capacity=2, base_version=0)
    for version in (1, 2, 3):
        loaded.add(version)
    assert 0 in loaded and len(loaded) == 3  # the base is always there and not counted
    loaded.acquire(1)  # in use, and now the most recent
    assert loaded.evictable(keep={3}) == [2]
    assert loaded.evictable(keep={3}) == []  # within the capacity now
    loaded.add(4)
    assert loaded.evictable(keep={4}) == [3]  # 1 is in use
    loaded.release(1)
    loaded.add(5)
    assert loaded.evictable(keep={5}) == [1] and loaded.adapters() == [4, 5]
    with pytest.raises(KeyError):
        loaded.acquire(1)


# -- the decoding loop, on a small random Llama ------------------------------------------------------
class _Sink:
    def __init__(self) -> None:
        self.deltas: list[str] = []
        self.result: Result | None = None

    def delta(self, text: str) -> None:
        self.deltas.append(text)

    def done(self, result: Result) -> None:
        self.result = result

    def failed(self, error: BaseException) -> None:
        raise error


@pytest.fixture(scope="module")
def small_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=40, pad_token_id=0,
                         eos_token_id=1)
    return LlamaForCausalLM(config).eval()


VOCAB = Vocabulary(pad_id=0, eos_ids=frozenset({1}), decode=lambda ids: "".join(chr(65 + i % 26) for i in ids),
                   context=40)


def _job(prompt: list[int], **kwargs) -> Job:
    defaults = dict(max_new_tokens=8, sampling=SamplingParams(temperature=0), ignore_eos=True)
    return Job(prompt, sink=_Sink(), **{**defaults, **kwargs})


def test_a_batch_of_prompts_of_different_lengths_generates_what_each_would_alone(small_model):
    prompts = [[5, 6, 7, 8, 9, 10], [11], [12, 13, 14]]
    alone = []
    for prompt in prompts:
        job = _job(prompt)
        run_batch(small_model, [job], VOCAB)
        alone.append(job.sink.result.text)
    jobs = [_job(p) for p in prompts]
    assert run_batch(small_model, jobs, VOCAB) == 24
    assert [j.sink.result.text for j in jobs] == alone
    assert all(j.sink.result.finish is Finish.LENGTH and j.sink.result.completion_tokens == 8 for j in jobs)
    assert all("".join(j.sink.deltas) == j.sink.result.text for j in jobs)


def test_requests_that_join_a_running_batch_generate_what_they_would_alone(small_model):
    prompts = [[5, 6, 7, 8, 9, 10, 11, 12], [11], [12, 13, 14], [20, 21]]
    alone = []
    for prompt in prompts:
        job = _job(prompt, max_new_tokens=10)
        run_batch(small_model, [job], VOCAB)
        alone.append(job.sink.result.text)
    first, *later = [_job(p, max_new_tokens=10) for p in prompts]
    arrivals = {2: [later[0]], 4: [later[1], later[2]]}  # after the 2nd and 4th steps
    steps, sizes = [0], []

    def admit(running: int) -> list[Job]:
        steps[0] += 1
        sizes.append(running)
        return arrivals.get(steps[0], [])

    assert run_batch(small_model, [first], VOCAB, admit=admit) == 40
    assert [j.sink.result.text for j in [first, *later]] == alone
    assert sizes[:6] == [1, 1, 2, 2, 4, 4]  # the newcomers ran alongside the first request
    assert all(j.sink.result.completion_tokens == 10 for j in later)
    assert later[0].sink.result.started < later[1].sink.result.started  # each from when it joined


def test_a_running_batch_takes_in_waiting_requests_of_its_version_only_in_turn():
    queue: BatchQueue[str] = BatchQueue(max_size=16, max_batch=4, max_wait_s=0)
    for item, key in [("a", 1), ("b", 1), ("c", 2), ("d", 1)]:
        queue.put(item, key)
    assert queue.take(1, 1) == ["a"]
    assert queue.take(2, 4) == []  # "b" (version 1) waited longer than "c"
    assert queue.take(1, 4) == ["b", "d"]
    assert queue.take(1, 4) == [] and queue.take(2, 0) == []
    assert queue.take(2, 4) == ["c"] and len(queue) == 0


def test_each_request_ends_for_its_own_reason_and_the_others_go_on(small_model):
    reference = _job([5, 6], max_new_tokens=6)
    run_batch(small_model, [reference], VOCAB)
    text = reference.sink.result.text
    cancelled = _job([5, 6], max_new_tokens=30)
    cancelled.cancelled.set()
    short = _job([5, 6], max_new_tokens=2)
    stop = text[3:5]
    stopped = _job([5, 6], max_new_tokens=30, stop=(stop,))
    long = _job([5, 6], max_new_tokens=38, sampling=SamplingParams(seed=1))  # runs into the context (40)
    run_batch(small_model, [cancelled, short, stopped, long], VOCAB)
    assert cancelled.sink.result.finish is Finish.CANCELLED and cancelled.sink.result.completion_tokens == 0
    assert (short.sink.result.finish, short.sink.result.text) == (Finish.LENGTH, text[:2])
    assert (stopped.sink.result.finish, stopped.sink.result.text) == (Finish.STOP_SEQUENCE, text[:text.find(stop)])
    assert long.sink.result.finish is Finish.LENGTH and long.sink.result.completion_tokens == 38


def test_generation_ends_at_the_end_of_text_token_unless_told_to_ignore_it(small_model):
    vocab = Vocabulary(pad_id=0, eos_ids=frozenset(range(64)), decode=VOCAB.decode, context=40)  # every token ends
    ends, goes_on = _job([5], ignore_eos=False), _job([5], ignore_eos=True, max_new_tokens=3)
    run_batch(small_model, [ends, goes_on], vocab)
    assert (ends.sink.result.finish, ends.sink.result.completion_tokens, ends.sink.result.text) == (Finish.EOS, 1, "")
    assert goes_on.sink.result.finish is Finish.LENGTH and goes_on.sink.result.completion_tokens == 3


def test_an_expired_deadline_stops_a_request(small_model):
    late = _job([5, 6], max_new_tokens=30, deadline=time.monotonic() - 1)
    run_batch(small_model, [late], VOCAB)
    assert late.sink.result.finish is Finish.CANCELLED


def test_left_padding_masks_the_padding_and_counts_positions_from_each_prompts_start():
    ids, mask, positions = left_padded([[7, 8, 9], [5]], pad_id=0, device="cpu")
    assert ids.tolist() == [[7, 8, 9], [0, 0, 5]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_only_base_and_promoted_versions_are_served_by_name_unless_candidates_are():
    from services.inference.models import refusal
    from services.registry import ModelCard

    def card(**fields) -> ModelCard:
        return ModelCard(version=5, base_model="afina-tiny", base_version=0, **{"kind": "adapter", **fields})

    assert refusal(card(kind="base"), serve_candidates=False) is None
    assert refusal(card(status="promoted"), serve_candidates=False) is None
    assert "gate rejected" in refusal(card(status="rejected"), serve_candidates=False)
    assert "gate never passed" in refusal(card(), serve_candidates=False)
    assert refusal(card(status="rejected"), serve_candidates=True) is None
