"""Choosing each request's next token from the model's logits: greedy, or sampled with
temperature, top-k and top-p (nucleus), from the request's own seeded random generator, so
that a seeded request samples the same tokens whatever it is batched with.

Sampling is by the inverse of the cumulative distribution: one uniform number per request from
its own generator, and one vectorized search for all requests of the batch."""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0  # 1: off
    top_k: int = 0  # 0: off
    seed: int | None = None  # None: a random one

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def generator_for(params: SamplingParams) -> random.Random:
    return random.Random(params.seed if params.seed is not None else secrets.randbits(64))


def filtered_logits(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Each row's logits divided by its temperature, with the tokens outside its top-k and
    top-p set to -inf. Greedy rows are left as they are (only their argmax matters)."""
    temperature = torch.tensor([p.temperature if not p.greedy else 1.0 for p in params], dtype=logits.dtype,
                               device=logits.device)
    scaled = logits / temperature[:, None]
    if all(p.top_k == 0 and p.top_p >= 1.0 for p in params):
        return scaled
    vocab = scaled.shape[-1]
    ordered, order = scaled.sort(dim=-1, descending=True)
    top_k = torch.tensor([p.top_k if 0 < p.top_k < vocab else vocab for p in params], device=logits.device)
    top_p = torch.tensor([p.top_p for p in params], dtype=logits.dtype, device=logits.device)
    ranks = torch.arange(vocab, device=logits.device)
    outside = ranks[None, :] >= top_k[:, None]
    ordered = ordered.masked_fill(outside, float("-inf"))
    probs = ordered.softmax(dim=-1)
    # a token is kept while the probability mass before it is below top_p (the first always is)
    outside |= (probs.cumsum(dim=-1) - probs) >= top_p[:, None]
    ordered = ordered.masked_fill(outside, float("-inf"))
    return torch.full_like(scaled, float("-inf")).scatter(-1, order, ordered)


def choose(logits: torch.Tensor, params: list[SamplingParams], generators: list[random.Random]) -> list[int]:
    """The next token of each row (logits: [rows, vocab])."""
    chosen = logits.argmax(dim=-1).tolist()
    sampled = [row for row, p in enumerate(params) if not p.greedy]
    if not sampled:
        return chosen
    rows = logits if len(sampled) == len(params) else logits[sampled]
    cdf = filtered_logits(rows.float(), [params[r] for r in sampled]).softmax(dim=-1).cumsum(dim=-1)
    uniform = torch.tensor([generators[r].random() for r in sampled], dtype=cdf.dtype, device=cdf.device)
    picks = torch.searchsorted(cdf, (uniform[:, None] * cdf[:, -1:]).contiguous(), right=True)
    for row, token in zip(sampled, picks.clamp(max=cdf.shape[-1] - 1).squeeze(-1).tolist(), strict=True):
        chosen[row] = token
    return chosen
