"""The inference service as a real process (`afina serve`) on the real MinIO registry and Kafka, with
the tiny base model and LoRA adapters made here: generation, streaming, the models, hot swap under
concurrent calls, every error status, auth and TLS, health, reflection (grpcurl), metrics, drain.

Three servers, one per group of scenarios: `serving` (plain, the common calls and the hot swap),
`starting` (a registry that is not reachable at first; a one-place queue; SIGTERM at the end) and
`secured` (TLS and a bearer token)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services import registry
from services.inference import client
from services.settings import Settings
from services.storage import minio_client
from services.tuning import promotion
from tests.integration.harness import (
    AFINA,
    Server,
    ensure_champion_tokenizer,
    forget_versions,
    free_port,
    inference_server,
    register_adapter,
    wait_for_log,
)

pytestmark = pytest.mark.integration

pb, pb_grpc = client.pb, client.pb_grpc
ROOT = Path(__file__).resolve().parents[2]
LISTENING = '"msg": "inference listening"'
EOS, STOP_SEQUENCE, LENGTH = 1, 2, 3


def generate(stub, prompt: str = "La empresa", metadata=(), timeout: float = 60, **fields):
    return stub.Generate(client.request(prompt, **fields), timeout=timeout, metadata=metadata)


def error_of(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as failed:
        call()
    return failed.value


# -- serving: a plain server, the common calls and the hot swap ----------------------------------------
@pytest.fixture(scope="module")
def champion(local_stack) -> int:
    ensure_champion_tokenizer(local_stack)
    return registry.alias_version(minio_client(local_stack))


@pytest.fixture(scope="module")
def serving(local_stack, champion, tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("inference") / "serving.log"
    # the alias is checked rarely: a swap in these tests comes from the ModelPromoted event
    with inference_server(local_stack, log, AFINA_INFERENCE_ALIAS_CHECK_S="3600") as server:
        yield server


def test_generate_answers_with_the_champion_and_says_how_it_went(serving, champion):
    stub = serving.stub()
    answer = generate(stub, max_new_tokens=12, seed=5)
    assert answer.model_version == champion
    assert answer.finish_reason in (EOS, LENGTH) and 1 <= answer.usage.completion_tokens <= 12
    assert answer.usage.prompt_tokens >= 1 and answer.text
    assert 0 < answer.timings.first_token_ms <= answer.timings.total_ms
    assert answer.timings.generation_ms > 0 and answer.timings.queued_ms >= 0
    assert generate(stub, max_new_tokens=12, seed=5).text == answer.text  # seeded: the same text again
    long = generate(stub, max_new_tokens=20, ignore_eos=True, temperature=0)
    assert (long.finish_reason, long.usage.completion_tokens) == (LENGTH, 20)
    chat = stub.Generate(client.request(chat=[("system", "Eres útil."), ("user", "¿Dónde está la sede?")],
                                        max_new_tokens=16, seed=1), timeout=60)
    assert chat.usage.prompt_tokens > 10 and chat.finish_reason in (EOS, LENGTH)


def test_a_stop_sequence_ends_the_text_before_it(serving):
    stub = serving.stub()
    full = generate(stub, max_new_tokens=30, temperature=0, ignore_eos=True).text
    stop = full[len(full) // 2:len(full) // 2 + 2]
    cut = generate(stub, max_new_tokens=30, temperature=0, ignore_eos=True, stop=[stop])
    assert (cut.finish_reason, cut.text) == (STOP_SEQUENCE, full[:full.find(stop)])


def test_the_stream_sends_deltas_that_add_up_to_the_same_text(serving, champion):
    stub = serving.stub()
    request = dict(max_new_tokens=24, seed=11, ignore_eos=True)
    messages = list(stub.GenerateStream(client.request("La empresa", **request), timeout=60))
    *deltas, last = messages
    assert len(deltas) >= 2 and all(m.finish_reason == 0 for m in deltas)
    assert last.finish_reason == LENGTH and last.usage.completion_tokens == 24 and last.timings.total_ms > 0
    assert {m.model_version for m in messages} == {champion}
    assert "".join(m.delta for m in messages) == generate(stub, **request).text


def test_models_are_listed_with_the_champion_and_what_is_loaded(serving, champion):
    stub = serving.stub()
    listed = {m.version: m for m in stub.ListModels(pb.ListModelsRequest(), timeout=30).models}
    assert listed[champion].champion and listed[champion].loaded
    assert sum(m.champion for m in listed.values()) == 1
    one = stub.GetModel(pb.GetModelRequest(), timeout=30)
    assert (one.version, one.champion) == (champion, True)
    assert stub.GetModel(pb.GetModelRequest(version=0), timeout=30).kind == "base"
    missing = error_of(lambda: stub.GetModel(pb.GetModelRequest(version=10**6), timeout=30))
    assert missing.code() == grpc.StatusCode.NOT_FOUND and "no model version 1000000" in missing.details()


@pytest.mark.parametrize(("fields", "named"), [
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(max_new_tokens=100_000), "max_new_tokens"),
    (dict(stop=[""]), "stop[0]"),
    (dict(prompt="palabra " * 200), "prompt: "),  # longer than AFINA_INFERENCE_MAX_PROMPT_TOKENS=64
    (dict(prompt=""), "prompt"),
    (dict(chat=[("robot", "hola")]), "chat.messages[0].role"),
])
def test_bad_requests_are_invalid_arguments_that_name_the_field(serving, fields, named):
    request = client.request(fields.pop("prompt", "La empresa"), chat=fields.pop("chat", None), **fields)
    refused = error_of(lambda: serving.stub().Generate(request, timeout=30))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT and refused.details().startswith(named)
    streamed = error_of(lambda: list(serving.stub().GenerateStream(request, timeout=30)))
    assert streamed.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_unknown_version_is_not_found(serving):
    refused = error_of(lambda: generate(serving.stub(), model_version=10**6))
    assert refused.code() == grpc.StatusCode.NOT_FOUND and "no model version 1000000" in refused.details()


def test_the_command_line_client_generates_and_streams(serving):
    env = {**os.environ, "AFINA_INFERENCE_ADDRESS": serving.address}
    for extra in ([], ["--stream"]):
        done = subprocess.run([AFINA, "generate", "La empresa", "--max-new-tokens", "8", "--seed", "3", *extra],
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.strip(), done.stderr
        assert "tokens" in done.stderr and "[v" in done.stderr
    refused = subprocess.run([AFINA, "generate", "x", "--temperature", "-2"], env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "INVALID_ARGUMENT: temperature" in refused.stderr


def grpcurl(settings: Settings) -> str:
    tool = settings.state_dir / "tools" / "grpcurl"
    if not tool.exists():  # `make setup` builds it; a plain pytest run builds it here
        subprocess.run(["make", "-s", "grpcurl"], cwd=ROOT, check=True, timeout=600)
    return str(tool)


def test_reflection_lets_grpcurl_list_the_service_and_call_generate(serving, local_stack, champion):
    tool = grpcurl(local_stack)
    listed = subprocess.run([tool, "-plaintext", serving.address, "list"], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert {"afina.v1.InferenceService", "grpc.health.v1.Health"} <= set(listed.stdout.split())
    described = subprocess.run([tool, "-plaintext", serving.address, "describe", "afina.v1.GenerateRequest"],
                               capture_output=True, text=True, timeout=30)
    assert "max_new_tokens" in described.stdout and "model_version" in described.stdout
    called = subprocess.run([tool, "-plaintext", "-d", '{"prompt": "La empresa", "max_new_tokens": 6, "seed": 2}',
                             serving.address, "afina.v1.InferenceService/Generate"],
                            capture_output=True, text=True, timeout=30)
    assert called.returncode == 0, called.stderr
    answer = json.loads(called.stdout)
    assert answer["finish_reason"] in ("FINISH_REASON_EOS", "FINISH_REASON_LENGTH")
    assert int(answer.get("model_version", 0)) == champion and int(answer["usage"]["completion_tokens"]) >= 1


@dataclass
class Answered:
    started: float
    ended: float
    version: int | None
    error: str | None


def test_a_promoted_version_is_swapped_in_during_concurrent_calls_without_a_failure(serving, local_stack, champion):
    older, newer = register_adapter(local_stack, seed=1), register_adapter(local_stack, seed=2)
    answered: list[Answered] = []
    stop = threading.Event()

    def caller(seed: int) -> None:
        stub = serving.stub()
        while not stop.is_set():
            started = time.monotonic()
            try:
                version, error = generate(stub, max_new_tokens=4, seed=seed, timeout=30).model_version, None
            except grpc.RpcError as exc:
                version, error = None, f"{exc.code().name}: {exc.details()}"
            answered.append(Answered(started, time.monotonic(), version, error))

    try:
        stub = serving.stub()
        greedy = dict(max_new_tokens=16, temperature=0, ignore_eos=True)
        # a version that is not loaded is loaded for the call that names it
        assert generate(stub, model_version=older, **greedy).model_version == older
        callers = [threading.Thread(target=caller, args=(seed,)) for seed in range(4)]
        for thread in callers:
            thread.start()
        time.sleep(1.0)
        # a long call in flight when the champion moves, read as it streams (its messages' arrival times)
        in_flight = stub.GenerateStream(client.request("La empresa", max_new_tokens=400, ignore_eos=True, seed=9),
                                        timeout=120)
        first = next(in_flight)
        streamed: list[tuple[float, object]] = []
        reader = threading.Thread(target=lambda: streamed.extend((time.monotonic(), m) for m in in_flight))
        reader.start()
        asyncio.run(promotion.promote(local_stack, newer))  # alias moved, ModelPromoted on Kafka
        moved = time.monotonic()
        deadline = time.monotonic() + 60
        while not any(a.version == newer for a in answered) and time.monotonic() < deadline:
            time.sleep(0.1)
        reader.join(120)
        rest = [message for _, message in streamed]
        time.sleep(1.0)
        stop.set()
        for thread in callers:
            thread.join(60)

        assert [a.error for a in answered if a.error] == []
        swapped = min((a.ended for a in answered if a.version == newer), default=None)
        assert swapped is not None, "the promoted version never answered"
        assert {a.version for a in answered if a.started < swapped} <= {champion, newer}
        assert all(a.version == newer for a in answered if a.started > swapped)
        assert sum(a.version == champion for a in answered) > 0 and sum(a.version == newer for a in answered) > 0
        # the call in flight when the alias moved (still streaming after) finished on the version it began with
        assert streamed[-1][0] > moved, "the long call ended before the alias moved: it tested nothing"
        assert {first.model_version, *(m.model_version for m in rest)} == {champion}
        assert rest[-1].finish_reason == LENGTH and rest[-1].usage.completion_tokens == 400
        # older versions are still there, on the same base: each answers as itself
        texts = {v: generate(stub, model_version=v, **greedy) for v in (champion, older, newer)}
        assert {v: a.model_version for v, a in texts.items()} == {v: v for v in texts}
        assert len({a.text for a in texts.values()}) == 3  # three different models
        assert generate(stub, **greedy).text == texts[newer].text  # the default is the new champion
        assert serving.metric("afina_inference_serving_version") == newer
        assert "serving a new champion" in serving.log.read_text()
    finally:
        stop.set()
        forget_versions(local_stack, [older, newer], champion)


def test_a_rejected_candidate_is_not_served_to_a_call_that_names_it(serving, local_stack):
    rejected = register_adapter(local_stack, seed=3, status="rejected")
    try:
        refused = error_of(lambda: generate(serving.stub(), model_version=rejected, max_new_tokens=2))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "the gate rejected" in refused.details() and "AFINA_INFERENCE_SERVE_CANDIDATES" in refused.details()
        listed = {m.version: m for m in serving.stub().ListModels(pb.ListModelsRequest(), timeout=10).models}
        assert not listed[rejected].loaded
    finally:
        forget_versions(local_stack, [rejected], registry.alias_version(minio_client(local_stack)))


def test_a_champion_whose_adapter_files_are_gone_is_not_switched_to(serving, local_stack, champion):
    """Its card says promoted but its adapter is missing: the server keeps serving the champion it
    has (before, it switched to a version it had not loaded and every call failed)."""
    broken = register_adapter(local_stack, seed=4, files=False)
    served = generate(serving.stub(), max_new_tokens=2).model_version  # (an earlier test's champion, maybe)
    try:
        asyncio.run(promotion.promote(local_stack, broken))
        wait_for_log(serving.log, f"version {broken} has no adapter files", timeout_s=60)
        answer = generate(serving.stub(), max_new_tokens=2)
        assert answer.model_version == served and answer.usage.completion_tokens >= 1
        assert health_of(serving.address) == health_pb2.HealthCheckResponse.SERVING
    finally:
        forget_versions(local_stack, [broken], champion)


def test_a_version_loads_while_a_stream_of_calls_keeps_the_batch_busy(serving, local_stack):
    """Six callers keep the running batch fed; a call naming a version that is not loaded gets it
    loaded at once (before, the load waited behind a batch that never ended)."""
    other = register_adapter(local_stack, seed=5)
    stop = threading.Event()
    answered: list[int] = []

    def caller(seed: int) -> None:
        stub = serving.stub()
        while not stop.is_set():
            answered.append(generate(stub, max_new_tokens=16 + 24 * seed, ignore_eos=True, seed=seed,
                                     timeout=60).model_version)

    # calls of different lengths, one after the other: the batch they share is never empty
    callers = [threading.Thread(target=caller, args=(seed,)) for seed in range(6)]
    try:
        for thread in callers:
            thread.start()
        time.sleep(1.0)
        assert answered, "the callers are not being answered"
        started = time.monotonic()
        assert generate(serving.stub(), model_version=other, max_new_tokens=2, timeout=20).model_version == other
        waited = time.monotonic() - started
        calls_during = len(answered)
    finally:
        stop.set()
        for thread in callers:
            thread.join(60)
        forget_versions(local_stack, [other], registry.alias_version(minio_client(local_stack)))
    assert waited < 20 and calls_during > 0


# -- starting: health, no model yet, a full queue, cancelled calls, metrics, drain on SIGTERM ----------
class Forwarder:
    """A TCP forwarder to MinIO that starts when told: the registry is unreachable until then."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self._listener: socket.socket | None = None

    def start(self) -> None:
        if self._listener is None:
            self._listener = socket.create_server(("127.0.0.1", self.port))
            threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()


