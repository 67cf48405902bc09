"""Kafka through FastStream: one broker factory, one way to publish an event, one way to read one,
one way to consume batches of typed events, and one way to read a compacted topic as a table."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import RecordMetadata
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage

from services.contracts import (
    EVENT_TOPICS,
    DocumentRejected,
    E,
    Event,
    InvalidEvent,
    RejectReason,
    Topic,
    parse_event,
)
from services.lifecycle import FIRST_DELAY_S, MAX_DELAY_S
from services.settings import Settings

TOPIC_OF_EVENT: dict[type[Event], Topic] = {model: topic for topic, model in EVENT_TOPICS.items()}
# A batch subscriber's poll timeout (``batch_timeout_ms``). FastStream sleeps as long again after an
# empty poll, 200 ms by default, which a record arriving then waits out; 20 ms costs an idle
# consumer next to nothing.
log = logging.getLogger("afina.messaging")

BATCH_POLL_MS = 20
_PAYLOAD_KEPT = 2000  # characters of an invalid record kept in its dead letter


def kafka_broker(settings: Settings, client_id: str) -> KafkaBroker:
    """A broker whose producer is idempotent and waits for all replicas: nothing lost, nothing twice."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        # FastStream logs every message received/processed; at INFO that is noise and costs throughput
        log_level=logging.DEBUG,
        # Records are validated by read_event from the raw bytes; skip FastStream's own JSON decoding,
        # and its per-record header dicts in a batch.
        decoder=_keep_raw,
        parser=_parse_without_batch_headers,
    )


async def _keep_raw(msg: KafkaMessage) -> bytes | tuple[bytes, ...]:
    return msg.body


async def _parse_without_batch_headers(
    records: ConsumerRecord | tuple[ConsumerRecord, ...], parse: Callable[..., Awaitable[KafkaMessage]]
) -> KafkaMessage:
    """FastStream's own message for a batch, parsed from its last record and then given all of them.

    FastStream decodes every record's headers of a batch into a dict, which afina never reads
    (read_record validates each record from its bytes): that was a third of FastStream's cost per
    consumed record. Acknowledging commits the consumer's position and a nack rewinds to the
    earliest record of ``raw_message``, so both still see the whole batch.
    """
    if not isinstance(records, tuple):
        return await parse(records)
    message = await parse(records[-1:])
    message.raw_message = records
    message.body = [r.value or b"" for r in records]
    message.message_id = f"{records[0].offset}-{records[-1].offset}-{records[0].timestamp}"
    return message


async def commit(msg: KafkaMessage) -> None:
    """Acknowledge a consumed message or batch: commit the consumer's offsets past it.

    Commits from a task with an empty context, not the handler's own. aiokafka arms a timer of
    ``request_timeout_ms`` (40 s) for the commit request, and asyncio keeps a cancelled timer, and
    the context it was armed in, until it would have fired. The handler's context holds
    FastStream's message, so ``msg.ack()`` there kept every batch alive for 40 s after it was
    committed: at 20,000 records/s, most of a million records for Python's collector to walk.
    """
    await asyncio.create_task(msg.ack(), context=contextvars.Context())


async def publish_event(
    broker: KafkaBroker, event: Event, key: str, *, confirm: bool = True, topic: str | None = None
) -> RecordMetadata | asyncio.Future[RecordMetadata]:
    """Publish an event to its contract topic, keyed (usually by source id) for per-key ordering.

    The record's correlation id is the event's own id (traceable, and no second UUID per message).
    ``confirm=False`` returns as soon as the record is queued, with the future of the broker's
    acknowledgement: a caller that commits offsets must await every such future first.
    ``topic`` overrides the contract topic (benchmarks use their own).
    """
    return await broker.publish(
        event.model_dump_json().encode(),
        topic=topic or TOPIC_OF_EVENT[type(event)],
        key=key.encode(),
        headers={"content-type": "application/json", "afina-event": type(event).__name__},
        correlation_id=str(event.event_id),
        no_confirm=not confirm,
    )


