"""What integration tests use to watch afina's topics and to run its services as real processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from control.localstack.process import free_port
from services import registry
from services.contracts import EVENT_TOPICS, Bucket, Event, Topic
from services.datasets import parts
from services.inference import client
from services.settings import Settings
from services.storage import minio_client

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
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield settings_from_env(env)
    finally:  # a failed `afina up` may have started some servers: they would hold their ports for the next test
        down = subprocess.run([AFINA, "down"], env=env, capture_output=True, text=True, timeout=180)
        assert down.returncode == 0 and "services" in down.stdout, down.stdout + down.stderr


class Inbox:
    """One test's inbox folder and the connector watching it (its own source id prefix)."""

    def __init__(self, settings: Settings, tmp_path: Path, **env: str) -> None:
        self.name = f"t{uuid.uuid4().hex[:12]}"
        self.dir = tmp_path / "inbox"
        self.dir.mkdir(parents=True)
        self.metrics_port = free_port()
        self.log = tmp_path / "connector.log"
        self.env = {
            "AFINA_STATE_DIR": str(settings.state_dir),
            "AFINA_INBOX_DIR": str(self.dir),
            "AFINA_INBOX_NAME": self.name,
            "AFINA_CONNECTOR_WATCH_BUCKET": "false",
            "AFINA_CONNECTOR_METRICS_PORT": str(self.metrics_port),
            **env,
        }

    def sid(self, rel: str) -> str:
        return f"{self.name}:{rel}"

    @contextmanager
    def connector(self):
        with afina_service(["connector"], self.env, self.log, ready='"msg": "connector ready"') as proc:
            yield proc


def forget_all_fingerprints(settings: Settings) -> None:
    """Tombstone every fingerprint in the dedup log: each test starts from an empty index."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                             consumer_timeout_ms=2000)
    partition = TopicPartition(str(Topic.DEDUP_SIGNATURES), 0)
    consumer.assign([partition])
    consumer.seek_to_beginning()
    end = consumer.end_offsets([partition])[partition]
    live: dict[bytes, bool] = {}
    while consumer.position(partition) < end:
        for records in consumer.poll(timeout_ms=1000).values():
            for record in records:
                live[record.key] = bool(record.value)
    consumer.close()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    for key, alive in live.items():
        if alive:
            producer.send(str(Topic.DEDUP_SIGNATURES), key=key, value=None)
    producer.flush()
    producer.close()


@contextmanager
def normalizer(settings: Settings, tmp_path, name: str = "normalizer", **env_vars: str):
    env = {"AFINA_STATE_DIR": str(settings.state_dir), "AFINA_NORMALIZER_METRICS_PORT": str(free_port()), **env_vars}
    with afina_service(["normalizer"], env, tmp_path / f"{name}.log", '"msg": "normalizer ready"') as proc:
        proc.metrics_url = f"http://127.0.0.1:{env['AFINA_NORMALIZER_METRICS_PORT']}/metrics"
        yield proc


SERVING = '"msg": "inference serving"'


@dataclass
class Server:
    address: str
    metrics_port: int
    proc: subprocess.Popen
    log: Path
    http: str = ""  # the OpenAI-compatible API's base URL

    def stub(self, channel: grpc.Channel | None = None):
        return client.pb_grpc.InferenceServiceStub(channel or grpc.insecure_channel(self.address))

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def metric(self, name: str) -> float:
        """The sum of a metric's samples (all labels)."""
        return sum(float(line.rsplit(" ", 1)[1]) for line in self.metrics().splitlines()
                   if line.startswith(name) and line[len(name)] in " {")


@contextmanager
def inference_server(settings: Settings, log: Path, ready: str = SERVING, **env: str) -> Iterator[Server]:
    port, metrics_port, http_port = free_port(), free_port(), free_port()
    env = {"AFINA_STATE_DIR": str(settings.state_dir), "AFINA_INFERENCE_ADDRESS": f"127.0.0.1:{port}",
           "AFINA_INFERENCE_HTTP_ADDRESS": f"127.0.0.1:{http_port}",
           "AFINA_INFERENCE_METRICS_PORT": str(metrics_port), "AFINA_INFERENCE_MAX_PROMPT_TOKENS": "64",
           "AFINA_INFERENCE_MAX_NEW_TOKENS": "500", **env}
    with afina_service(["serve"], env, log, ready, timeout_s=120) as proc:
        yield Server(f"127.0.0.1:{port}", metrics_port, proc, log, f"http://127.0.0.1:{http_port}/v1")


def part_text(settings: Settings, key: str) -> tuple[str, list[dict]]:
    """A dataset part's text (its rows' texts, one per line) and its rows."""
    data = minio_client(settings).get_object(Bucket.DATASETS, key).read()
    rows = parts.read_parquet(data).to_pylist()
    return "\n".join(r["text"] for r in rows), rows


# -- the registry: adapter versions made here, on the tiny base ---------------------------------------
def register_adapter(settings: Settings, seed: int, status: str = "promoted", files: bool = True) -> int:
    """A LoRA adapter on version 0 with random (nonzero) weights, registered as the next version
    (files=False: its card only, as if its adapter files were lost)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    s3 = minio_client(settings)
    base = registry.fetch(s3, 0, settings.state_dir / "cache" / "models")
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base.base),
                           LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    version = registry.reserve_version(s3)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, safe_serialization=True)
        card = registry.ModelCard(version=version, kind="adapter", base_version=0, base_model="afina-tiny",
                                  snapshot_id="snap-inference-test", metrics={"eval_perplexity": 9.0}, status=status)
        registry.register_version(s3, card, registry.tokenizer_json(s3, 0),
                                  adapter_folder=Path(folder) if files else None)
    return version


def forget_versions(settings: Settings, versions: list[int], champion: int) -> None:
    s3 = minio_client(settings)
    registry.move_alias(s3, registry.CHAMPION, champion)
    for version in versions:
        for obj in list(s3.list_objects(Bucket.MODELS, prefix=f"versions/{version}/", recursive=True)):
            if not obj.object_name.endswith("/reserved"):  # its number stays taken: a server may hold it
                s3.remove_object(Bucket.MODELS, obj.object_name)
        shutil.rmtree(settings.state_dir / "cache" / "models" / str(version), ignore_errors=True)
