"""A generation request's parameters checked against the server's limits, with an error that names
the field at fault. Works on the ``GenerateRequest`` message (or anything with its fields)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.inference.sampling import SamplingParams

ROLES = ("system", "user", "assistant")
MAX_STOPS = 16
MAX_STOP_CHARS = 256
MAX_TEMPERATURE = 100.0


class InvalidArgument(ValueError):
    """A request field that cannot be served; the message names it."""


@dataclass(frozen=True)
class Limits:
    max_new_tokens: int
    max_prompt_tokens: int


@dataclass(frozen=True)
class Params:
    prompt: str | None
    messages: tuple[tuple[str, str], ...] | None
    max_new_tokens: int
    sampling: SamplingParams
    stop: tuple[str, ...]
    version: int | None
    ignore_eos: bool


def _has(request, field: str) -> bool:
    return request.HasField(field)


def parse(request, limits: Limits) -> Params:
    """Check a GenerateRequest; raises InvalidArgument naming the first bad field."""
    which = request.WhichOneof("input")
    prompt = messages = None
    if which == "prompt":
        prompt = request.prompt
        if not prompt:
            raise InvalidArgument("prompt: must not be empty")
    elif which == "chat":
        if not request.chat.messages:
            raise InvalidArgument("chat.messages: must hold at least one message")
        for i, message in enumerate(request.chat.messages):
            if message.role not in ROLES:
                raise InvalidArgument(f"chat.messages[{i}].role: must be one of {', '.join(ROLES)}, not {message.role!r}")
        messages = tuple((m.role, m.content) for m in request.chat.messages)
    else:
        raise InvalidArgument("prompt or chat: one of them is required")

    max_new = request.max_new_tokens if _has(request, "max_new_tokens") else limits.max_new_tokens
    if not 1 <= max_new <= limits.max_new_tokens:
        raise InvalidArgument(f"max_new_tokens: must be between 1 and {limits.max_new_tokens}, not {max_new}")
    temperature = request.temperature if _has(request, "temperature") else 1.0
    if not (math.isfinite(temperature) and 0 <= temperature <= MAX_TEMPERATURE):
        raise InvalidArgument(f"temperature: must be between 0 and {MAX_TEMPERATURE:g}, not {temperature}")
    top_p = request.top_p if _has(request, "top_p") else 1.0
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise InvalidArgument(f"top_p: must be in (0, 1], not {top_p}")
    stop = tuple(request.stop)
    if len(stop) > MAX_STOPS:
        raise InvalidArgument(f"stop: at most {MAX_STOPS} sequences, not {len(stop)}")
    for i, sequence in enumerate(stop):
        if not 0 < len(sequence) <= MAX_STOP_CHARS:
            raise InvalidArgument(f"stop[{i}]: must have 1 to {MAX_STOP_CHARS} characters")
    return Params(
        prompt=prompt, messages=messages, max_new_tokens=max_new,
        sampling=SamplingParams(temperature=temperature, top_p=top_p, top_k=request.top_k,
                                seed=request.seed if _has(request, "seed") else None),
        stop=stop, version=request.model_version if _has(request, "model_version") else None,
        ignore_eos=request.ignore_eos,
    )


def check_prompt_length(tokens: int, limits: Limits, context: int) -> None:
    """The prompt must leave room for at least one generated token in the model's context."""
    longest = min(limits.max_prompt_tokens, context - 1)
    if tokens > longest:
        raise InvalidArgument(f"prompt: {tokens} tokens, more than the {longest} this server takes")
