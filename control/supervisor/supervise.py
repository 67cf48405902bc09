"""The supervisor: afina's services as child processes, each restarted when it crashes.

One supervisor process runs them all (`afina up` starts it in the background): the connector,
two normalizer replicas, the indexer, the inference service and the served tuning deployment. Each writes
its log to logs/<name>.log. A child that exits is started again after a back-off that doubles
up to 30 s (and starts over once a child has stayed up a minute). The supervisor keeps what it
knows in run/services.json, which `afina status` reads. SIGTERM stops every child, then itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.lifecycle import FIRST_DELAY_S, MAX_DELAY_S
from services.settings import Settings

STABLE_S = 60  # up this long: the next crash starts the back-off over
NORMALIZER_REPLICAS = 2


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: list[str]  # `afina ...` arguments
    metrics_port: int = 0  # its Prometheus endpoint (0: none)
    env: dict[str, str] = field(default_factory=dict)


def services(settings: Settings) -> list[ServiceSpec]:
    """What `afina up` runs. Normalizer replicas share a consumer group; each its own metrics port."""
    normalizers = []
    for i in range(NORMALIZER_REPLICAS):
        port = settings.normalizer.metrics_port + 2 * i if settings.normalizer.metrics_port else 0
        normalizers.append(ServiceSpec(f"normalizer-{i + 1}", ["normalizer"], port,
                                       {"AFINA_NORMALIZER_METRICS_PORT": str(port)}))
    return [ServiceSpec("connector", ["connector"], settings.connector.metrics_port), *normalizers,
            ServiceSpec("indexer", ["indexer"], settings.retrieval.metrics_port),
            ServiceSpec("inference", ["serve"], settings.inference.metrics_port),
            ServiceSpec("tuning-flow", ["flows", "serve"]), ServiceSpec("tuning-trigger", ["trigger"])]


def status_file(settings: Settings) -> Path:
    return settings.state_dir / "run" / "services.json"


def log_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / "logs" / f"{name}.log"


@dataclass
class Child:
    spec: ServiceSpec
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay_s: float = FIRST_DELAY_S
    next_start: float = 0.0
    last_exit: int | None = None


def supervise(settings: Settings) -> None:
    """Run the services until SIGTERM or SIGINT; restart any that exits."""
    afina = str(Path(sys.executable).with_name("afina"))
    children = [Child(spec) for spec in services(settings)]
    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        now = time.monotonic()
        for child in children:
            if child.process is not None and child.process.poll() is not None:
                child.last_exit = child.process.returncode
                child.process = None
                child.restarts += 1
                if now - child.started_at >= STABLE_S:
                    child.delay_s = FIRST_DELAY_S
                child.next_start = now + child.delay_s
                child.delay_s = min(child.delay_s * 2, MAX_DELAY_S)
                _note(settings, child.spec.name, f"exited with status {child.last_exit}; "
                                                 f"restarting in {child.next_start - now:.1f} s")
            if child.process is None and now >= child.next_start:
                child.process = _start(afina, settings, child.spec)
                child.started_at = now
        _write_status(settings, children)
        time.sleep(0.5)
    for child in children:
        if child.process is not None:
            child.process.terminate()
    deadline = time.monotonic() + 30  # the inference service drains its calls
    for child in children:
        if child.process is not None:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
    status_file(settings).unlink(missing_ok=True)


def _start(afina: str, settings: Settings, spec: ServiceSpec) -> subprocess.Popen:
    log = log_file(settings, spec.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen([afina, *spec.command], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **spec.env})


def _note(settings: Settings, name: str, message: str) -> None:
    with log_file(settings, name).open("a") as out:
        out.write(json.dumps({"supervisor": message, "at": time.time()}) + "\n")


def _write_status(settings: Settings, children: list[Child]) -> None:
    state = {
        child.spec.name: {"pid": child.process.pid if child.process else None, "restarts": child.restarts,
                          "last_exit": child.last_exit, "log": str(log_file(settings, child.spec.name))}
        for child in children
    }
    path = status_file(settings)
    fresh = path.with_suffix(".tmp")
    fresh.write_text(json.dumps(state, indent=1))
    fresh.replace(path)  # readers see the old file or the new one
