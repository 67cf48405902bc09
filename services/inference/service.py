"""The inference service: afina.v1.InferenceService over gRPC (grpc.aio), with grpc.health.v1 and
server reflection beside it.

A thin adapter: requests are checked (params.py), held on a model version (models.py), queued and
generated in batches (engine.py, generation.py); this module maps that onto gRPC calls and status
codes, follows the champion (ModelPromoted from Kafka, and the alias every so often in case an
event was missed), checks the optional bearer token, and drains calls on SIGTERM.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from uuid import uuid4

import grpc
from faststream.kafka import KafkaMessage
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from services import registry
from services.contracts import InvalidEvent, ModelPromoted, Topic, parse_event
from services.inference import metrics, openai_api, stubs
from services.inference.batching import QueueFull
from services.inference.calls import DRAIN_S, MAX_REQUEST_BYTES, Calls, DeadlineExceeded
from services.inference.generation import Result
from services.inference.models import (
    LoadFailed,
    Models,
    NotServable,
    OtherBase,
    Registry,
    Unavailable,
    UnknownVersion,
)
from services.inference.params import (
    InvalidArgument,
    parse_retrieve,
)
from services.lifecycle import retry_forever, run_until_stopped
from services.messaging import kafka_broker
from services.registry import ModelCard
from services.retrieval import embed
from services.retrieval.index import Hit, IncompatibleIndex, PassageIndex
from services.settings import Settings
from services.storage import minio_client

log = logging.getLogger("afina.inference")
pb, pb_grpc = stubs.load()

SERVICE = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name
MAX_RESPONSE_BYTES = 4 << 20


STATUS: dict[type[BaseException], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownVersion: grpc.StatusCode.NOT_FOUND,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    OtherBase: grpc.StatusCode.FAILED_PRECONDITION,
    NotServable: grpc.StatusCode.FAILED_PRECONDITION,
    LoadFailed: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    IncompatibleIndex: grpc.StatusCode.FAILED_PRECONDITION,
}


class Servicer(pb_grpc.InferenceServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.models = calls.models

    async def Generate(self, request, context):
        async with self._answering("Generate", context), self._generation(request, context, stream=False) as call:
            result = await call.result()
            return pb.GenerateResponse(text=result.text, finish_reason=int(result.finish), usage=_usage(result),
                                       model_version=call.version, timings=pb.Timings(**call.timings_ms(result)),
                                       citations=[_passage(hit) for hit in call.citations])

    async def GenerateStream(self, request, context):
        async with self._answering("GenerateStream", context), self._generation(request, context, stream=True) as call:
            async for delta in call.sink.deltas():
                yield pb.GenerateStreamResponse(delta=delta, model_version=call.version)
            result = await call.result()
            yield pb.GenerateStreamResponse(model_version=call.version, finish_reason=int(result.finish),
                                            usage=_usage(result), timings=pb.Timings(**call.timings_ms(result)),
                                            citations=[_passage(hit) for hit in call.citations])

    async def Retrieve(self, request, context):
        async with self._answering("Retrieve", context):
            hits = await self.calls.retrieve(parse_retrieve(request, self.calls.limits))
            return pb.RetrieveResponse(passages=[_passage(hit) for hit in hits])

    async def ListModels(self, request, context):
        async with self._answering("ListModels", context):
            cards = await asyncio.to_thread(self.models.registry.cards)
            return pb.ListModelsResponse(models=[self._model(card) for card in cards])

    async def GetModel(self, request, context):
        async with self._answering("GetModel", context):
            version = request.version if request.HasField("version") else self.models.champion
            if version is None:
                raise Unavailable("no model is loaded yet; the server is still starting")
            card = await asyncio.to_thread(self.models.registry.card, version)
            if card is None:
                raise UnknownVersion(f"there is no model version {version} in the registry")
            return self._model(card)

    def _model(self, card: ModelCard) -> pb.Model:
        return pb.Model(
            version=card.version, kind=card.kind, base_model=card.base_model, base_version=card.base_version,
            champion=card.version == self.models.champion, loaded=card.version in self.models.loaded(),
            snapshot_id=card.snapshot_id or "", metrics=card.metrics,
        )

    def _generation(self, request, context, stream: bool):
        return self.calls.generation(request, context.time_remaining(), stream)

    @asynccontextmanager
    async def _answering(self, method: str, context) -> AsyncIterator[None]:
        """Status codes for what went wrong, and the call metrics."""
        started, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            yield
        except tuple(STATUS) as exc:
            code = next(c for kind, c in STATUS.items() if isinstance(exc, kind))
            await context.abort(code, str(exc))
        except (asyncio.CancelledError, GeneratorExit):  # the caller went away, or its deadline passed
            remaining = context.time_remaining()
            code = grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else \
                grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code = grpc.StatusCode.INTERNAL
            log.exception("call failed", extra={"method": method})
            await context.abort(code, f"generation failed: {exc!r}")
        finally:
            metrics.CALLS.labels(method, code.name).inc()
            metrics.CALL_SECONDS.labels(method).observe(time.perf_counter() - started)


def _passage(hit: Hit):
    return pb.Passage(text=hit.text, source_id=hit.source_id, chunk=hit.chunk, score=hit.score, passage=hit.passage,
                      section=hit.section, sha256=hit.sha256, language=hit.language, stability=hit.stability,
                      page=hit.page or 0)


def _usage(result: Result):
    return pb.Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)


class BearerToken(grpc.aio.ServerInterceptor):
    """Every call but health checks needs the metadata ``authorization: Bearer <token>``."""

    OPEN = ("/grpc.health.v1.Health/",)

    def __init__(self, token: str) -> None:
        self.expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(self.OPEN) or self._allowed(details.invocation_metadata):
            return handler
        metrics.CALLS.labels(details.method.rsplit("/", 1)[-1], grpc.StatusCode.UNAUTHENTICATED.name).inc()
        return _refusing(handler)

    def _allowed(self, metadata) -> bool:
        sent = next((v for k, v in metadata or () if k == "authorization"), "")
        return hmac.compare_digest(sent.encode() if isinstance(sent, str) else sent, self.expected)


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind that answers UNAUTHENTICATED."""
    message = "a bearer token is required: send the metadata 'authorization: Bearer <token>'"

    async def refuse(request_or_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def refuse_stream(request_or_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # an async generator, as streaming handlers are

    kinds = {"unary_unary": grpc.unary_unary_rpc_method_handler, "stream_unary": grpc.stream_unary_rpc_method_handler,
             "unary_stream": grpc.unary_stream_rpc_method_handler,
             "stream_stream": grpc.stream_stream_rpc_method_handler}
    for kind, make in kinds.items():
        if getattr(handler, kind) is not None:
            return make(refuse_stream if kind.endswith("_stream") else refuse,
                        request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)
    return handler


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    cert, key = settings.inference.tls_cert, settings.inference.tls_key
    if (cert is None) != (key is None):
        raise ValueError("AFINA_INFERENCE_TLS_CERT and AFINA_INFERENCE_TLS_KEY go together: set both or neither")
    if cert is None:
        return None
    return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])


