"""The OpenAI-compatible HTTP API, served by the inference process beside gRPC (same engine, same
models, same limits, same bearer token): ``POST /v1/chat/completions``, ``POST /v1/completions``
(both with ``stream: true`` as server-sent events), ``GET /v1/models`` and ``POST /v1/embeddings``.

A thin adapter: a request body becomes the gRPC ``GenerateRequest`` it means, so one parser
(params.py) checks both protocols and one path (calls.py) runs them; errors come back as OpenAI's
error bodies with the HTTP status of their kind. Model names: ``champion`` (the served version),
``v<N>`` or ``<N>`` for a registry version, and the embedding model's name for embeddings.
afina's own options ride along as extra body fields (the ``openai`` client's ``extra_body``):
``retrieval`` ({k, filters}) grounds the answer in the passage index and returns ``citations``;
``top_k`` and ``ignore_eos`` as in gRPC; ``input_type`` (query or passage) for embeddings.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any, Literal
from uuid import uuid4

import numpy as np
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from services.inference import metrics, stubs
from services.inference.batching import QueueFull
from services.inference.calls import DRAIN_S, MAX_REQUEST_BYTES, Call, Calls, DeadlineExceeded
from services.inference.generation import Finish, Result
from services.inference.models import LoadFailed, NotServable, OtherBase, Unavailable, UnknownVersion
from services.inference.params import InvalidArgument
from services.registry import ModelCard
from services.retrieval.embed import Embedder
from services.retrieval.index import Hit, IncompatibleIndex
from services.settings import Settings

pb, _ = stubs.load()

CHAMPION = "champion"
MAX_EMBEDDING_INPUTS = 256

# (HTTP status, OpenAI error type, OpenAI error code) of each kind of failure; the gRPC server maps
# the same kinds onto status codes (service.STATUS)
ERRORS: dict[type[BaseException], tuple[int, str, str | None]] = {
    InvalidArgument: (400, "invalid_request_error", None),
    UnknownVersion: (404, "invalid_request_error", "model_not_found"),
    QueueFull: (429, "rate_limit_error", "rate_limit_exceeded"),
    Unavailable: (503, "server_error", "unavailable"),
    OtherBase: (400, "invalid_request_error", "model_not_servable"),
    NotServable: (400, "invalid_request_error", "model_not_servable"),
    LoadFailed: (503, "server_error", "model_load_failed"),
    DeadlineExceeded: (504, "server_error", "timeout"),
    IncompatibleIndex: (409, "server_error", "incompatible_index"),
}
# the GenerateRequest fields that a checked-field message names, by their OpenAI names
FIELD_NAMES = {"max_new_tokens": "max_tokens", "chat.messages": "messages"}
FINISH = {Finish.EOS: "stop", Finish.STOP_SEQUENCE: "stop", Finish.LENGTH: "length"}


# -- the request bodies ---------------------------------------------------------------------------------
class Filters(BaseModel):
    language: str = ""
    stability: str = ""
    source_prefix: str = ""


class RetrievalOptions(BaseModel):
    """afina's extension: ground the answer in retrieved passages (the gRPC ``Retrieval``)."""

    k: int = Field(0, ge=0, le=2**32 - 1, description="passages; 0: AFINA_RETRIEVAL_TOP_K")
    filters: Filters = Filters()


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class Generating(BaseModel):
    """What the two generation endpoints share. Fields OpenAI defines and afina does not serve are
    refused by name (below); unknown fields are ignored, as OpenAI's own server does."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=0, le=2**32 - 1)
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**64 - 1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1
    user: str | None = None
    # afina's extensions
    top_k: int | None = Field(None, ge=0, le=2**32 - 1)
    ignore_eos: bool = False
    retrieval: RetrievalOptions | None = None

    def request(self, **input_) -> pb.GenerateRequest:
        """The gRPC request this body means (params.parse checks it)."""
        if self.n != 1:
            raise InvalidArgument("n: afina generates one choice per request")
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        fields = dict(max_new_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                      top_k=self.top_k, seed=self.seed, model_version=model_version(self.model))
        request = pb.GenerateRequest(**{k: v for k, v in fields.items() if v is not None}, stop=stop,
                                     ignore_eos=self.ignore_eos, **input_)
        if self.retrieval is not None:
            request.retrieval.k = self.retrieval.k
            for name, value in self.retrieval.filters.model_dump().items():
                setattr(request.retrieval.filters, name, value)
        return request

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatCompletionRequest(Generating):
    messages: list[Message]
    max_completion_tokens: int | None = Field(None, ge=0, le=2**32 - 1)
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None

    def request(self) -> pb.GenerateRequest:
        for name in ("tools", "response_format", "logprobs"):
            if getattr(self, name):
                raise InvalidArgument(f"{name}: not supported by afina")
        if self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        roles = {"developer": "system"}  # OpenAI's newer name for the system role
        chat = pb.Chat(messages=[pb.ChatMessage(role=roles.get(m.role, m.role), content=m.text())
                                 for m in self.messages])
        return super().request(chat=chat)


class CompletionRequest(Generating):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = None

    def request(self) -> pb.GenerateRequest:
        for name in ("echo", "suffix", "logprobs", "best_of"):
            if getattr(self, name):
                raise InvalidArgument(f"{name}: not supported by afina")
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if len(prompts) != 1:
            raise InvalidArgument("prompt: afina takes one prompt per request")
        return super().request(prompt=prompts[0])


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    # afina's extension: E5 models embed a search query and a passage differently ("query" also
    # suits comparing texts with each other)
    input_type: Literal["query", "passage"] = "query"


def model_version(model: str) -> int | None:
    """The registry version a model name means (None: the champion)."""
    if model == CHAMPION:
        return None
    if found := re.fullmatch(r"v?(\d{1,9})", model):
        return int(found.group(1))
    raise UnknownVersion(f"the model {model!r} does not exist: name '{CHAMPION}' or a version such as 'v3' "
                         "(GET /v1/models lists them)")


def model_name(version: int) -> str:
    return f"v{version}"


# -- the responses --------------------------------------------------------------------------------------
def usage(result: Result) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


def citation(hit: Hit) -> dict[str, Any]:
    return {"text": hit.text, "source_id": hit.source_id, "chunk": hit.chunk, "passage": hit.passage,
            "section": hit.section, "page": hit.page, "score": hit.score, "language": hit.language,
            "stability": hit.stability}


def completion_body(kind: Literal["chat", "text"], call: Call, result: Result, ident: str, created: int) -> dict:
    finish = FINISH.get(result.finish, "stop")
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": finish,
                  "logprobs": None}
    else:
        choice = {"index": 0, "text": result.text, "finish_reason": finish, "logprobs": None}
    body = {"id": ident, "object": "chat.completion" if kind == "chat" else "text_completion", "created": created,
            "model": model_name(call.version), "choices": [choice], "usage": usage(result)}
    if call.citations:
        body["citations"] = [citation(hit) for hit in call.citations]
    return body


def chunk_body(kind: Literal["chat", "text"], call: Call, ident: str, created: int, *, text: str | None = None,
               finish: str | None = None, first: bool = False) -> dict:
    if kind == "chat":
        delta = ({"role": "assistant"} if first else {}) | ({"content": text} if text is not None else {})
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
    return {"id": ident, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": created, "model": model_name(call.version), "choices": [choice]}


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_of(exc: BaseException) -> tuple[int, dict]:
    """The HTTP status and OpenAI error body of a failure of one of the ERRORS kinds."""
    status, kind, code = next(v for k, v in ERRORS.items() if isinstance(exc, k))
    message, param = str(exc), None
    if isinstance(exc, InvalidArgument):
        field, _, rest = message.partition(":")
        field = FIELD_NAMES.get(field, field)
        message, param = f"{field}:{rest}", field
    return status, error_body(message, kind, code, param)


def error_response(exc: BaseException) -> JSONResponse:
    status, body = error_of(exc)
    return JSONResponse(body, status_code=status)


def sse(data: dict | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n".encode()


# -- the application ------------------------------------------------------------------------------------
def app(settings: Settings, calls: Calls, embedder: Embedder | None) -> FastAPI:
    api = FastAPI(title="afina (OpenAI-compatible)", docs_url=None, redoc_url=None, openapi_url="/v1/openapi.json")
    api.add_middleware(Measured)
    token = settings.inference.token
    expected = f"Bearer {token}".encode()
    models = calls.models

    async def authorized(request: Request) -> None:
        if token and not hmac.compare_digest(request.headers.get("authorization", "").encode(), expected):
            raise Refused(401, error_body("a bearer token is required: send the header "
                                          "'Authorization: Bearer <token>'", "invalid_request_error",
                                          "invalid_api_key"))

    guarded = [Depends(authorized)]

    @api.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"] if part != "body")
        return JSONResponse(error_body(f"{param or 'body'}: {first['msg']}", "invalid_request_error", None,
                                       param or None), status_code=400)

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), status_code=exc.status_code)

    for kind in ERRORS:
        api.add_exception_handler(kind, lambda request, exc: error_response(exc))

    @api.exception_handler(ClientGone)
    async def gone(request: Request, exc: ClientGone) -> JSONResponse:
        return JSONResponse(error_body(str(exc), "invalid_request_error", "client_closed_request"), status_code=499)

    @api.get("/health")
    async def health() -> JSONResponse:
        champion = models.champion
        return JSONResponse({"status": "serving" if champion is not None else "starting", "champion": champion},
                            status_code=200 if champion is not None else 503)

    @api.get("/v1/models", dependencies=guarded)
    async def list_models() -> dict:
        cards = await asyncio.to_thread(models.registry.cards)
        listed = [model_object(card.version, card) for card in cards if card.kind == "base" or card.status == "promoted"]
        if models.champion is not None:
            card = next((c for c in cards if c.version == models.champion), None)
            listed.insert(0, model_object(CHAMPION, card))
        if embedder is not None:
            listed.append({"id": embedder.name, "object": "model", "created": 0, "owned_by": "afina"})
        return {"object": "list", "data": listed}

    @api.get("/v1/models/{model:path}", dependencies=guarded)
    async def get_model(model: str) -> JSONResponse:
        if embedder is not None and model == embedder.name:
            return JSONResponse({"id": embedder.name, "object": "model", "created": 0, "owned_by": "afina"})
        version = model_version(model)
        version = models.champion if version is None else version
        card = await asyncio.to_thread(models.registry.card, version) if version is not None else None
        if card is None:
            raise UnknownVersion(f"the model {model!r} does not exist (GET /v1/models lists them)")
        return JSONResponse(model_object(model if model == CHAMPION else version, card))

    @api.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await generated("chat", body, request)

    @api.post("/v1/completions", dependencies=guarded)
    async def completions(body: CompletionRequest, request: Request):
        return await generated("text", body, request)

    async def generated(kind: Literal["chat", "text"], body: Generating, request: Request):
        ident, created = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid4().hex}", int(time.time())
        stack = AsyncExitStack()
        # every check, the retrieval and the queueing happen before a byte is sent: a refusal is an
        # HTTP status, not an error inside a stream
        call = await stack.enter_async_context(calls.generation(body.request(), None, stream=body.stream))
        if not body.stream:
            async with stack:
                result = await until_disconnected(request, call.result())
                return completion_body(kind, call, result, ident, created)
        return StreamingResponse(streamed(kind, body, call, stack, ident, created), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def streamed(kind, body: Generating, call: Call, stack: AsyncExitStack, ident: str,
                       created: int) -> AsyncIterator[bytes]:
        async with stack:  # a client that goes away cancels this, which stops the generation
            try:
                if kind == "chat":
                    yield sse(chunk_body(kind, call, ident, created, text="", first=True))
                async for delta in call.sink.deltas():
                    yield sse(chunk_body(kind, call, ident, created, text=delta))
                result = await call.result()
            except tuple(ERRORS) as exc:  # after the 200 was sent: the error is the stream's last event
                yield sse(error_of(exc)[1])
                return
            last = chunk_body(kind, call, ident, created, finish=FINISH.get(result.finish, "stop"))
            if call.citations:
                last["citations"] = [citation(hit) for hit in call.citations]
            yield sse(last)
            if body.include_usage:
                yield sse(chunk_body(kind, call, ident, created) | {"choices": [], "usage": usage(result)})
            yield sse("[DONE]")

    @api.post("/v1/embeddings", dependencies=guarded)
    async def embeddings(body: EmbeddingRequest) -> dict:
        if embedder is None:
            raise Unavailable("this server has no embedding model")
        if body.model != embedder.name:
            raise UnknownVersion(f"the embedding model is {embedder.name!r}, not {body.model!r}")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not 1 <= len(texts) <= MAX_EMBEDDING_INPUTS:
            raise InvalidArgument(f"input: 1 to {MAX_EMBEDDING_INPUTS} texts, not {len(texts)}")
        if empty := [i for i, text in enumerate(texts) if not text.strip()]:
            raise InvalidArgument(f"input[{empty[0]}]: must not be empty")
        if body.dimensions is not None and body.dimensions != embedder.dim:
            raise InvalidArgument(f"dimensions: this model gives {embedder.dim}, not {body.dimensions}")
        embed = embedder.queries if body.input_type == "query" else embedder.passages
        vectors, tokens = await asyncio.to_thread(lambda: (embed(texts), embedder.tokens(texts)))
        vectors = np.asarray(vectors, dtype="<f4")
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.tobytes()).decode() if body.encoding_format == "base64"
                 else v.tolist()} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": embedder.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def model_object(ident: int | str, card: ModelCard | None) -> dict:
        created = int(card.created_at.timestamp()) if card is not None and card.created_at else 0
        return {"id": ident if isinstance(ident, str) else model_name(ident), "object": "model",
                "created": created, "owned_by": "afina",
                "version": card.version if card else None, "base_model": card.base_model if card else None}

    return api


class Refused(Exception):
    def __init__(self, status: int, body: dict) -> None:
        self.status, self.body = status, body


class ClientGone(Exception):
    """The client hung up before its answer was ready."""


class Measured:
    """The request metrics (by route and status), and the body size limit. Plain ASGI, so that a
    stream is measured to its end and a client's hang-up reaches the endpoint."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > MAX_REQUEST_BYTES:
                too_big = error_body(f"the request body is {int(length)} bytes, more than the {MAX_REQUEST_BYTES} "
                                     "allowed", "invalid_request_error")
                await JSONResponse(too_big, status_code=413)(scope, receive, sending)
            else:
                await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")  # set by the router once a route matched
            path = getattr(route, "path", "other")
            metrics.HTTP_REQUESTS.labels(path, str(status)).inc()
            metrics.HTTP_SECONDS.labels(path).observe(time.perf_counter() - started)


