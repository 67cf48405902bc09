"""The retrieval path on real parts: connector, normalizer, indexer and inference as processes on
the real Kafka and MinIO, the passage index a LanceDB table in MinIO.

Every run indexes into a table of its own (AFINA_RETRIEVAL_TABLE), whose indexer group starts
at the end of the normalized topic: the test stack keeps every earlier run's events.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

from services.contracts import DocumentNormalized, Stability, Topic
from services.datasets import parts, snapshots
from services.datasets.listing import list_parts
from services.indexer.service import group
from services.inference import client
from services.messaging import kafka_broker, publish_event
from services.retrieval import embed, passages
from services.retrieval.index import DocumentPassages, Filters, PassageIndex
from services.settings import Settings
from services.storage import minio_client
from tests.integration.harness import (
    AFINA,
    Inbox,
    afina_service,
    ensure_champion_tokenizer,
    inference_server,
    normalizer,
    part_text,
    put_text_part,
    settings_from_env,
)

pytestmark = pytest.mark.integration

TOKEN = "retrieval-secret"
WORDS = ["tienda", "montaña", "cliente", "chaqueta", "botas", "refugio", "sendero", "taller", "socio", "otoño",
         "invierno", "mochila", "cuerda", "saco", "tienda", "camino", "lluvia", "viento", "nieve", "valle"]


def sentences(rng: random.Random, n: int) -> str:
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 14))).capitalize() + "."
                    for _ in range(n))


def start_at_end(settings: Settings, group_id: str) -> None:
    """Commit the group's offsets at the topic's end, as if it had read every earlier event."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group_id,
                             enable_auto_commit=False)
    topic = str(Topic.DOCUMENTS_NORMALIZED)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_end()
    consumer.commit({tp: OffsetAndMetadata(consumer.position(tp), None, -1) for tp in partitions})
    consumer.close()


@pytest.fixture(scope="module")
def retrieval(local_stack, tmp_path_factory):
    """This run's table and settings, and an indexer process filling it."""
    ensure_champion_tokenizer(local_stack)
    env = {"AFINA_STATE_DIR": str(local_stack.state_dir), "AFINA_RETRIEVAL_TABLE": f"t{uuid.uuid4().hex[:12]}",
           "AFINA_RETRIEVAL_OPTIMIZE_S": "5"}
    settings = settings_from_env(env)
    start_at_end(settings, group(settings))
    index = PassageIndex(settings, embed.load(), read_consistency_s=0)
    yield settings, env, index, tmp_path_factory.mktemp("retrieval")


def indexer(env: dict[str, str], log, **more: str):
    from control.localstack.process import free_port

    return afina_service(["indexer"], {**env, "AFINA_RETRIEVAL_METRICS_PORT": str(free_port()), **more}, log,
                         '"msg": "indexer ready"')


def wait_until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return found


def ranked(stub, query: str, token: str | None = TOKEN, **fields):
    return stub.Retrieve(client.pb.RetrieveRequest(query=query, **fields), timeout=30,
                         metadata=client.metadata(token) if token else ())