@pytest.fixture(scope="module")
def starting(local_stack, champion, tmp_path_factory) -> Iterator[tuple[Server, Forwarder]]:
    host, port = local_stack.s3_endpoint.rsplit(":", 1)
    forwarder = Forwarder(free_port(), (host, int(port)))
    log = tmp_path_factory.mktemp("inference") / "starting.log"
    try:
        with inference_server(local_stack, log, ready=LISTENING, AFINA_S3_ENDPOINT=f"127.0.0.1:{forwarder.port}",
                              AFINA_INFERENCE_MAX_BATCH="1", AFINA_INFERENCE_MAX_QUEUE="1") as server:
            yield server, forwarder
    finally:
        forwarder.close()


def health_of(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status


def wait_serving(server: Server, forwarder: Forwarder, timeout_s: float = 90) -> None:
    forwarder.start()
    deadline = time.monotonic() + timeout_s
    while health_of(server.address) != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, f"never SERVING:\n{server.log.read_text()[-2000:]}"
        time.sleep(0.2)


def test_without_a_model_calls_are_unavailable_and_health_flips_to_serving_once_loaded(starting):
    server, forwarder = starting
    assert health_of(server.address) == health_pb2.HealthCheckResponse.NOT_SERVING
    refused = error_of(lambda: generate(server.stub()))
    assert refused.code() == grpc.StatusCode.UNAVAILABLE and "no model is loaded yet" in refused.details()
    assert server.metric("afina_inference_serving_version") == -1
    wait_serving(server, forwarder)  # the registry is reachable now: the champion loads
    assert generate(server.stub(), max_new_tokens=4).usage.completion_tokens >= 1


def test_a_full_queue_refuses_with_resource_exhausted(starting):
    server, forwarder = starting
    wait_serving(server, forwarder)
    outcomes: list[str] = []

    def call() -> None:
        try:
            generate(server.stub(), max_new_tokens=200, ignore_eos=True)
            outcomes.append("OK")
        except grpc.RpcError as exc:
            outcomes.append(exc.code().name)

    threads = [threading.Thread(target=call) for _ in range(6)]  # one generating, one waiting, the rest refused
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert outcomes.count("OK") >= 2 and outcomes.count("RESOURCE_EXHAUSTED") >= 1
    assert set(outcomes) <= {"OK", "RESOURCE_EXHAUSTED"}


def test_calls_waiting_for_a_load_are_bounded_by_the_queue_limit(starting, local_stack):
    server, forwarder = starting
    wait_serving(server, forwarder)
    version = register_adapter(local_stack, seed=6)
    outcomes: list[str] = []

    def call() -> None:
        try:
            generate(server.stub(), model_version=version, max_new_tokens=2)
            outcomes.append("OK")
        except grpc.RpcError as exc:
            outcomes.append(f"{exc.code().name}: {exc.details()}")

    threads = [threading.Thread(target=call) for _ in range(6)]  # a queue of one: one waits for the load
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        forget_versions(local_stack, [version], registry.alias_version(minio_client(local_stack)))
    refused = [o for o in outcomes if o != "OK"]
    assert "OK" in outcomes and refused, outcomes
    assert all(o.startswith("RESOURCE_EXHAUSTED") and "waiting for versions to load" in o for o in refused), outcomes


def test_an_expired_deadline_or_a_cancelled_call_stops_its_generation(starting):
    server, forwarder = starting
    wait_serving(server, forwarder)
    before = server.metric("afina_inference_generated_tokens_total")
    late = error_of(lambda: generate(server.stub(), max_new_tokens=480, ignore_eos=True, timeout=0.3))
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    stream = server.stub().GenerateStream(client.request("La empresa", max_new_tokens=480, ignore_eos=True), timeout=60)
    next(stream)
    stream.cancel()
    time.sleep(1.0)  # both have stopped: a next call is served at once, and few tokens were made
    assert generate(server.stub(), max_new_tokens=2, ignore_eos=True).usage.completion_tokens == 2
    assert server.metric("afina_inference_generated_tokens_total") - before < 480 + 2
    cancelled = server.metrics()
    assert 'code="DEADLINE_EXCEEDED"' in cancelled and 'code="CANCELLED"' in cancelled


def test_metrics_tell_calls_latency_tokens_queue_batches_and_the_version(starting, champion):
    server, forwarder = starting
    wait_serving(server, forwarder)
    generate(server.stub(), max_new_tokens=3)
    text = server.metrics()
    for name in ("afina_inference_calls_total", "afina_inference_call_seconds_bucket", "afina_inference_queue_depth",
                 "afina_inference_batch_size_bucket", "afina_inference_generated_tokens_total",
                 "afina_inference_tokens_per_second", "afina_inference_first_token_seconds_bucket"):
        assert name in text
    assert 'afina_inference_calls_total{code="OK",method="Generate"}' in text
    assert server.metric("afina_inference_serving_version") == champion


def test_sigterm_drains_the_calls_in_flight_then_exits(starting):
    server, forwarder = starting
    wait_serving(server, forwarder)
    stream = server.stub().GenerateStream(client.request("La empresa", max_new_tokens=300, ignore_eos=True),
                                          timeout=120)
    next(stream)
    server.proc.send_signal(signal.SIGTERM)
    rest = list(stream)  # the call goes on to its end
    assert rest[-1].finish_reason == LENGTH and rest[-1].usage.completion_tokens == 300
    assert server.proc.wait(30) == 0
    log = server.log.read_text()
    assert "draining calls in flight" in log and "inference stopped" in log
    refused = error_of(lambda: generate(server.stub(), timeout=5))
    assert refused.code() == grpc.StatusCode.UNAVAILABLE


# -- secured: TLS and a bearer token -------------------------------------------------------------------
def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "afina test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "server.crt", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture(scope="module")
def secured(local_stack, champion, tmp_path_factory) -> Iterator[tuple[Server, Path]]:
    folder = tmp_path_factory.mktemp("inference-tls")
    cert, key = self_signed(folder)
    with inference_server(local_stack, folder / "secured.log", AFINA_INFERENCE_TOKEN="s3cret",
                          AFINA_INFERENCE_TLS_CERT=str(cert), AFINA_INFERENCE_TLS_KEY=str(key)) as server:
        yield server, cert


def test_with_a_token_calls_without_it_are_unauthenticated(secured):
    server, cert = secured
    stub = server.stub(client.channel(server.address, ca=cert))
    for metadata in ((), client.metadata("wrong")):
        refused = error_of(lambda: generate(stub, metadata=metadata))
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in refused.details()
        refused = error_of(lambda: list(stub.GenerateStream(client.request("x"), metadata=metadata, timeout=30)))
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        refused = error_of(lambda: stub.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=30))
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    answer = generate(stub, metadata=client.metadata("s3cret"), max_new_tokens=4)
    assert answer.usage.completion_tokens >= 1
    # health needs no token (probes), and answers over TLS
    with client.channel(server.address, ca=cert) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert 'code="UNAUTHENTICATED"' in server.metrics()


