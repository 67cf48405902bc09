"""The local stack: real Kafka, MinIO and Prefect servers as processes, no Docker.

``up`` installs what is missing (cached), starts what is not running, waits on
real health checks and creates the contract topics and buckets; it reuses
servers it started earlier. ``down`` stops only what ``up`` started.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from control.localstack import kafka, minio, prefect
from control.localstack.process import (
    FREE_PORTS_BELOW_EPHEMERAL,
    ManagedProcess,
    StackError,
    ephemeral_ports,
    free_port,
)
from services.settings import Settings

__all__ = ["StackError", "PartStatus", "up", "down", "status", "init", "sibling_env"]


@dataclass(frozen=True)
class PartStatus:
    name: str
    state: Literal["started", "reused", "running", "unhealthy", "stopped"]
    addresses: tuple[str, ...]
    pid: int | None
    log: str


@dataclass(frozen=True)
class _Part:
    process: ManagedProcess
    start: Callable[[Settings, ManagedProcess], None]
    addresses: tuple[str, ...]
    start_timeout_s: float


def _parts(settings: Settings) -> dict[str, _Part]:
    return {
        "kafka": _Part(
            kafka.process(settings), kafka.start, (f"kafka://{settings.kafka_bootstrap_servers}",), 90
        ),
        "minio": _Part(
            minio.process(settings),
            minio.start,
            (settings.s3_url, f"console http://127.0.0.1:{settings.s3_console_port}"),
            60,
        ),
        "prefect": _Part(
            prefect.process(settings),
            prefect.start,
            (settings.prefect_api_url.removesuffix("/api"),),
            120,
        ),
    }


def up(settings: Settings, echo: Callable[[str], None] = print,
       only: Collection[str] | None = None) -> list[PartStatus]:
    """Start what is not running (or only the named parts: Kafka and MinIO are enough for the
    connector and normalizer) and wait until each is healthy."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    parts = {name: part for name, part in _parts(settings).items() if only is None or name in only}
    tools = settings.state_dir / "tools"
    kafka.install(tools, echo)
    minio.install(tools, echo)

    # Check every port before starting anything, so a busy one leaves nothing half-started.
    to_start = [name for name, part in parts.items() if part.process.pid() is None]
    for name in to_start:
        parts[name].process.check_ports_free()

    started: list[str] = []

    def ensure(name: str) -> None:
        if name in to_start:
            echo(f"starting {name} ...")
            started.append(name)
            parts[name].start(settings, parts[name].process)

    try:
        # Prefect takes longest to boot and needs no other part: start it first, wait for it last.
        # MinIO sends inbox notifications to Kafka, so it starts once Kafka answers.
        for name in ("prefect", "kafka", "minio"):
            if name in parts:
                ensure(name)
                if name != "prefect":
                    parts[name].process.wait_healthy(parts[name].start_timeout_s)
        if "kafka" in parts and "minio" in parts:
            init(settings)
        if "prefect" in parts:
            parts["prefect"].process.wait_healthy(parts["prefect"].start_timeout_s)
    except BaseException:
        down(settings, only=started)  # leave nothing half-started behind
        raise

    return [_status(name, part, "started" if name in to_start else "reused") for name, part in parts.items()]


def init(settings: Settings) -> None:
    """Create the contract topics and buckets and the inbox notifications (idempotent).

    ``up`` calls this; on servers afina did not start (docker-compose, a cluster) run it alone.
    """
    kafka.create_topics(settings)
    minio.create_buckets(settings)


def down(settings: Settings, only: Collection[str] | None = None) -> list[str]:
    """Stop what ``up`` started (or only the named parts), dependents first; returns the names stopped."""
    parts = _parts(settings)
    names = [name for name in ("minio", "prefect", "kafka") if only is None or name in only]
    return [name for name in names if parts[name].process.stop()]


def status(settings: Settings) -> list[PartStatus]:
    result = []
    for name, part in _parts(settings).items():
        if part.process.pid() is None:
            state = "stopped"
        else:
            state = "running" if part.process.healthy() else "unhealthy"
        result.append(_status(name, part, state))
    return result


def _status(name: str, part: _Part, state: str) -> PartStatus:
    return PartStatus(name, state, part.addresses, part.process.pid(), str(part.process.log_file))


def sibling_env(settings: Settings, state_dir: Path, port_offset: int) -> dict[str, str]:
    """AFINA_* variables for a second stack beside this one (tests, benchmarks): its own state
    folder and ports, sharing the built tools and base models so that nothing is built twice.
    The servers' ports are fixed (base + ``port_offset``) and must stay below the kernel's
    ephemeral range, where any client's outgoing connection may hold them at start-up, and below
    the ports ``free_port`` draws the services' ports from."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for shared in ("tools", "models"):
        source = settings.state_dir / shared
        source.mkdir(parents=True, exist_ok=True)
        if not (state_dir / shared).exists():
            (state_dir / shared).symlink_to(source.resolve())
    prefect_port = settings.prefect_port + port_offset
    fixed = {"kafka": settings.kafka_port, "kafka controller": settings.kafka_controller_port,
             "minio": settings.s3_port, "minio console": settings.s3_console_port, "prefect": settings.prefect_port}
    _below_ephemeral({name: port + port_offset for name, port in fixed.items()})
    return {
        "AFINA_STATE_DIR": str(state_dir),
        "AFINA_INBOX_DIR": str(state_dir / "inbox"),
        "AFINA_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{settings.kafka_port + port_offset}",
        "AFINA_KAFKA_CONTROLLER_PORT": str(settings.kafka_controller_port + port_offset),
        "AFINA_S3_ENDPOINT": f"127.0.0.1:{settings.s3_port + port_offset}",
        "AFINA_S3_CONSOLE_PORT": str(settings.s3_console_port + port_offset),
        "AFINA_PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        # the services' ports: free ones now, as the usual ones may be taken by the first stack's services
        "AFINA_INFERENCE_ADDRESS": f"127.0.0.1:{free_port()}",
        "AFINA_INFERENCE_HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
        "AFINA_CONNECTOR_METRICS_PORT": str(free_port()),
        "AFINA_NORMALIZER_METRICS_PORT": str(free_port()),
        "AFINA_INFERENCE_METRICS_PORT": str(free_port()),
        "AFINA_RETRIEVAL_METRICS_PORT": str(free_port()),
    }


def _below_ephemeral(ports: dict[str, int]) -> None:
    low = ephemeral_ports()[0] - FREE_PORTS_BELOW_EPHEMERAL  # free_port's ports, for the services, lie above
    taken = [f"{name} {port}" for name, port in ports.items() if port >= low]
    if taken:
        raise ValueError(f"sibling stack ports {', '.join(taken)} lie in the kernel's ephemeral range or just "
                         f"below it (from {low}), where outgoing connections or other services take ports: "
                         "use a smaller offset")
