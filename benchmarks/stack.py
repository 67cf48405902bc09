"""Benchmark of the foundation: `afina stack up` cold and warm, and Kafka round-trip throughput
of contract events through FastStream against raw aiokafka on the same broker, in one run.

    .venv/bin/python benchmarks/stack.py [--events 20000] [--rounds 3]

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

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faststream import AckPolicy
from faststream.kafka import KafkaMessage
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from services import stack
from services.contracts import ChangeKind, DocumentDiscovered, Settings, parse_event
from services.messaging import kafka_broker

BATCH = 500


def time_stack_up(settings: Settings) -> tuple[float, float]:
    afina = str(Path(sys.executable).with_name("afina"))
    state = Path(tempfile.mkdtemp(prefix="afina-bench-"))
    env = {**os.environ, **stack.sibling_env(settings, state, port_offset=20000)}
    try:
        times = []
        for _ in range(2):
            start = time.perf_counter()
            subprocess.run([afina, "stack", "up"], env=env, check=True, capture_output=True)
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


def wire(event: DocumentDiscovered) -> tuple[bytes, bytes]:
    """Key and value as every afina producer writes them (see services.messaging.publish_event)."""
    return event.source_id.encode(), event.model_dump_json().encode()


def new_topic(settings: Settings) -> str:
    name = f"bench.{uuid.uuid4().hex}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    admin.close()
    return name


async def faststream_round_trip(settings: Settings, records: list[DocumentDiscovered]) -> float:
    topic, n = new_topic(settings), len(records)
    received = 0
    done = asyncio.Event()
    broker = kafka_broker(settings, "bench-faststream")

    @broker.subscriber(topic, group_id=f"bench-{uuid.uuid4()}", auto_offset_reset="earliest",
                       batch=True, max_records=BATCH, ack_policy=AckPolicy.MANUAL)
    async def handle(msg: KafkaMessage) -> None:
        nonlocal received
        for record in msg.raw_message:
            parse_event(DocumentDiscovered, record.value)
        received += len(msg.raw_message)
        await msg.ack()
        if received >= n:
            done.set()

    async with broker:
        await broker.start()
        start = time.perf_counter()
        pending = []
        for event in records:
            key, value = wire(event)
            pending.append(await broker.publish(value, topic=topic, key=key, no_confirm=True))
        await asyncio.gather(*pending)
        await done.wait()
        return n / (time.perf_counter() - start)


async def aiokafka_round_trip(settings: Settings, records: list[DocumentDiscovered]) -> float:
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
        start = time.perf_counter()
        consuming = asyncio.create_task(consume())
        pending = []
        for event in records:
            key, value = wire(event)
            pending.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*pending)
        await consuming
        return n / (time.perf_counter() - start)
    finally:
        await consumer.stop()
        await producer.stop()


async def throughput(settings: Settings, n: int, rounds: int) -> tuple[float, float]:
    records = events(n)
    fast, raw = [], []
    for _ in range(rounds):  # alternate, so drift on a shared machine hits both alike
        raw.append(await aiokafka_round_trip(settings, records))
        fast.append(await faststream_round_trip(settings, records))
    return statistics.median(fast), statistics.median(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    settings = Settings()
    stack.up(settings, echo=lambda line: None)
    cold, warm = time_stack_up(settings)
    print(f"stack up, cold (new state, cached tools): {cold:6.1f} s")
    print(f"stack up, warm (servers running):         {warm:6.1f} s")

    fast, raw = asyncio.run(throughput(settings, args.events, args.rounds))
    print(f"round trip of {args.events} DocumentDiscovered events, median of {args.rounds}:")
    print(f"  raw aiokafka: {raw:9.0f} msg/s")
    print(f"  FastStream:   {fast:9.0f} msg/s")
    print(f"  ratio FastStream/raw: {fast / raw:.2f} (goal >= 0.80)")


if __name__ == "__main__":
    main()