async def read_event(broker: KafkaBroker, model: type[E], msg: KafkaMessage) -> E | None:
    """Validate a consumed record against its contract.

    An invalid record is dead-lettered to ``afina.documents.rejected`` with the
    reason and ``None`` is returned, so the caller acknowledges it and the stream
    keeps moving instead of redelivering a poison message forever.
    """
    return await read_record(broker, model, msg.raw_message)


async def read_record(broker: KafkaBroker, model: type[E], record: ConsumerRecord) -> E | None:
    """read_event for one record of a batch."""
    try:
        return parse_event(model, record.value)
    except InvalidEvent as exc:
        where = f"{record.topic}/{record.partition}/{record.offset}"
        await publish_event(
            broker,
            DocumentRejected(
                source_id=where,
                reason=RejectReason.INVALID_EVENT,
                message=f"record {where}: {exc}",
                stage="consumer",
                payload=(record.value or b"").decode("utf-8", errors="replace")[:_PAYLOAD_KEPT],
            ),
            key=where,
        )
        return None


class FinishBatchFirst(ConsumerRebalanceListener):
    """Partitions move to another consumer of the group only between batches.

    Without it, a replica joining (or one coming back after a crash) makes Kafka move partitions
    while their owner is still handling a batch: the new owner reads the same records from the
    last commit and handles them at the same time, and the old owner's commit then fails. aiokafka
    awaits ``on_partitions_revoked`` before it rejoins the group, while this consumer's commits
    are still accepted, so waiting there for the batch in hand lets it finish and commit.
    """

    def __init__(self) -> None:
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def handling(self):
        self._idle.clear()
        try:
            yield
        finally:
            self._idle.set()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._idle.wait()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass


def subscribe_batches(broker: KafkaBroker, topic: Topic, model: type[E], handle: Callable[[list[E]], Awaitable[None]],
                      **subscriber: object) -> None:
    """Subscribe ``handle`` to batches of ``topic`` as typed events, committed after it returns.

    Records are validated from their bytes (invalid ones are dead-lettered by ``read_record``).
    Should ``handle`` or a dead-letter publish raise, the batch is not committed: the consumer is
    rewound to its first records and reads it again after a backoff, never past it. A rebalance
    waits for the batch in hand (``FinishBatchFirst``), but not for a failed one's backoff.
    """
    failures = 0
    finishing = FinishBatchFirst()

    async def on_batch(msg: KafkaMessage) -> None:
        nonlocal failures
        async with finishing.handling():
            try:
                await handle([event for record in msg.raw_message
                              if (event := await read_record(broker, model, record))])
            except Exception as exc:  # noqa: BLE001 - any failure: the same records again, later
                failures += 1
                delay = min(FIRST_DELAY_S * 2 ** (failures - 1), MAX_DELAY_S)
                log.error("a batch failed; it will be read again", extra={
                    "topic": str(topic), "records": len(msg.raw_message), "error": repr(exc), "retry_s": delay})
            else:
                failures = 0
                try:
                    await commit(msg)
                except CommitFailedError:  # the group moved on without this consumer (it was too slow)
                    log.warning("a handled batch could not be committed: its partitions' new owner reads it again",
                                extra={"topic": str(topic), "records": len(msg.raw_message)})
                return
        await asyncio.sleep(delay)
        try:
            await msg.nack()  # seeks each partition back to the batch's first record
        except IllegalStateError:  # a partition moved during the backoff: its new owner reads from the last commit
            log.info("a failed batch's partitions moved to another consumer", extra={"topic": str(topic)})

    broker.subscriber(topic, batch=True, ack_policy=AckPolicy.MANUAL, batch_timeout_ms=BATCH_POLL_MS,
                      listener=finishing, **subscriber)(on_batch)


class TopicMissing(LookupError):
    pass


class FollowerBehind(TimeoutError):
    """A compacted topic's reader did not reach a record in time."""


