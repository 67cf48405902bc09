"""Faults against the real servers while afina's services run as real processes: MinIO or Kafka
stopped and started again mid-stream, and a poison record on every topic afina consumes.

Each test ends by checking the data itself, not only the events: every document dropped is in
exactly one live dataset part, holding its text, and every service is still running.
(Other faults have their tests beside the feature: the dead-letter publish failing in
test_normalizer, two `afina tune` at once in test_tuning, an inbox that disappears in
test_connector, a normalizer SIGKILLed mid-stream in test_normalizer.)
"""

from __future__ import annotations

import io
import random
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaProducer

from control import localstack
from services.connector.service import BUCKET_PREFIX
from services.contracts import Bucket, DocumentNormalized, DocumentRejected, RejectReason, Topic
from services.datasets.listing import list_parts
from services.inference import client
from services.settings import Settings
from services.storage import minio_client
from tests.integration.harness import (
    EventLog,
    Inbox,
    ensure_champion_tokenizer,
    inference_server,
    normalizer,
    part_text,
    wait_for_log,
)

pytestmark = pytest.mark.integration

SYLLABLES = [f"{a}{b}" for a in ("pre", "con", "tra", "des", "inter", "sub", "re", "ex") for b in (
    "venta", "cargo", "forma", "mando", "puesto", "torno", "gasto", "plazo", "grupo", "marca", "curso")]


def documents(seed: str, n: int) -> dict[str, str]:
    """n documents of text no other run has (the test stack keeps every run's dedup index)."""
    rng = random.Random(seed)
    return {f"doc-{i:02}.txt": " ".join(rng.choice(SYLLABLES) for _ in range(150)) for i in range(n)}


def drop(inbox: Inbox, docs: dict[str, str], names: list[str]) -> None:
    for name in names:
        staged = inbox.dir.parent / f".{name}"
        staged.write_text(docs[name])
        staged.replace(inbox.dir / name)  # appears whole, as a finished copy does


def each_in_one_live_part(settings: Settings, texts: dict[str, str]) -> None:
    """Every source id has exactly one part, not a tombstone, and it holds the document's text."""
    s3 = minio_client(settings)
    for source_id, text in texts.items():
        stored = list_parts(s3, source_id)
        assert [part.tombstone for part in stored] == [False], f"{source_id}: {stored}"
        assert part_text(settings, stored[0].key)[0].split() == text.split(), source_id


