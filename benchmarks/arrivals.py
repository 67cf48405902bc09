"""When each document's event was published to Kafka: the clock that the benchmarks read.

The time is the record's own timestamp (CreateTime, set by the service's producer when it
sends the event: for the normalizer, once the part is written), in seconds since the epoch:
compare it with ``time.time()``. The records are read only while a benchmark waits, a few
times a second, so the measuring costs the measured services almost no CPU on a small machine.
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition

from services.contracts import EVENT_TOPICS, Event, Topic
from services.settings import Settings

POLL_EVERY_S = 0.25


class Arrivals:
    """The first event per source id on the given topics from now on, with its publishing time."""

    def __init__(self, settings: Settings, topics: list[Topic]) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
        partitions = [TopicPartition(str(t), p) for t in topics for p in self.consumer.partitions_for_topic(str(t))]
        self.consumer.assign(partitions)
        self.consumer.seek_to_end()
        for tp in partitions:
            self.consumer.position(tp)  # fix "now" before anything is dropped
        self.at: dict[str, tuple[float, Event]] = {}

    def _read(self) -> None:
        for tp, records in self.consumer.poll(timeout_ms=0).items():
            model = EVENT_TOPICS[Topic(tp.topic)]
            for record in records:
                event = model.model_validate_json(record.value)
                self.at.setdefault(event.source_id, (record.timestamp / 1000, event))

    def wait(self, source_ids: list[str], timeout_s: float = 900) -> float:
        """The publishing time (epoch seconds) of the last of these source ids' events."""
        deadline = time.monotonic() + timeout_s
        self._read()
        while not all(s in self.at for s in source_ids):
            if time.monotonic() > deadline:
                missing = [s for s in source_ids if s not in self.at]
                raise TimeoutError(f"{len(missing)} events never arrived, e.g. {missing[:3]}")
            time.sleep(POLL_EVERY_S)
            self._read()
        return max(self.at[s][0] for s in source_ids)