def test_drop_is_searchable_a_new_version_replaces_it_and_a_delete_removes_it(retrieval):
    settings, env, index, tmp = retrieval
    rng = random.Random(f"drop-{env['AFINA_RETRIEVAL_TABLE']}")
    code = "".join(rng.choice("bcdfgjklmnprstvz") + rng.choice("aeiou") for _ in range(5))  # a word no one else has
    first = f"El código de acceso del almacén es {code}. {sentences(rng, 20)}"
    second = f"{sentences(rng, 12)} La nueva clave del almacén es {code}zeta. {sentences(rng, 6)}"
    inbox = Inbox(settings, tmp / "drop", **env)
    with inbox.connector(), normalizer(settings, tmp, "normalizer-drop", **env), indexer(env, tmp / "indexer-drop.log"), \
            inference_server(settings, tmp / "inference-drop.log", AFINA_INFERENCE_TOKEN=TOKEN, **env) as server:
        stub = server.stub()
        source = inbox.sid("almacen.md")
        only_this = client.pb.RetrieveFilters(source_prefix=source)

        (inbox.dir / "almacen.md").write_text(first)
        found = wait_until(lambda: ranked(stub, f"código {code}", filters=only_this).passages, 120, "the first version")
        assert found[0].source_id == source and code in found[0].text and found[0].stability == "master"
        first_sha = found[0].sha256
        assert index.count(source) == len(passages.from_rows(part_text(settings, _newest(settings, source))[1]))

        (inbox.dir / "almacen.md").write_text(second)
        wait_until(lambda: {p.sha256 for p in ranked(stub, f"{code}zeta", filters=only_this).passages} - {first_sha},
                   120, "the second version")
        rows = index.table.search().where(f"source_id = '{source}'").limit(1000).to_list()
        assert {row["sha256"] for row in rows} != {first_sha} and first_sha not in {row["sha256"] for row in rows}
        assert not [r for r in rows if f"{code}." in r["text"]], "the old version's rows are gone"

        (inbox.dir / "almacen.md").unlink()
        wait_until(lambda: not ranked(stub, f"{code}zeta", filters=only_this).passages, 120, "the deletion")
        assert index.count(source) == 0


def _newest(settings: Settings, source: str) -> str:
    return max(list_parts(minio_client(settings), source), key=lambda p: p.key).key


def test_a_volatile_document_is_searchable_and_absent_from_the_next_snapshot(retrieval):
    settings, env, index, tmp = retrieval
    rng = random.Random(f"volatile-{env['AFINA_RETRIEVAL_TABLE']}")
    inbox = Inbox(settings, tmp / "volatile", **env)
    docs = {"news/boletin.txt": sentences(rng, 15), "politica.txt": sentences(rng, 15),
            "rebajas.md": f"---\nstability: volatile\n---\n# Rebajas\n\n{sentences(rng, 15)}",
            "news/fijo.md": f"---\nstability: master\n---\n{sentences(rng, 15)}"}
    with inbox.connector(), normalizer(settings, tmp, "normalizer-volatile", **env), \
            indexer(env, tmp / "indexer-volatile.log"):
        (inbox.dir / "news").mkdir()
        for name, text in docs.items():
            (inbox.dir / name).write_text(text)
        ids = {inbox.sid(name): name for name in docs}
        wait_until(lambda: all(index.count(s) for s in ids), 180, "every document indexed")
    expected = {inbox.sid("news/boletin.txt"): Stability.VOLATILE, inbox.sid("politica.txt"): Stability.MASTER,
                inbox.sid("rebajas.md"): Stability.VOLATILE, inbox.sid("news/fijo.md"): Stability.MASTER}
    s3 = minio_client(settings)
    for source, stability in expected.items():
        [stored] = list_parts(s3, source)
        assert stored.info.stability is stability, source
        assert {r["stability"] for r in part_text(settings, stored.key)[1]} == {stability}
        assert index.ranked(sentences(random.Random(0), 1), 50, Filters(source_prefix=source, stability=stability))
    keys = {parts.source_key(s): st for s, st in expected.items()}
    frozen = {p.source_key for p in snapshots.current_parts(s3, 10)}
    assert {k for k, st in keys.items() if st is Stability.MASTER} <= frozen
    assert not {k for k, st in keys.items() if st is Stability.VOLATILE} & frozen
    with_volatile = {p.source_key: p.stability for p in snapshots.current_parts(s3, 10, include_volatile=True)}
    assert {k: with_volatile[k] for k in keys} == keys


def _replace_in_step(settings: Settings, rounds: list[list[DocumentPassages]], step) -> None:
    """One writer process: each round's replace starts with the other writer's."""
    index = PassageIndex(settings, embed.load(), writer=True)
    for documents in rounds:
        step.wait()
        index.replace(documents)


