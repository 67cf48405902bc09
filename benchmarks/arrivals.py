"""When each document's event arrived on Kafka: the clock that the benchmarks read."""

from __future__ import annotations

import threading
import time

from kafka import KafkaConsumer, TopicPartition

from services.contracts import EVENT_TOPICS, Event, Settings, Topic


class Arrivals:
    """The first event per source id on the given topics from now on, with its arrival time."""

    def __init__(self, settings: Settings, topics: list[Topic]) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
        partitions = [TopicPartition(str(t), p) for t in topics for p in self.consumer.partitions_for_topic(str(t))]
        self.consumer.assign(partitions)
        self.consumer.seek_to_end()
        for tp in partitions:
            self.consumer.position(tp)  # fix "now" before anything is dropped
        self.at: dict[str, tuple[float, Event]] = {}
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        while True:
            for tp, records in self.consumer.poll(timeout_ms=100).items():
                now = time.perf_counter()
                model = EVENT_TOPICS[Topic(tp.topic)]
                for record in records:
                    event = model.model_validate_json(record.value)
                    self.at.setdefault(event.source_id, (now, event))

    def wait(self, source_ids: list[str], timeout_s: float = 900) -> float:
        """The arrival time of the last of these source ids' events."""
        deadline = time.perf_counter() + timeout_s
        while not all(s in self.at for s in source_ids):
            if time.perf_counter() > deadline:
                missing = [s for s in source_ids if s not in self.at]
                raise TimeoutError(f"{len(missing)} events never arrived, e.g. {missing[:3]}")
            time.sleep(0.01)
        return max(self.at[s][0] for s in source_ids)
