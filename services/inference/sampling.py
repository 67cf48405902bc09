"""Choosing each request's next token from the model's logits: greedy, or sampled with
temperature, top-k and top-p (nucleus), from the request's own seeded random generator, so
that a seeded request samples the same tokens whatever it is batched with."""

from __future__ import annotations

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


def generator_for(params: SamplingParams) -> torch.Generator:
    seed = params.seed if params.seed is not None else secrets.randbits(63)
    return torch.Generator().manual_seed(seed % (1 << 63))


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


def choose(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]) -> list[int]:
    """The next token of each row (logits: [rows, vocab], float)."""
    chosen = logits.argmax(dim=-1).tolist()
    if all(p.greedy for p in params):
        return chosen
    probs = filtered_logits(logits.float(), params).softmax(dim=-1).cpu()
    for row, (p, generator) in enumerate(zip(params, generators, strict=True)):
        if not p.greedy:
            chosen[row] = int(torch.multinomial(probs[row], 1, generator=generator))
    return chosen
