"""MinIO built from source with ``go install``, with its bucket notifications sent to Kafka.

The community edition ships as source only, so the binary is built once per
pinned commit into tools/ (Go's module and build caches make a rebuild quick).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from minio import Minio
from minio.notificationconfig import NotificationConfig, QueueConfig

from control.localstack.process import ManagedProcess, require_tool, run_checked
from services.contracts import Bucket, Topic
from services.settings import Settings
from services.storage import minio_client

# The Go module proxy serves this commit (2026-02-12) of github.com/minio/minio; it
# refuses the RELEASE.2025-10-15 commit (9e49d5e7a648).
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"

# The id of the Kafka notification target in MinIO's environment; MinIO names it
# arn:minio:sqs::<id>:kafka.
NOTIFY_TARGET = "AFINA"
NOTIFY_ARN = f"arn:minio:sqs::{NOTIFY_TARGET}:kafka"
INBOX_EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]


def binary_path(tools_dir: Path) -> Path:
    return tools_dir / f"minio-{MINIO_VERSION}" / "minio"


def install(tools_dir: Path, echo: Callable[[str], None] | None = None) -> Path:
    binary = binary_path(tools_dir)
    if binary.exists():
        return binary
    go = require_tool(
        "go", "to build MinIO from source (Go 1.24 or newer)", "Install Go (https://go.dev/doc/install)."
    )
    run_checked(
        [go, "install", f"github.com/minio/minio@{MINIO_VERSION}"],
        f"building MinIO {MINIO_VERSION} with go install (first time only; a few minutes)",
        env={"GOBIN": str(binary.parent)}, echo=echo,
    )
    return binary


def process(settings: Settings) -> ManagedProcess:
    return ManagedProcess(
        name="minio",
        state_dir=settings.state_dir,
        port=settings.s3_port,
        extra_ports=(settings.s3_console_port,),
        health=lambda: httpx.get(f"{settings.s3_url}/minio/health/ready", timeout=2).status_code == 200,
    )


def start(settings: Settings, proc: ManagedProcess) -> None:
    binary = install(settings.state_dir / "tools")
    home = settings.state_dir / "minio"
    (home / "data").mkdir(parents=True, exist_ok=True)
    env = {
        "MINIO_ROOT_USER": settings.s3_access_key,
        "MINIO_ROOT_PASSWORD": settings.s3_secret_key,
        "MINIO_UPDATE": "off",
        "MINIO_BROWSER": "on",
        # The data scanner walks every object (usage, lifecycle, healing); at its default speed it
        # kept a tenth of a core busy on a dev stack of some 30,000 objects, out of two cores.
        "MINIO_SCANNER_SPEED": "slowest",
        f"MINIO_NOTIFY_KAFKA_ENABLE_{NOTIFY_TARGET}": "on",
        f"MINIO_NOTIFY_KAFKA_BROKERS_{NOTIFY_TARGET}": settings.kafka_bootstrap_servers,
        f"MINIO_NOTIFY_KAFKA_TOPIC_{NOTIFY_TARGET}": str(Topic.INBOX_NOTIFICATIONS),
        # events wait on disk while Kafka is down, instead of being dropped
        f"MINIO_NOTIFY_KAFKA_QUEUE_DIR_{NOTIFY_TARGET}": str(home / "notify-queue"),
    }
    proc.start(
        [str(binary), "server", str(home / "data"),
         "--address", f"127.0.0.1:{settings.s3_port}",
         "--console-address", f"127.0.0.1:{settings.s3_console_port}"],
        env=env,
    )


def create_buckets(settings: Settings) -> None:
    client = minio_client(settings)
    for bucket in Bucket:
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    _notify_inbox_to_kafka(client)


def _notify_inbox_to_kafka(client: Minio) -> None:
    wanted = NotificationConfig(
        queue_config_list=[QueueConfig(INBOX_EVENTS, config_id="afina-inbox-to-kafka", queue=NOTIFY_ARN)]
    )
    current = client.get_bucket_notification(Bucket.INBOX)
    if _describe(current) != _describe(wanted):
        client.set_bucket_notification(Bucket.INBOX, wanted)


def _describe(config: NotificationConfig) -> str:
    return json.dumps(
        sorted((q.queue, sorted(q.events)) for q in config.queue_config_list), sort_keys=True
    )
