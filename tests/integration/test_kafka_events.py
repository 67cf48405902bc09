"""Contract events over the real Kafka through FastStream: consumer groups, manual acks, dead letters."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
import weakref
from datetime import UTC, datetime

import pytest
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage

from services.contracts import (
    EVENT_TOPICS,
    ChangeKind,
    DocumentDiscovered,
    DocumentNormalized,
    DocumentRejected,
    Event,
    ModelPromoted,
    RejectReason,
    TokenizerId,
    Topic,
)
from services.messaging import (
    BATCH_POLL_MS,
    CompactedTopic,
    TopicMissing,
    commit,
    kafka_broker,
    publish_event,
    read_event,
    read_record,
    subscribe_batches,
)

pytestmark = pytest.mark.integration

SHA = "ab" * 32


def one_of_each(tag: str) -> list[Event]:
    return [
        DocumentDiscovered(
            source_id=f"folder:{tag}/handbook.pdf", kind=ChangeKind.CREATED, sha256=SHA, size=1234,
            media_type="application/pdf", modified_at=datetime.now(UTC),
        ),
        DocumentNormalized(
            source_id=f"folder:{tag}/handbook.pdf", sha256=SHA, part_key=f"parts/{tag}.parquet",
            language="es", media_type="application/pdf", chunks=3, tokens=900, tokenizer=TokenizerId.of(0, b"a test tokenizer"),
        ),
        DocumentRejected(
            source_id=f"folder:{tag}/broken.pdf", sha256=SHA, reason=RejectReason.CORRUPT,
            message="the PDF ends before its cross-reference table", stage="normalizer",
        ),
        ModelPromoted(version=3, previous_version=2, snapshot_id=f"snap-{tag}", base_model="afina-tiny",
                      metrics={"eval_perplexity": 12.5}),
    ]


def collect(broker: KafkaBroker, topic: Topic, model: type[Event], group: str, into: dict) -> None:
    """Subscribe with manual acknowledgement: the offset is committed only by commit(msg)."""

    @broker.subscriber(topic, group_id=group, auto_offset_reset="earliest", ack_policy=AckPolicy.MANUAL)
    async def handle(msg: KafkaMessage) -> None:
        event = await read_event(broker, model, msg)
        if event is not None:
            into[event.event_id] = (event, msg.raw_message.key)
        await commit(msg)


async def wait_for(condition, timeout_s: float = 60, what: str = "Kafka records") -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_each_contract_event_round_trips_and_acks_commit(local_stack):
    group = f"test-roundtrip-{uuid.uuid4()}"
    sent = one_of_each(uuid.uuid4().hex)
    received: dict = {}

    broker = kafka_broker(local_stack, "test-roundtrip")
    for topic, model in EVENT_TOPICS.items():
        collect(broker, topic, model, group, received)
    async with broker:
        await broker.start()
        for event in sent:
            await publish_event(broker, event, key=getattr(event, "source_id", "champion"))
        await wait_for(lambda: all(e.event_id in received for e in sent))

    for event in sent:
        got, key = received[event.event_id]
        assert got == event  # every field survives JSON on the wire, typed
        assert key == getattr(event, "source_id", "champion").encode()

    # Same group again: the acknowledged records are not delivered a second time.
    again: dict = {}
    marker = one_of_each(uuid.uuid4().hex)[0]
    broker = kafka_broker(local_stack, "test-roundtrip-again")
    collect(broker, Topic.DOCUMENTS_DISCOVERED, DocumentDiscovered, group, again)
    async with broker:
        await broker.start()
        await publish_event(broker, marker, key=marker.source_id)
        await wait_for(lambda: marker.event_id in again)
    assert not {e.event_id for e in sent} & set(again)


async def test_invalid_record_is_dead_lettered_with_a_clear_reason(local_stack):
    group = f"test-invalid-{uuid.uuid4()}"
    tag = uuid.uuid4().hex
    good = DocumentDiscovered(source_id=f"folder:{tag}/ok.md", kind=ChangeKind.CREATED, sha256=SHA, size=5)
    bad = b'{"schema_version": 1, "source_id": "folder:x", "kind": "teleported", "sha256": "not-a-hash"}'
    received: dict = {}
    rejected: dict = {}

    broker = kafka_broker(local_stack, "test-invalid")
    collect(broker, Topic.DOCUMENTS_DISCOVERED, DocumentDiscovered, group, received)
    collect(broker, Topic.DOCUMENTS_REJECTED, DocumentRejected, group, rejected)
    async with broker:
        await broker.start()
        bad_meta = await broker.publish(bad, topic=Topic.DOCUMENTS_DISCOVERED, key=tag.encode())
        await publish_event(broker, good, key=good.source_id)
        where = f"{Topic.DOCUMENTS_DISCOVERED}/{bad_meta.partition}/{bad_meta.offset}"
        await wait_for(lambda: good.event_id in received and any(r.source_id == where for r, _ in rejected.values()))

    (dead,) = [r for r, _ in rejected.values() if r.source_id == where]
    assert dead.reason is RejectReason.INVALID_EVENT
    assert dead.stage == "consumer"
    assert "DocumentDiscovered" in dead.message
    assert "kind" in dead.message and "sha256" in dead.message  # names each bad field
    assert dead.payload == bad.decode()
    assert received[good.event_id][0] == good  # the stream kept moving past the bad record


async def test_a_batch_holds_every_record_and_a_nack_rewinds_all_of_it(local_stack):
    """Batches keep every record's bytes (afina's parser skips FastStream's per-record header dicts);
    a nacked batch comes back whole, an acked one never again."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    topic = f"test.batch.{uuid.uuid4().hex}"
    admin = KafkaAdminClient(bootstrap_servers=local_stack.kafka_bootstrap_servers)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    admin.close()
    sent = [DocumentDiscovered(source_id=f"folder:batch/{i}.md", kind=ChangeKind.CREATED, sha256=SHA, size=i)
            for i in range(40)]
    deliveries: list[list[DocumentDiscovered]] = []
    nacked: list[DocumentDiscovered] = []
    acked: set = set()

    broker = kafka_broker(local_stack, "test-batch")

    @broker.subscriber(topic, group_id=f"test-batch-{uuid.uuid4()}", auto_offset_reset="earliest", batch=True,
                       max_records=100, ack_policy=AckPolicy.MANUAL)
    async def handle(msg: KafkaMessage) -> None:
        assert msg.body == [r.value for r in msg.raw_message]
        events = [e for r in msg.raw_message if (e := await read_record(broker, DocumentDiscovered, r))]
        deliveries.append(events)
        if not nacked:
            nacked.extend(events)
            await msg.nack()  # rewind: every record of this batch must come again
            return
        acked.update(e.event_id for e in events)
        await commit(msg)

    async with broker:
        await broker.start()
        for event in sent:
            await publish_event(broker, event, key=event.source_id, topic=topic)
        await wait_for(lambda: {e.event_id for e in sent} <= acked)

    assert nacked and {e.event_id for e in nacked} <= acked
    assert sorted(e.size for batch in deliveries[1:] for e in batch) == list(range(40))  # each once after the nack


