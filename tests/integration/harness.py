"""What integration tests use to watch afina's topics and to run its services as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from control.localstack.process import free_port  # noqa: F401 - the tests' import of it
from services.contracts import EVENT_TOPICS, Event, Topic
from services.settings import Settings

AFINA = str(Path(sys.executable).with_name("afina"))


class EventLog:
    """Every afina event published on the given topics from now on, collected in a thread."""

    def __init__(self, settings: Settings, topics: list[Topic]) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
        partitions = [TopicPartition(str(t), p) for t in topics for p in self._consumer.partitions_for_topic(str(t))]
        self._consumer.assign(partitions)
        self._consumer.seek_to_end()
        for tp in partitions:
            self._consumer.position(tp)  # fix "the end" now, before anything is published
        self.events: list[Event] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            for tp, records in self._consumer.poll(timeout_ms=200).items():
                model = EVENT_TOPICS[Topic(tp.topic)]
                self.events.extend(model.model_validate_json(r.value) for r in records)

    def about(self, source_id_prefix: str) -> list[Event]:
        return [e for e in list(self.events) if getattr(e, "source_id", "").startswith(source_id_prefix)]

    def wait_for(self, condition: Callable[[], bool], timeout_s: float = 60, what: str = "events") -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {self.events[-20:]}")
            time.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def wait_for_log(log: Path, text: str, timeout_s: float = 60) -> None:
    """Wait until a service's log file holds ``text``."""
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


@contextmanager
def afina_service(command: list[str], env: dict[str, str], log_file: Path, ready: str,
                  timeout_s: float = 60) -> Iterator[subprocess.Popen]:
    """Run `afina <command>` as a real process until the block ends; wait for its `ready` log line."""
    with log_file.open("ab") as log:
        proc = subprocess.Popen([AFINA, *command], env={**os.environ, **env}, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + timeout_s
        while ready not in log_file.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"afina {' '.join(command)} did not get ready:\n{log_file.read_text()[-3000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ensure_champion_tokenizer(settings: Settings) -> int:
    """The champion's version, after `afina base init` made afina-tiny the champion if none was."""
    from services.tuning.base import init_base

    return init_base(settings, echo=lambda line: None)


def put_text_part(client, source_id: str, when, texts: list[str], token_ids: list[list[int]], tokenizer: str,
                  sha: str | None = None, language: str = "es") -> str:
    """Store a dataset part as the normalizer would (Parquet + PartInfo metadata); returns its key."""
    import hashlib

    from services.datasets import parts

    sha = sha or hashlib.sha256("\n".join(texts).encode()).hexdigest()
    rows = [{"source_id": source_id, "sha256": sha, "chunk_index": i, "kind": "text", "text": text, "messages": None,
             "token_ids": ids, "n_tokens": len(ids), "language": language, "media_type": "text/plain",
             "tokenizer": tokenizer, "discovered_at": when, "normalized_at": when}
            for i, (text, ids) in enumerate(zip(texts, token_ids, strict=True))]
    key = parts.part_key(source_id, when, sha)
    parts.store(client, key, parts.to_parquet(rows),
                parts.PartInfo(len(rows), sum(len(ids) for ids in token_ids), language, tokenizer))
    return key


def settings_from_env(env: dict[str, str]) -> Settings:
    """The settings a process started with ``env`` over this one's environment reads."""
    from unittest import mock

    with mock.patch.dict(os.environ, env):
        return Settings()


@contextmanager
def afina_up(env: dict[str, str], timeout_s: float = 900) -> Iterator[Settings]:
    """A whole afina of its own (`afina up` with ``env``), stopped with `afina down` at the end."""
    up = subprocess.run([AFINA, "up"], env=env, capture_output=True, text=True, timeout=timeout_s)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield settings_from_env(env)
    finally:
        down = subprocess.run([AFINA, "down"], env=env, capture_output=True, text=True, timeout=180)
        assert down.returncode == 0 and "services" in down.stdout, down.stdout + down.stderr