def outcomes(log: EventLog, source_ids: set[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for event in list(log.events):
        if event.source_id in source_ids:
            found.setdefault(event.source_id, set()).add(type(event).__name__)
    return found


@pytest.mark.parametrize("server", ["minio", "kafka"])
def test_a_server_restarted_mid_stream_loses_no_document_and_writes_none_twice(local_stack, tmp_path, server):
    """Documents dropped before, during and after the outage: the connector's uploads and
    publishes and the normalizer's reads, writes and commits wait for the server and go on."""
    ensure_champion_tokenizer(local_stack)
    inbox = Inbox(local_stack, tmp_path)
    docs = documents(inbox.name, 36)
    names = sorted(docs)
    sources = {inbox.sid(name) for name in names}
    log = EventLog(local_stack, [Topic.DOCUMENTS_NORMALIZED, Topic.DOCUMENTS_REJECTED])
    try:
        with inbox.connector() as connector, normalizer(local_stack, tmp_path) as worker:
            drop(inbox, docs, names[:12])
            log.wait_for(lambda: len(outcomes(log, sources)) >= 3, timeout_s=120, what="the first documents")
            localstack.down(local_stack, only=[server])
            try:
                drop(inbox, docs, names[12:24])
                time.sleep(8)  # the services meet the outage
            finally:
                localstack.up(local_stack, echo=lambda line: None)
            drop(inbox, docs, names[24:])
            log.wait_for(lambda: len(outcomes(log, sources)) == len(sources), timeout_s=300, what="every document")
            assert connector.poll() is None and worker.poll() is None
    finally:
        log.close()
    assert all(kinds == {"DocumentNormalized"} for kinds in outcomes(log, sources).values()), outcomes(log, sources)
    each_in_one_live_part(local_stack, {inbox.sid(name): docs[name] for name in names})
    logs = inbox.log.read_text() + (tmp_path / "normalizer.log").read_text()
    assert "retry" in logs or "Connect call failed" in logs  # the outage was felt, and outlived


def test_a_poison_record_on_every_topic_afina_consumes_stops_nothing_and_loses_nothing(local_stack, tmp_path):
    """Records no afina service wrote, on the five topics its services read: the connector's index
    and the dedup index (read at start-up and followed), the discovered documents (dead-lettered),
    MinIO's inbox notifications and the promotions. Every service keeps running, and documents
    dropped into the folder and the bucket afterwards are normalized."""
    ensure_champion_tokenizer(local_stack)
    inbox = Inbox(local_stack, tmp_path, AFINA_CONNECTOR_WATCH_BUCKET="true")
    poison = f"poison {inbox.name}".encode()
    producer = KafkaProducer(bootstrap_servers=local_stack.kafka_bootstrap_servers)

    def publish(topic: Topic, key: str | None) -> None:
        producer.send(str(topic), key=key.encode() if key else None, value=poison).get(30)

    publish(Topic.CONNECTOR_INDEX, inbox.sid("poison.txt"))  # a key the connector reads as its own
    publish(Topic.DEDUP_SIGNATURES, f"poison-{inbox.name}")
    docs = documents(inbox.name, 2)
    folder_doc, bucket_doc = sorted(docs)
    bucket_key = f"{inbox.name}/{bucket_doc}"
    texts = {inbox.sid(folder_doc): docs[folder_doc], BUCKET_PREFIX + bucket_key: docs[bucket_doc]}
    log = EventLog(local_stack, [Topic.DOCUMENTS_NORMALIZED, Topic.DOCUMENTS_REJECTED])
    try:
        with (inbox.connector() as connector, normalizer(local_stack, tmp_path) as worker,
              inference_server(local_stack, tmp_path / "inference.log") as server):
            publish(Topic.DOCUMENTS_DISCOVERED, inbox.sid("poison.txt"))
            publish(Topic.DOCUMENTS_DISCOVERED, None)  # no key either
            publish(Topic.INBOX_NOTIFICATIONS, None)
            publish(Topic.MODELS_PROMOTED, None)
            wait_for_log(server.log, "ignored an invalid record on the promotions topic")
            wait_for_log(inbox.log, "ignored a record on the notifications topic")

            drop(inbox, docs, [folder_doc])
            data = docs[bucket_doc].encode()
            minio_client(local_stack).put_object(Bucket.INBOX, bucket_key, io.BytesIO(data), len(data))
            log.wait_for(lambda: len(outcomes(log, set(texts))) == 2, timeout_s=120, what="both documents")
            log.wait_for(lambda: sum(1 for e in log.events if isinstance(e, DocumentRejected)
                                     and e.reason == RejectReason.INVALID_EVENT and e.payload == poison.decode()) == 2,
                         what="both poisoned documents records dead-lettered")
            with grpc.insecure_channel(server.address) as channel:
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                answer = server.stub(channel).Generate(client.request("La empresa", max_new_tokens=4), timeout=60)
            assert health.status == health_pb2.HealthCheckResponse.SERVING and answer.text
            assert all(proc.poll() is None for proc in (connector, worker, server.proc))
    finally:
        log.close()
        producer.close()
    assert "skipped a record of afina.connector.index" in inbox.log.read_text()
    assert "skipped a record of afina.dedup.signatures" in (tmp_path / "normalizer.log").read_text()
    assert all(kinds == {"DocumentNormalized"} for kinds in outcomes(log, set(texts)).values())
    assert not any(isinstance(e, DocumentNormalized) and "poison" in e.source_id for e in log.events)
    each_in_one_live_part(local_stack, texts)