def test_two_writers_replacing_the_same_documents_at_once_write_each_passage_once(retrieval):
    """Two indexer replicas writing the same new documents at the same moment (a batch a rebalance
    gave to both). Lance let both inserts commit, and the passages were there twice, until the
    passage id became the table's primary key."""
    settings, env, index, tmp = retrieval
    rng = random.Random(f"two-{env['AFINA_RETRIEVAL_TABLE']}")
    writer = PassageIndex(settings, embed.load(), writer=True)
    rounds = []
    for r in range(4):
        documents = []
        for d in range(3):
            source = f"two-{env['AFINA_RETRIEVAL_TABLE']}:r{r}-d{d}.txt"
            found = passages.from_rows([{"chunk_index": 0, "kind": "text", "text": sentences(rng, 12)}])
            documents.append(DocumentPassages(source, writer.rows(source, parts.source_key(source), "ab" * 32, "es",
                                                                  Stability.MASTER, "text/plain", found)))
        rounds.append(documents)
    writer.table  # created before the race: the race is in the inserts, not in making the table
    context = multiprocessing.get_context("spawn")
    step = context.Barrier(2)
    writers = [context.Process(target=_replace_in_step, args=(settings, rounds, step)) for _ in range(2)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(300)
        assert process.exitcode == 0, "a writer failed: its traceback is above"
    rows = index.table.search().where(f"starts_with(source_id, 'two-{env['AFINA_RETRIEVAL_TABLE']}:')").select(
        ["id"]).limit(100_000).to_list()
    expected = {row["id"] for documents in rounds for doc in documents for row in doc.rows}
    assert sorted(r["id"] for r in rows) == sorted(expected)  # each once


def test_a_killed_indexer_leaves_every_passage_exactly_once(retrieval):
    """Two replicas share the group; one is SIGKILLed mid-stream and started again."""
    settings, env, index, tmp = retrieval
    rng = random.Random(f"kill-{env['AFINA_RETRIEVAL_TABLE']}")
    s3 = minio_client(settings)
    when = datetime.now(UTC)
    expected: dict[str, int] = {}
    events = []
    for i in range(60):
        source = f"kill-{env['AFINA_RETRIEVAL_TABLE']}:doc-{i:02}.txt"
        texts = [sentences(rng, rng.randint(10, 30)) for _ in range(rng.randint(1, 3))]
        key = put_text_part(s3, source, when + timedelta(microseconds=i), texts, [[1]] * len(texts), "v0:abcdefabcdef")
        expected[source] = sum(len(passages.split_text(t)) for t in texts)
        events.append(DocumentNormalized(source_id=source, sha256=parts.sha256_of(key), part_key=key, language="es",
                                         chunks=len(texts), tokens=len(texts)))

    async def publish():
        broker = kafka_broker(settings, "test-retrieval")
        await broker.start()
        for event in events:
            await publish_event(broker, event, key=event.source_id)
        await broker.stop()

    with indexer(env, tmp / "indexer-a.log", AFINA_RETRIEVAL_BATCH="4") as a, \
            indexer(env, tmp / "indexer-b.log", AFINA_RETRIEVAL_BATCH="4"):
        asyncio.run(publish())
        wait_until(lambda: sum(index.count(s) > 0 for s in expected) >= 10, 120, "a few documents indexed")
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        with indexer(env, tmp / "indexer-a2.log", AFINA_RETRIEVAL_BATCH="4"):
            wait_until(lambda: all(index.count(s) == n for s, n in expected.items()), 300, "every document indexed")
    rows = index.table.search().where(f"starts_with(source_id, 'kill-{env['AFINA_RETRIEVAL_TABLE']}:')").select(
        ["id", "source_id"]).limit(100_000).to_list()
    assert len(rows) == sum(expected.values()) and len({r["id"] for r in rows}) == len(rows)


def test_retrieve_and_grounded_generation_over_grpc(retrieval):
    settings, env, index, tmp = retrieval
    rng = random.Random(f"grpc-{env['AFINA_RETRIEVAL_TABLE']}")
    inbox = Inbox(settings, tmp / "grpc", **env)
    fact = "El inventario anual de la tienda de Huesca es el domingo once de enero."
    with inbox.connector(), normalizer(settings, tmp, "normalizer-grpc", **env), indexer(env, tmp / "indexer-grpc.log"), \
            inference_server(settings, tmp / "inference-grpc.log", AFINA_INFERENCE_TOKEN=TOKEN,
                             AFINA_INFERENCE_MAX_PROMPT_TOKENS="500", **env) as server:
        (inbox.dir / "news").mkdir()
        (inbox.dir / "news" / "inventario.txt").write_text(f"{sentences(rng, 3)} {fact} {sentences(rng, 3)}")
        (inbox.dir / "news" / "relleno.txt").write_text(f"Inventario de la tienda de Huesca. {sentences(rng, 40)}")
        source = inbox.sid("news/inventario.txt")
        stub = server.stub()
        filters = client.pb.RetrieveFilters(source_prefix=source, stability="volatile", language="es")
        [best, *_] = wait_until(lambda: ranked(stub, "¿Cuándo es el inventario de Huesca?", filters=filters).passages,
                                120, "the document indexed")
        assert best.source_id == source and fact in best.text and best.score > 0

        with pytest.raises(grpc.RpcError) as refused:
            ranked(stub, "inventario", token=None)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert not ranked(stub, "inventario", filters=client.pb.RetrieveFilters(source_prefix=source,
                                                                                stability="master")).passages
        for fields in ({"query": ""}, {"query": "x" * 2001}, {"query": "x", "k": 0}, {"query": "x", "k": 51}):
            with pytest.raises(grpc.RpcError) as bad:
                stub.Retrieve(client.pb.RetrieveRequest(**fields), timeout=30, metadata=client.metadata(TOKEN))
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields

        question = client.request(chat=[("user", "¿Cuándo es el inventario de Huesca?")], max_new_tokens=8,
                                  temperature=0.0)
        plain = stub.Generate(question, timeout=60, metadata=client.metadata(TOKEN))
        question.retrieval.k = 1
        question.retrieval.filters.source_prefix = source
        answer = stub.Generate(question, timeout=60, metadata=client.metadata(TOKEN))
        assert [c.source_id for c in answer.citations] == [source] and fact in answer.citations[0].text
        assert not plain.citations and answer.usage.prompt_tokens > plain.usage.prompt_tokens + 10
        *_, last = stub.GenerateStream(question, timeout=60, metadata=client.metadata(TOKEN))
        assert [c.source_id for c in last.citations] == [source] and last.finish_reason
        # passages that would overflow the prompt limit (500 tokens) are left out, the worst first
        wait_until(lambda: index.count(inbox.sid("news/relleno.txt")) >= 2, 120, "the long document indexed")
        question.retrieval.k = 3
        question.retrieval.filters.source_prefix = inbox.sid("news/")
        trimmed = stub.Generate(question, timeout=60, metadata=client.metadata(TOKEN))
        assert 1 <= len(trimmed.citations) < 3 and trimmed.usage.prompt_tokens <= 500, trimmed
        with pytest.raises(grpc.RpcError) as unauthenticated:
            stub.Generate(question, timeout=60)
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # the command line: afina search, afina generate --retrieve
        cli_env = {**os.environ, **env, "AFINA_INFERENCE_TOKEN": TOKEN}
        found = subprocess.run([AFINA, "search", "inventario de Huesca", "--source-prefix", source, "--address",
                                server.address], env=cli_env, capture_output=True, text=True, timeout=60)
        assert found.returncode == 0 and source in found.stdout and "once de enero" in found.stdout, found.stderr
        grounded = subprocess.run([AFINA, "generate", "--chat", "--retrieve", "--k", "1", "--max-new-tokens", "4",
                                   "¿Cuándo es el inventario de Huesca?", "--address", server.address],
                                  env=cli_env, capture_output=True, text=True, timeout=60)
        assert grounded.returncode == 0 and f"[1] {source}" in grounded.stderr, grounded.stderr
        empty = subprocess.run([AFINA, "search", " ", "--address", server.address], env=cli_env,
                               capture_output=True, text=True, timeout=60)
        assert empty.returncode == 1 and "INVALID_ARGUMENT: query: must not be empty" in empty.stderr
