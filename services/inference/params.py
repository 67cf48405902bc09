"""A generation request's parameters checked against the server's limits, with an error that names
the field at fault. Works on the ``GenerateRequest`` message (or anything with its fields)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.contracts import Stability
from services.inference.sampling import SamplingParams
from services.retrieval.grounding import search_text
from services.retrieval.index import Filters

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
    top_k: int = 3  # passages retrieved when a call does not say
    max_k: int = 50
    max_query_chars: int = 2000


@dataclass(frozen=True)
class Search:
    """A checked search: for Retrieve, or for a generation that asks for retrieval."""

    query: str
    k: int
    filters: Filters


@dataclass(frozen=True)
class Params:
    prompt: str | None
    messages: tuple[tuple[str, str], ...] | None
    max_new_tokens: int
    sampling: SamplingParams
    stop: tuple[str, ...]
    version: int | None
    ignore_eos: bool
    search: Search | None = None  # set: ground the answer in retrieved passages


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
    search = None
    if request.HasField("retrieval"):
        if which == "chat" and not any(role == "user" for role, _ in messages):
            raise InvalidArgument("retrieval: the chat needs a user message to search for")
        k = request.retrieval.k or limits.top_k
        search = _search(search_text(messages, prompt), k, request.retrieval.filters, limits, "retrieval.k")
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
        ignore_eos=request.ignore_eos, search=search,
    )


def parse_retrieve(request, limits: Limits) -> Search:
    """Check a RetrieveRequest; raises InvalidArgument naming the first bad field."""
    return _search(request.query, request.k if _has(request, "k") else limits.top_k, request.filters, limits, "k")


def _search(query: str, k: int, filters, limits: Limits, k_field: str) -> Search:
    query = query.strip()
    if not query:
        raise InvalidArgument("query: must not be empty")
    if len(query) > limits.max_query_chars:
        raise InvalidArgument(f"query: {len(query)} characters, more than the {limits.max_query_chars} allowed")
    if not 1 <= k <= limits.max_k:
        raise InvalidArgument(f"{k_field}: must be between 1 and {limits.max_k}, not {k}")
    stability = None
    if filters.stability:
        try:
            stability = Stability(filters.stability)
        except ValueError:
            raise InvalidArgument(f"filters.stability: must be one of {', '.join(Stability)}, "
                                  f"not {filters.stability!r}") from None
    return Search(query, k, Filters(filters.language or None, stability, filters.source_prefix or None))


def longest_prompt(limits: Limits, context: int) -> int:
    """The most prompt tokens a call may have: within the limit, leaving room for one generated token."""
    return min(limits.max_prompt_tokens, context - 1)


def check_prompt_length(tokens: int, limits: Limits, context: int) -> None:
    longest = longest_prompt(limits, context)
    if tokens > longest:
        raise InvalidArgument(f"prompt: {tokens} tokens, more than the {longest} this server takes")