class InferenceService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        s3 = minio_client(settings)
        cache = settings.state_dir / "cache" / "models"
        self.models = Models(settings, Registry(
            champion=lambda: registry.alias_version(s3), fetch=lambda version: registry.fetch(s3, version, cache),
            card=lambda version: registry.read_card(s3, version), cards=lambda: registry.cards(s3)))
        # every search reads the table's newest version: a document indexed a moment ago is found
        self.embedder = embed.load(settings.retrieval.embedding_model)
        self.index = PassageIndex(settings, self.embedder, read_consistency_s=0)
        self.health = health.aio.HealthServicer()
        self.broker = kafka_broker(settings, "afina-inference")
        # every replica its own consumer group, from the earliest record: each sees every promotion
        self.group = f"afina-inference-{socket.gethostname()}-{uuid4().hex[:8]}"
        self.broker.subscriber(Topic.MODELS_PROMOTED, group_id=self.group, auto_offset_reset="earliest")(
            self.on_promoted)
        self._promoted: asyncio.Event | None = None
        self.started_at = datetime.now(UTC)
        self.calls = Calls(settings, self.models, self.index)

    def build_server(self) -> tuple[grpc.aio.Server, int]:
        token = self.settings.inference.token
        server = grpc.aio.server(
            interceptors=[BearerToken(token)] if token else [],
            options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                     ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
                     ("grpc.so_reuseport", 0)],  # a second server on the same port fails instead of sharing it
        )
        pb_grpc.add_InferenceServiceServicer_to_server(Servicer(self.calls), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection([SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        credentials = server_credentials(self.settings)
        address = self.settings.inference.address
        port = (server.add_secure_port(address, credentials) if credentials
                else server.add_insecure_port(address))
        return server, port

    async def on_promoted(self, msg: KafkaMessage) -> None:
        # A trigger only: the alias is the truth (a late or repeated event cannot move us back).
        # Every replica reads every record, so an invalid one is logged here, not dead-lettered.
        try:
            event = parse_event(ModelPromoted, msg.body)
        except InvalidEvent as exc:
            log.warning("ignored an invalid record on the promotions topic", extra={"error": str(exc)})
            return
        replayed = event.occurred_at < self.started_at  # (the group starts from the earliest record)
        log.log(logging.DEBUG if replayed else logging.INFO, "promotion announced", extra={"version": event.version})
        self._promoted.set()

    async def _serve_champion(self) -> None:
        await retry_forever(self.models.follow_champion, "loading the champion", log)
        for name in ("", SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("inference serving", extra={"version": self.models.champion})
        while True:
            try:
                await asyncio.wait_for(self._promoted.wait(), self.settings.inference.alias_check_s)
            except TimeoutError:
                pass
            self._promoted.clear()
            try:
                await self.models.follow_champion()
            except Exception as exc:  # noqa: BLE001 (keep serving the current one; try again later)
                log.warning("could not switch to the champion; trying again later", extra={"error": repr(exc)})

    async def _listen(self) -> None:
        await retry_forever(self.broker.start, "connecting to Kafka", log, cleanup=self.broker.stop)
        log.info("listening for promotions", extra={"group": self.group})

    async def run(self) -> None:
        self._promoted = asyncio.Event()
        if self.settings.inference.metrics_port:
            start_http_server(self.settings.inference.metrics_port, addr="127.0.0.1")
        for name in ("", SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        server, port = self.build_server()
        http_address = self.settings.inference.http_address
        http, http_socket = None, openai_api.bind(http_address) if http_address else None
        await server.start()
        tasks = [asyncio.create_task(self._serve_champion()), asyncio.create_task(self._listen())]
        if http_socket is not None:
            http = openai_api.server(self.settings, self.calls, self.embedder)
            tasks.append(asyncio.create_task(http.serve(sockets=[http_socket])))
        log.info("inference listening", extra={"address": self.settings.inference.address, "port": port,
                                                "http": http_address or None,
                                                "tls": self.settings.inference.tls_cert is not None,
                                                "auth": bool(self.settings.inference.token)})
        try:
            await asyncio.Event().wait()  # until SIGTERM or SIGINT cancels this
        finally:
            log.info("draining calls in flight", extra={"grace_s": DRAIN_S})
            await self.health.enter_graceful_shutdown()
            if http is not None:
                http.should_exit = True  # uvicorn stops accepting and waits for the calls it holds
            await server.stop(DRAIN_S)
            if http is not None:
                await asyncio.wait([tasks.pop()], timeout=DRAIN_S)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.broker.stop()
            await self.models.close()


def run(settings: Settings) -> None:
    """Run the inference service until SIGTERM or SIGINT (calls in flight are drained first)."""
    run_until_stopped(InferenceService(settings).run, "inference", log)