async def test_a_committed_batch_is_not_kept_in_memory(local_stack):
    """After commit(msg) and the handler's return, nothing holds the batch: its records are freed.

    (``msg.ack()`` inside the handler armed aiokafka's 40 s request timer in the handler's context,
    which holds the message, so every batch outlived its commit by 40 s.)"""
    topic = f"test.release.{uuid.uuid4().hex}"
    broker = kafka_broker(local_stack, "test-release")
    records: list[weakref.ref] = []
    handled = asyncio.Event()

    @broker.subscriber(topic, group_id=f"test-release-{uuid.uuid4()}", auto_offset_reset="earliest",
                       batch=True, max_records=100, batch_timeout_ms=BATCH_POLL_MS, ack_policy=AckPolicy.MANUAL)
    async def handle(msg: KafkaMessage) -> None:
        records.extend(weakref.ref(r) for r in msg.raw_message)
        await commit(msg)
        handled.set()

    async with broker:
        await broker.start()
        for i in range(5):
            event = DocumentDiscovered(source_id=f"folder:release/{i}.md", kind=ChangeKind.CREATED, sha256=SHA, size=i)
            await publish_event(broker, event, key=event.source_id, topic=topic)
        await asyncio.wait_for(handled.wait(), 60)

        def freed() -> bool:
            gc.collect()
            return all(ref() is None for ref in records)

        # FastStream's consume loop lets go of the batch at its next poll; the timer held it for 40 s
        await wait_for(freed, timeout_s=10, what="the committed batch to be freed")
        assert records


