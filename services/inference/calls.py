"""A generation or search call, whatever protocol it came in on: checked (params.py), grounded in
retrieved passages when asked, held on a model version (models.py), queued and generated in
batches (engine.py), and on the way out stopped and released. The gRPC servicer (service.py) and
the OpenAI-compatible HTTP API (openai_api.py) are adapters around this; they differ only in how
they read a request and report an outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from services.inference import metrics
from services.inference.generation import Finish, Job, Result
from services.inference.models import Lease, Models, Unavailable
from services.inference.params import Limits, Params, Search, check_prompt_length, longest_prompt, parse
from services.retrieval.grounding import grounded_messages, grounded_prompt
from services.retrieval.index import Hit, IncompatibleIndex, PassageIndex
from services.settings import Settings

MAX_REQUEST_BYTES = 1 << 20  # either protocol: a prompt of AFINA_INFERENCE_MAX_PROMPT_TOKENS fits many times over
DRAIN_S = 30.0  # how long calls in flight may take to finish after SIGTERM


class DeadlineExceeded(Exception):
    pass


class CallSink:
    """Where the generation thread leaves a call's text deltas and result, for the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stream: bool) -> None:
        self._loop = loop
        self.result: asyncio.Future[Result] = loop.create_future()
        self._deltas: asyncio.Queue[str | None] | None = asyncio.Queue() if stream else None

    def delta(self, text: str) -> None:
        if self._deltas is not None:
            self._soon(self._deltas.put_nowait, text)

    def done(self, result: Result) -> None:
        self._soon(self._settle, result, None)

    def failed(self, error: BaseException) -> None:
        self._soon(self._settle, None, error)

    def _soon(self, *call) -> None:
        try:
            self._loop.call_soon_threadsafe(*call)
        except RuntimeError:  # the loop is closed: the server stopped, nobody is waiting
            pass

    def _settle(self, result: Result | None, error: BaseException | None) -> None:
        if not self.result.done():
            self.result.set_exception(error) if error else self.result.set_result(result)
        if self._deltas is not None:
            self._deltas.put_nowait(None)

    async def deltas(self) -> AsyncIterator[str]:
        while (text := await self._deltas.get()) is not None:
            yield text


@dataclass
class Call:
    job: Job
    sink: CallSink
    lease: Lease
    citations: list[Hit]

    @property
    def version(self) -> int:
        return self.lease.version

    async def result(self) -> Result:
        result = await self.sink.result
        if result.finish is Finish.CANCELLED:
            raise DeadlineExceeded("the call's deadline passed during generation")
        if result.first_token_at is not None:
            metrics.FIRST_TOKEN_SECONDS.observe(result.first_token_at - self.job.arrived)
        return result

    def timings_ms(self, result: Result) -> dict[str, float]:
        """queued, first token, generation and total time of the call, in milliseconds."""
        job = self.job
        first = (result.first_token_at - job.arrived) if result.first_token_at is not None else 0.0
        return {"queued_ms": (result.started - job.arrived) * 1000, "first_token_ms": first * 1000,
                "generation_ms": (result.finished_at - result.started) * 1000,
                "total_ms": (time.monotonic() - job.arrived) * 1000}


class Calls:
    """What a server answers with: its models, its passage index and its limits."""

    def __init__(self, settings: Settings, models: Models, index: PassageIndex | None = None) -> None:
        self.models = models
        self.index = index
        retrieval = settings.retrieval
        self.limits = Limits(settings.inference.max_new_tokens, settings.inference.max_prompt_tokens,
                             retrieval.top_k, retrieval.max_k, retrieval.max_query_chars)

    async def retrieve(self, search: Search) -> list[Hit]:
        if self.index is None:
            raise Unavailable("this server has no passage index")
        try:
            return await asyncio.to_thread(self.index.ranked, search.query, search.k, search.filters)
        except IncompatibleIndex:
            raise
        except Exception as exc:  # storage down, or no index written yet
            raise Unavailable(f"the passage index cannot be searched now: {exc}") from exc

    @asynccontextmanager
    async def generation(self, request, remaining_s: float | None, stream: bool) -> AsyncIterator[Call]:
        """A generation call (a GenerateRequest, or anything with its fields) from its checks to its
        end: held on its version, queued, and on the way out (answered, failed, cancelled) its
        generation stopped and its version released. remaining_s: the caller's deadline, if any."""
        arrived = time.monotonic()
        params = parse(request, self.limits)
        found = await self.retrieve(params.search) if params.search else []
        lease = await self.models.acquire(params.version)
        call = None
        try:
            # the most passages (best first) that leave the prompt within the limits; the call's own
            # text must fit by itself
            for kept in range(len(found), -1, -1):
                citations = found[:kept]
                grounded = _grounded(params, [hit.text for hit in citations])
                prompt = lease.engine.encode(grounded)
                if len(prompt) <= longest_prompt(self.limits, lease.engine.vocab.context) or kept == 0:
                    break
            check_prompt_length(len(prompt), self.limits, lease.engine.vocab.context)
            params = grounded
            sink = CallSink(asyncio.get_running_loop(), stream)
            job = Job(prompt, params.max_new_tokens, params.sampling, sink, params.stop, params.ignore_eos,
                      deadline=arrived + remaining_s if remaining_s is not None else None, arrived=arrived)
            lease.engine.submit(job, lease.version)
            call = Call(job, sink, lease, citations)
            yield call
        finally:
            if call is not None:
                call.job.cancelled.set()  # a no-op once it is done; stops it when the caller went away
                if call.sink.result.done() and not call.sink.result.cancelled():
                    call.sink.result.exception()  # retrieved: no warning for a result nobody read
            self.models.release(lease)


def _grounded(params: Params, passages: list[str]) -> Params:
    if not passages:
        return params
    if params.messages:
        return replace(params, messages=grounded_messages(params.messages, passages))
    return replace(params, prompt=grounded_prompt(params.prompt, passages))