def test_with_tls_a_plain_client_cannot_talk_and_the_cli_can_with_the_ca(secured):
    server, cert = secured
    plain = error_of(lambda: generate(server.stub(), metadata=client.metadata("s3cret"), timeout=5))
    assert plain.code() == grpc.StatusCode.UNAVAILABLE
    env = {**os.environ, "AFINA_INFERENCE_ADDRESS": server.address, "AFINA_INFERENCE_TOKEN": "s3cret"}
    done = subprocess.run([AFINA, "generate", "La empresa", "--max-new-tokens", "4", "--ca", str(cert)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    env.pop("AFINA_INFERENCE_TOKEN")
    refused = subprocess.run([AFINA, "generate", "La empresa", "--ca", str(cert)], env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr


def test_with_tls_the_openai_compatible_api_is_https_with_the_same_token(secured):
    server, cert = secured
    https = server.http.replace("http://", "https://")
    token = {"authorization": "Bearer s3cret"}
    assert httpx.get(f"{https}/models", headers=token, verify=str(cert), timeout=10).json()["data"][0]["id"] == "champion"
    assert httpx.get(f"{https}/models", verify=str(cert), timeout=10).status_code == 401
    with pytest.raises(httpx.TransportError):  # plain HTTP is not served
        httpx.get(f"{server.http}/models", headers=token, timeout=5)