async def test_batches_reach_the_handler_as_typed_events_and_are_committed(local_stack):
    topic = f"test.typed.{uuid.uuid4().hex}"
    group = f"test-typed-{uuid.uuid4()}"
    sent = [DocumentDiscovered(source_id=f"folder:typed/{i}.md", kind=ChangeKind.CREATED, sha256=SHA, size=i)
            for i in range(10)]
    received: list[DocumentDiscovered] = []

    async def handle(events: list[DocumentDiscovered]) -> None:
        assert all(isinstance(e, DocumentDiscovered) for e in events)
        received.extend(events)

    broker = kafka_broker(local_stack, "test-typed")
    subscribe_batches(broker, topic, DocumentDiscovered, handle, group_id=group, auto_offset_reset="earliest")
    async with broker:
        await broker.start()
        for event in sent[:5]:
            await publish_event(broker, event, key=event.source_id, topic=topic)
        await broker.publish(b'{"not": "an event"}', topic=topic, key=b"folder:typed/bad.md")
        for event in sent[5:]:
            await publish_event(broker, event, key=event.source_id, topic=topic)
        await wait_for(lambda: len(received) == 10)
    assert sorted(e.size for e in received) == list(range(10))  # the invalid record was dead-lettered, not handed on

    again: list[DocumentDiscovered] = []

    async def recount(events: list[DocumentDiscovered]) -> None:
        again.extend(events)

    broker = kafka_broker(local_stack, "test-typed-again")
    subscribe_batches(broker, topic, DocumentDiscovered, recount, group_id=group, auto_offset_reset="earliest")
    async with broker:
        await broker.start()
        extra = DocumentDiscovered(source_id="folder:typed/late.md", kind=ChangeKind.CREATED, sha256=SHA, size=99)
        await publish_event(broker, extra, key=extra.source_id, topic=topic)
        await wait_for(lambda: again)
    assert [e.size for e in again] == [99]  # what was handled before had been committed


async def test_a_rebalance_waits_for_the_batch_in_hand_so_no_record_is_handled_twice(local_stack):
    """A second consumer joins the group while the first holds a slow batch. Before, Kafka gave it a
    partition at once, and it read that batch's records from the last commit while the first was
    still handling them (two indexer replicas wrote the same passages at once)."""
    topic = new_topic(local_stack, partitions=2)
    group = f"test-rebalance-{uuid.uuid4()}"
    handled: list[tuple[str, int]] = []
    holding = asyncio.Event()

    async def slow(events: list[DocumentDiscovered]) -> None:
        handled.extend(("a", e.size) for e in events)
        if not holding.is_set():
            holding.set()
            await asyncio.sleep(10)  # the second consumer joins meanwhile

    async def quick(events: list[DocumentDiscovered]) -> None:
        handled.extend(("b", e.size) for e in events)

    def events(sizes: range) -> list[DocumentDiscovered]:
        return [DocumentDiscovered(source_id=f"folder:rebalance/{i}.md", kind=ChangeKind.CREATED, sha256=SHA, size=i)
                for i in sizes]

    a, b = kafka_broker(local_stack, "test-rebalance-a"), kafka_broker(local_stack, "test-rebalance-b")
    subscribe_batches(a, topic, DocumentDiscovered, slow, group_id=group, auto_offset_reset="earliest",
                      max_records=100)
    subscribe_batches(b, topic, DocumentDiscovered, quick, group_id=group, auto_offset_reset="earliest")
    async with a, b:
        await a.start()
        for event in events(range(40)):  # keyed by source: both partitions
            await publish_event(a, event, key=event.source_id, topic=topic)
        await asyncio.wait_for(holding.wait(), 60)
        await b.start()
        await wait_for(lambda: len(handled) >= 40, what="the first batch")
        for event in events(range(40, 80)):
            await publish_event(a, event, key=event.source_id, topic=topic)
        await wait_for(lambda: {size for _, size in handled} == set(range(80)), what="every record")
        await asyncio.sleep(3)  # a record read twice would come in now
    assert sorted(size for _, size in handled) == list(range(80))
    assert {who for who, size in handled if size >= 40} == {"a", "b"}  # the newcomer got a partition


