"""The decoding loop: a batch of requests generated together, token by token, on one model.

Prompts are left-padded to one length, with an attention mask and position ids that skip the
padding, and the keys and values of past tokens are kept in a cache, so each step runs the model
on one new token per request. Every request has its own sampling parameters, seed, stop sequences
and token budget; a request that ends (end of text, stop sequence, length, its caller gone or its
deadline passed) leaves the batch at once and the rest go on without it.

Runs on the generation thread; it reports to each request's sink, which may be called from there.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from services.inference.detokenize import Detokenizer
from services.inference.sampling import SamplingParams, choose, generator_for


class Finish(enum.IntEnum):  # the numbers are the proto's FinishReason
    EOS = 1
    STOP_SEQUENCE = 2
    LENGTH = 3
    CANCELLED = 4  # the caller went away or its deadline passed: nobody reads the result


@dataclass(frozen=True)
class Result:
    text: str
    finish: Finish
    prompt_tokens: int
    completion_tokens: int
    started: float  # when the batch started (time.monotonic)
    first_token_at: float | None
    finished_at: float


class Sink(Protocol):
    def delta(self, text: str) -> None: ...
    def done(self, result: Result) -> None: ...
    def failed(self, error: BaseException) -> None: ...


@dataclass(eq=False)
class Job:
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    sink: Sink
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    deadline: float | None = None  # time.monotonic
    cancelled: threading.Event = field(default_factory=threading.Event)
    arrived: float = field(default_factory=time.monotonic)

    def alive(self, now: float | None = None) -> bool:
        if self.cancelled.is_set():
            return False
        return self.deadline is None or (now if now is not None else time.monotonic()) < self.deadline


@dataclass(frozen=True)
class Vocabulary:
    """What the loop needs from the tokenizer and the model's config."""

    pad_id: int
    eos_ids: frozenset[int]
    decode: Callable[[list[int]], str]
    context: int  # positions the model takes


@dataclass(eq=False)
class _Row:
    job: Job
    text: Detokenizer
    generator: torch.Generator
    generated: int = 0
    first_token_at: float | None = None


def left_padded(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ids, attention mask and position ids of prompts padded on the left to one length."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long, device=device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


@torch.inference_mode()
def run_batch(model, jobs: list[Job], vocab: Vocabulary, clock: Callable[[], float] = time.monotonic) -> int:
    """Generate every job of the batch to its end, reporting to each job's sink; returns the
    number of tokens generated."""
    started = clock()
    rows = [_Row(job, Detokenizer(vocab.decode, job.stop), generator_for(job.sampling)) for job in jobs]
    device = model.device
    ids, mask, positions = left_padded([j.prompt_ids for j in jobs], vocab.pad_id, device)
    cache = _new_cache(model)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                   logits_to_keep=1).logits[:, -1, :]
    generated = 0
    while rows:
        tokens = choose(logits, [r.job.sampling for r in rows], [r.generator for r in rows])
        now = clock()
        generated += len(tokens)
        kept = [i for i, (row, token) in enumerate(zip(rows, tokens, strict=True))
                if not _step(row, token, vocab, started, now)]
        if not kept:
            return generated
        if len(kept) < len(rows):
            index = torch.tensor(kept, device=device)
            cache.batch_select_indices(index)
            mask, positions = mask[index], positions[index]
            rows, tokens = [rows[i] for i in kept], [tokens[i] for i in kept]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
        positions = positions[:, -1:] + 1
        step_ids = torch.tensor(tokens, dtype=torch.long, device=device)[:, None]
        logits = model(input_ids=step_ids, attention_mask=mask, position_ids=positions, cache=cache,
                       use_cache=True).logits[:, -1, :]
    return generated


def _new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _step(row: _Row, token: int, vocab: Vocabulary, started: float, now: float) -> bool:
    """Take one generated token for a row; True when the row is finished (and reported)."""
    job = row.job
    if not job.alive(now):
        _report(row, Finish.CANCELLED, started, now)
        return True
    row.generated += 1
    row.first_token_at = row.first_token_at or now
    if token in vocab.eos_ids and not job.ignore_eos:
        _report(row, Finish.EOS, started, now)
        return True
    delta = row.text.push(token)
    if row.text.stopped:
        _report(row, Finish.STOP_SEQUENCE, started, now, delta)
        return True
    if row.generated >= job.max_new_tokens or len(job.prompt_ids) + row.generated >= vocab.context:
        _report(row, Finish.LENGTH, started, now, delta)
        return True
    if delta:
        job.sink.delta(delta)
    return False


def _report(row: _Row, finish: Finish, started: float, now: float, delta: str = "") -> None:
    delta += row.text.finish() if finish is not Finish.CANCELLED else ""
    if delta:
        row.job.sink.delta(delta)
    row.job.sink.done(Result(
        text=row.text.text, finish=finish, prompt_tokens=len(row.job.prompt_ids), completion_tokens=row.generated,
        started=started, first_token_at=row.first_token_at, finished_at=now,
    ))
