"""The decoding loop: a batch of requests generated together, token by token, on one model.

Prompts are left-padded to one length, with an attention mask and position ids that skip the
padding, and the keys and values of past tokens are kept in a cache, so each step runs the model
on one new token per request. Every request has its own sampling parameters, seed, stop sequences
and token budget; a request that ends (end of text, stop sequence, length, its caller gone or its
deadline passed) leaves the batch at once and the rest go on without it. Requests that arrive
meanwhile join the running batch after their prompt is run (continuous batching): their cache is
padded on the left to the batch's length, or the batch's to theirs.

Runs on the generation thread; it reports to each request's sink, which may be called from there.
"""

from __future__ import annotations

import enum
import random
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


class Collected:
    """A sink that keeps the result, for callers in this process (benchmarks, tests)."""

    result: Result | None = None

    def delta(self, text: str) -> None:
        pass

    def done(self, result: Result) -> None:
        self.result = result

    def failed(self, error: BaseException) -> None:
        raise error


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
    generator: random.Random
    started: float  # when its prompt was run
    generated: int = 0
    first_token_at: float | None = None


def left_padded(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ids, attention mask and position ids of prompts padded on the left to one length."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long, device=device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [missing, 0]
    return torch.nn.functional.pad(tensor, pad)


class _Batch:
    """Rows generated together: the attention mask over their cached positions, each row's last
    position, the key/value cache, and the logits of each row's next token."""

    def __init__(self, model, jobs: list[Job], vocab: Vocabulary, now: float) -> None:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        self.model = model
        self.rows = [_Row(job, Detokenizer(vocab.decode, job.stop), generator_for(job.sampling), now) for job in jobs]
        ids, self.mask, positions = left_padded([j.prompt_ids for j in jobs], vocab.pad_id, model.device)
        self.positions = positions[:, -1:]
        self.cache = DynamicCache(config=model.config)
        self.logits = model(input_ids=ids, attention_mask=self.mask, position_ids=positions, cache=self.cache,
                            use_cache=True, logits_to_keep=1).logits[:, -1, :]
        # rows can join and padding be trimmed only with plain growing layers (not sliding windows)
        self.joinable = all(type(layer) is DynamicLayer for layer in self.cache.layers)

    def keep(self, kept: list[int]) -> None:
        """Only the rows at these indexes go on."""
        if len(kept) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in kept]
        if not kept:
            return
        index = torch.tensor(kept, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.positions = self.mask[index], self.positions[index]
        if self.joinable:  # drop the padding columns that no row uses any more
            first = int(self.mask.any(dim=0).nonzero()[0])
            if first:
                self.mask = self.mask[:, first:]
                for layer in self.cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def advance(self, tokens: list[int]) -> None:
        """Run the model on each row's new token."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=-1)
        self.positions = self.positions + 1
        step = torch.tensor(tokens, dtype=torch.long, device=self.mask.device)[:, None]
        self.logits = self.model(input_ids=step, attention_mask=self.mask, position_ids=self.positions,
                                 cache=self.cache, use_cache=True).logits[:, -1, :]

    def join(self, other: _Batch) -> None:
        """Take in the rows of another batch (just prefilled), padding the shorter cache on the left."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, width, -2), _pad_left(theirs.keys, width, -2)])
            mine.values = torch.cat([_pad_left(mine.values, width, -2), _pad_left(theirs.values, width, -2)])
        self.mask = torch.cat([_pad_left(self.mask, width, -1), _pad_left(other.mask, width, -1)])
        self.positions = torch.cat([self.positions, other.positions])
        self.logits = torch.cat([self.logits, other.logits])
        self.rows += other.rows


@torch.inference_mode()
def run_batch(model, jobs: list[Job], vocab: Vocabulary, admit: Callable[[int], list[Job]] | None = None,
              clock: Callable[[], float] = time.monotonic) -> int:
    """Generate every job of the batch to its end, reporting to each job's sink; returns the
    number of tokens generated. After each step, ``admit(rows)`` may hand over more jobs, which
    join the running batch (continuous batching) instead of waiting for it to end."""
    batch = _Batch(model, jobs, vocab, clock())
    generated = 0
    while batch.rows:
        tokens = choose(batch.logits, [r.job.sampling for r in batch.rows], [r.generator for r in batch.rows])
        now = clock()
        generated += len(tokens)
        kept = [i for i, (row, token) in enumerate(zip(batch.rows, tokens, strict=True))
                if not _step(row, token, vocab, now)]
        batch.keep(kept)
        if batch.rows:
            batch.advance([tokens[i] for i in kept])
        joining = admit(len(batch.rows)) if admit is not None and batch.joinable else []
        if joining:
            newcomers = _Batch(model, joining, vocab, clock())
            if batch.rows:
                batch.join(newcomers)
            else:
                batch = newcomers
    return generated


def _step(row: _Row, token: int, vocab: Vocabulary, now: float) -> bool:
    """Take one generated token for a row; True when the row is finished (and reported)."""
    job = row.job
    if not job.alive(now):
        _report(row, Finish.CANCELLED, now)
        return True
    row.generated += 1
    row.first_token_at = row.first_token_at or now
    if token in vocab.eos_ids and not job.ignore_eos:
        _report(row, Finish.EOS, now)
        return True
    delta = row.text.push(token)
    if row.text.stopped:
        _report(row, Finish.STOP_SEQUENCE, now, delta)
        return True
    if row.generated >= job.max_new_tokens or len(job.prompt_ids) + row.generated >= vocab.context:
        _report(row, Finish.LENGTH, now, delta)
        return True
    if delta:
        job.sink.delta(delta)
    return False


def _report(row: _Row, finish: Finish, now: float, delta: str = "") -> None:
    delta += row.text.finish() if finish is not Finish.CANCELLED else ""
    if delta:
        row.job.sink.delta(delta)
    row.job.sink.done(Result(
        text=row.text.text, finish=finish, prompt_tokens=len(row.job.prompt_ids), completion_tokens=row.generated,
        started=row.started, first_token_at=row.first_token_at, finished_at=now,
    ))