def new_topic(settings, partitions: int, **configs: str) -> str:
    """A topic of this test's own."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    topic = f"test.table.{uuid.uuid4().hex}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1, topic_configs=configs)])
    admin.close()
    return topic


def new_compacted_topic(settings, partitions: int) -> str:
    return new_topic(settings, partitions, **{"cleanup.policy": "compact"})


async def test_a_compacted_topic_reads_as_a_table_and_bad_records_do_not_stop_it(local_stack):
    topic = new_compacted_topic(local_stack, partitions=2)
    table: dict[str, int] = {}

    def apply(key: str, value: bytes | None, offset: int) -> None:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = int(value)  # b"junk" raises: the record is skipped

    broker = kafka_broker(local_stack, "test-table")
    async with broker:
        await broker.start()
        for key, value in (("a", b"1"), ("b", b"2"), ("a", b"3"), ("c", b"junk"), ("b", None)):
            await broker.publish(value, topic=topic, key=key.encode())
        reader = CompactedTopic(local_stack, topic, apply, logging.getLogger("test"))
        await asyncio.wait_for(reader.start(follow=True), 60)
        try:
            assert table == {"a": 3} and reader.skipped == 1  # read to the end as it was at start
            sent = await broker.publish(b"5", topic=topic, key=b"d")
            await asyncio.wait_for(reader.wait_past(sent.partition, sent.offset), 30)
            assert table == {"a": 3, "d": 5}  # and followed after the bad records
        finally:
            await reader.stop()

    missing = CompactedTopic(local_stack, f"test.none.{uuid.uuid4().hex}", apply, logging.getLogger("test"))
    with pytest.raises(TopicMissing, match="does not exist"):
        await missing.start()


async def test_a_compacted_topic_reader_outlives_a_failing_consumer_and_its_waits_end(local_stack):
    """The dedup log's reader died silently on a consumer error, and every claim waited forever."""
    from aiokafka.errors import KafkaError

    from services.messaging import FollowerBehind

    topic = new_compacted_topic(local_stack, partitions=1)
    table: dict[str, bytes | None] = {}
    reader = CompactedTopic(local_stack, topic, lambda key, value, offset: table.__setitem__(key, value),
                            logging.getLogger("test"))
    broker = kafka_broker(local_stack, "test-table")
    async with broker:
        await broker.start()
        await asyncio.wait_for(reader.start(follow=True), 60)
        try:
            async def fails(*args, **kwargs):
                raise KafkaError("injected: the consumer broke")

            reader._consumer.getmany = fails  # this consumer fails; the reader must replace it
            await asyncio.sleep(1.5)  # the poll under way (500 ms at most) ends; the next one fails
            sent = await broker.publish(b"1", topic=topic, key=b"a")
            await reader.wait_past(sent.partition, sent.offset, timeout_s=30)
            assert table == {"a": b"1"} and reader.restarts == 1

            async def hangs(*args, **kwargs):
                await asyncio.sleep(3600)

            reader._consumer.getmany = hangs  # stuck without an error: the wait ends, with a reason
            await asyncio.sleep(1.5)  # the poll under way (500 ms at most) ends; the next one hangs
            sent = await broker.publish(b"2", topic=topic, key=b"b")
            with pytest.raises(FollowerBehind, match=r"was not read within 1 s \(the reader is at 1"):
                await reader.wait_past(sent.partition, sent.offset, timeout_s=1)
        finally:
            await reader.stop()
