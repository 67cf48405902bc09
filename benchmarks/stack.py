"""Benchmark of the foundation: `afina stack up` cold and warm, and Kafka round-trip throughput
of contract events through FastStream against raw aiokafka on the same broker, in one run.

    .venv/bin/python benchmarks/stack.py [--events 20000] [--rounds 5]

Cold/warm `up` run on a second stack (own state folder and ports) that reuses the built tools;
the throughput part uses the stack of the current settings (started if needed).
Goal: FastStream >= 0.8 of raw aiokafka.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faststream import AckPolicy
from faststream.kafka import KafkaMessage
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from control import localstack
from services.contracts import ChangeKind, DocumentDiscovered, parse_event
from services.messaging import BATCH_POLL_MS, commit, kafka_broker, publish_event
from services.settings import Settings

BATCH = 500


def time_stack_up(settings: Settings) -> tuple[float, float]:
    afina = str(Path(sys.executable).with_name("afina"))
    state = Path(tempfile.mkdtemp(prefix="afina-bench-"))
    env = {**os.environ, **localstack.sibling_env(settings, state, port_offset=20000)}
    try:
        times = []
        for _ in range(2):
            start = time.perf_counter()
            done = subprocess.run([afina, "stack", "up"], env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"afina stack up failed:\n{done.stdout}{done.stderr}")
            times.append(time.perf_counter() - start)
        return times[0], times[1]
    finally:
        subprocess.run([afina, "stack", "down"], env=env, capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


def events(n: int) -> list[DocumentDiscovered]:
    sha = "cd" * 32
    return [
        DocumentDiscovered(source_id=f"folder:bench/{i}.md", kind=ChangeKind.CREATED, sha256=sha, size=i)
        for i in range(n)
    ]


def wire(event: DocumentDiscovered) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Key, value and headers as services.messaging.publish_event writes them, for raw aiokafka:
    the same bytes on the wire, FastStream's correlation id header (the event's id) included."""
    headers = {"content-type": "application/json", "afina-event": type(event).__name__,
               "correlation_id": str(event.event_id)}
    return event.source_id.encode(), event.model_dump_json().encode(), [(k, v.encode()) for k, v in headers.items()]


def new_topic(settings: Settings) -> str:
    name = f"bench.{uuid.uuid4().hex}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    admin.close()
    return name


class Round(NamedTuple):
    per_s: float  # messages per second, wall clock
    cpu_us: float  # this process's CPU time per message (publisher and consumer): steadier on a busy machine


async def faststream_round_trip(settings: Settings, records: list[DocumentDiscovered]) -> Round:
    topic, n = new_topic(settings), len(records)
    received = 0
    done = asyncio.Event()
    broker = kafka_broker(settings, "bench-faststream")

    @broker.subscriber(topic, group_id=f"bench-{uuid.uuid4()}", auto_offset_reset="earliest",
                       batch=True, max_records=BATCH, batch_timeout_ms=BATCH_POLL_MS, ack_policy=AckPolicy.MANUAL)
    async def handle(msg: KafkaMessage) -> None:
        nonlocal received
        for record in msg.raw_message:
            parse_event(DocumentDiscovered, record.value)
        received += len(msg.raw_message)
        await commit(msg)
        if received >= n:
            done.set()

    async with broker:
        await broker.start()
        start, cpu = time.perf_counter(), time.process_time()
        # afina's own publish path, as the normalizer uses it: queue each event, confirm them all
        # before the offsets are committed
        pending = [await publish_event(broker, event, event.source_id, confirm=False, topic=topic)
                   for event in records]
        await asyncio.gather(*pending)
        await done.wait()
        return Round(n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6)


async def aiokafka_round_trip(settings: Settings, records: list[DocumentDiscovered]) -> Round:
    topic, n = new_topic(settings), len(records)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                                enable_idempotence=True)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=f"bench-{uuid.uuid4()}", auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await producer.start()
    await consumer.start()

    async def consume() -> None:
        received = 0
        while received < n:
            batches = await consumer.getmany(timeout_ms=100, max_records=BATCH)
            for batch in batches.values():
                for record in batch:
                    parse_event(DocumentDiscovered, record.value)
                received += len(batch)
            if batches:
                await consumer.commit()

    try:
        start, cpu = time.perf_counter(), time.process_time()
        consuming = asyncio.create_task(consume())
        pending = []
        for event in records:
            key, value, headers = wire(event)
            pending.append(await producer.send(topic, value, key=key, headers=headers))
        await asyncio.gather(*pending)
        await consuming
        return Round(n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6)
    finally:
        await consumer.stop()
        await producer.stop()


async def throughput(settings: Settings, n: int, rounds: int) -> tuple[Round, Round]:
    records = events(n)
    fast, raw = [], []
    for _ in range(rounds):  # alternate, so drift on a shared machine hits both alike
        raw.append(await aiokafka_round_trip(settings, records))
        fast.append(await faststream_round_trip(settings, records))

    def median(results: list[Round]) -> Round:
        return Round(statistics.median(r.per_s for r in results), statistics.median(r.cpu_us for r in results))

    return median(fast), median(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    settings = Settings()
    localstack.up(settings, echo=lambda line: None)
    cold, warm = time_stack_up(settings)
    print(f"stack up, cold (new state, cached tools): {cold:6.1f} s")
    print(f"stack up, warm (servers running):         {warm:6.1f} s")

    fast, raw = asyncio.run(throughput(settings, args.events, args.rounds))
    print(f"round trip of {args.events} DocumentDiscovered events, median of {args.rounds}:")
    print(f"  raw aiokafka: {raw.per_s:9.0f} msg/s  {raw.cpu_us:5.1f} µs CPU/msg")
    print(f"  FastStream:   {fast.per_s:9.0f} msg/s  {fast.cpu_us:5.1f} µs CPU/msg")
    print(f"  ratio FastStream/raw: {fast.per_s / raw.per_s:.2f} (goal >= 0.80); "
          f"by CPU per message: {raw.cpu_us / fast.cpu_us:.2f}")


if __name__ == "__main__":
    main()