async def until_disconnected(request: Request, result) -> Result:
    """The call's result, or ClientGone once the client hangs up (its generation then stops)."""
    result = asyncio.ensure_future(result)

    async def hung_up() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(hung_up())
    try:
        await asyncio.wait({result, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not result.done():
        result.cancel()
        raise ClientGone("the client closed the connection before the answer was ready")
    return result.result()


# -- the server -----------------------------------------------------------------------------------------
class EmbeddedServer(uvicorn.Server):
    """uvicorn on the inference process's own event loop: the process handles signals itself."""

    @contextmanager
    def capture_signals(self):
        yield


def bind(address: str) -> socket.socket:
    """The listening socket (bound here, so a port in use fails the start with a clear error)."""
    host, _, port = address.rpartition(":")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), int(port)))
    except OSError as exc:
        sock.close()
        raise OSError(f"the OpenAI-compatible API cannot listen on {address} "
                      f"(AFINA_INFERENCE_HTTP_ADDRESS): {exc.strerror}") from exc
    sock.listen(512)
    sock.setblocking(False)
    return sock


def server(settings: Settings, calls: Calls, embedder: Embedder | None) -> EmbeddedServer:
    s = settings.inference
    config = uvicorn.Config(app(settings, calls, embedder), log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=DRAIN_S, server_header=False,
                            ssl_certfile=str(s.tls_cert) if s.tls_cert else None,
                            ssl_keyfile=str(s.tls_key) if s.tls_key else None)
    return EmbeddedServer(config)