class CompactedTopic:
    """A compacted topic read as a table: ``apply(key, value, offset)`` sees every record of each
    partition in order, from the first (``value`` None is a tombstone), so the caller keeps the
    latest value per key. ``start`` returns once the topic is read up to its end at that moment;
    with ``follow`` it goes on reading in the background.

    A record the caller cannot apply (no key, a value it rejects) is logged and skipped: one bad
    record must not stop every reader of the topic.
    """

    def __init__(self, settings: Settings, topic: Topic, apply: Callable[[str, bytes | None, int], None],
                 log: logging.Logger) -> None:
        self.settings = settings
        self.topic = topic
        self.apply = apply
        self.log = log
        self.skipped = 0
        self.restarts = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None
        self._next: dict[int, int] = {}  # per partition: the offset of the next record to read
        self._progress = asyncio.Condition()

    async def start(self, follow: bool = False) -> None:
        partitions = await self._partitions()
        consumer = await self._consumer_at(partitions, {})
        try:
            end = await consumer.end_offsets(partitions)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer, self._next = consumer, {tp.partition: 0 for tp in partitions}
        self._task = asyncio.create_task(self._follow(partitions))
        for tp, offset in end.items():
            await self.wait_past(tp.partition, offset - 1)
        if not follow:
            await self.stop()

    async def _consumer_at(self, partitions: list[TopicPartition], positions: dict[int, int]) -> AIOKafkaConsumer:
        """A consumer of the partitions, at ``positions`` (the beginning where none is given)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap_servers, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*[tp for tp in partitions if tp.partition not in positions])
            for tp in partitions:
                if tp.partition in positions:
                    consumer.seek(tp, positions[tp.partition])
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def _partitions(self) -> list[TopicPartition]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([self.topic])
        finally:
            await admin.close()
        if described["error_code"] or not described["partitions"]:
            raise TopicMissing(f"topic {self.topic} does not exist: run `afina stack init`")
        return [TopicPartition(self.topic, p["partition"]) for p in described["partitions"]]

    async def wait_past(self, partition: int, offset: int, timeout_s: float | None = None) -> None:
        """Wait until the record at ``offset`` of ``partition`` has been applied; FollowerBehind
        after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s), self._progress:
                await self._progress.wait_for(lambda: self._next.get(partition, 0) > offset)
        except TimeoutError:
            raise FollowerBehind(
                f"{self.topic}: record {offset} of partition {partition} was not read within {timeout_s:.0f} s "
                f"(the reader is at {self._next.get(partition, 0)}, restarted {self.restarts} times)") from None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _follow(self, partitions: list[TopicPartition]) -> None:
        """Read on for as long as the table is used: a failing consumer is replaced, from where it was."""
        delay = FIRST_DELAY_S
        while True:
            try:
                await self._read()
            except Exception as exc:  # noqa: BLE001 - the reader must outlive any consumer error
                self.restarts += 1
                self.log.error(f"reading {self.topic} failed; restarting the reader", extra={
                    "error": repr(exc), "retry_s": delay, "restarts": self.restarts})
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_S)
                old, self._consumer = self._consumer, None
                if old is not None:
                    await old.stop()
                try:
                    self._consumer = await self._consumer_at(partitions, dict(self._next))
                except Exception as retry:  # noqa: BLE001 - Kafka away: the next round tries again
                    self.log.warning(f"reconnecting to {self.topic} failed", extra={"error": repr(retry)})

    async def _read(self) -> None:
        if self._consumer is None:
            raise ConnectionError("no consumer")
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    self._apply(record)
            async with self._progress:
                for tp in batches:
                    self._next[tp.partition] = await self._consumer.position(tp)
                self._progress.notify_all()

    def _apply(self, record: ConsumerRecord) -> None:
        try:
            if record.key is None:
                raise ValueError("the record has no key")
            self.apply(record.key.decode(), record.value, record.offset)
        except Exception as exc:  # noqa: BLE001 - any record may be malformed; the table goes on
            self.skipped += 1
            self.log.warning(f"skipped a record of {self.topic}", extra={
                "partition": record.partition, "offset": record.offset, "error": repr(exc)})
