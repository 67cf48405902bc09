"""The whole of afina on one machine: `afina up | down | status`.

`up` starts the local stack (Kafka, MinIO, Prefect), makes sure the registry has a champion
(registering the base model, SmolLM2 by default, the first time), then starts the supervisor, which runs the connector,
two normalizer replicas, the indexer, the inference service and the served tuning deployment, restarting
any that crashes. Run again, it reuses what runs. `down` stops the services, then the stack.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from control import localstack
from control.localstack.process import ManagedProcess, StackError, log_tail
from control.supervisor import supervise
from services.settings import Settings

__all__ = ["ServiceStatus", "StackError", "up", "down", "status"]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # running, unhealthy, restarting, stopped
    pid: int | None
    restarts: int
    address: str
    log: str


def _address(settings: Settings, spec: supervise.ServiceSpec) -> str:
    metrics = f"metrics http://127.0.0.1:{spec.metrics_port}/metrics" if spec.metrics_port else ""
    tuning = settings.tuning
    where = {"connector": f"inbox {settings.inbox_dir}",
             "inference": f"grpc {settings.inference.address}" + (
                 f"  openai http://{settings.inference.http_address}/v1" if settings.inference.http_address else ""),
             "tuning-flow": f"deployment afina-tuning/scheduled, cron '{tuning.schedule}'",
             "tuning-trigger": f"a run at {tuning.trigger_documents or '-'} new master documents or "
                               f"{tuning.trigger_tokens or '-'} tokens"}
    return "  ".join(part for part in (where.get(spec.name, ""), metrics) if part)


def _healthy(settings: Settings, spec: supervise.ServiceSpec) -> bool:
    """The service's own health: gRPC health for inference, the metrics endpoint for the others."""
    try:
        if spec.name == "inference":
            import grpc
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            with grpc.insecure_channel(settings.inference.address) as channel:
                answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            return answer.status == health_pb2.HealthCheckResponse.SERVING
        port = spec.metrics_port
        return not port or httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
    except Exception:  # any failed probe means "not healthy (yet)"
        return False


def supervisor_process(settings: Settings) -> ManagedProcess:
    ports = [spec.metrics_port for spec in supervise.services(settings) if spec.metrics_port]
    return ManagedProcess(
        name="supervisor", state_dir=settings.state_dir, port=settings.inference.port,
        health=lambda: all(s.state == "running" for s in status(settings)), extra_ports=tuple(ports),
    )


def status(settings: Settings) -> list[ServiceStatus]:
    try:
        known = json.loads(supervise.status_file(settings).read_text())
    except (FileNotFoundError, ValueError):
        known = {}
    found = []
    for spec in supervise.services(settings):
        child = known.get(spec.name, {})
        pid = child.get("pid")
        if not child:
            state = "stopped"
        elif pid is None:
            state = "restarting"
        else:
            state = "running" if _healthy(settings, spec) else "unhealthy"
        found.append(ServiceStatus(spec.name, state, pid, child.get("restarts", 0), _address(settings, spec),
                                   str(supervise.log_file(settings, spec.name))))
    return found


def up(settings: Settings, echo: Callable[[str], None] = print, timeout_s: float = 300) -> list[ServiceStatus]:
    from services.tuning.base import init_base

    localstack.up(settings, echo=echo)
    init_base(settings, echo=echo)
    process = supervisor_process(settings)
    if process.pid() is None:
        process.check_ports_free()
        echo("starting the services (connector, normalizer x2, indexer, inference, tuning deployment and trigger) ...")
        process.start([str(Path(sys.executable).with_name("afina")), "supervise"])
    try:
        process.wait_healthy(timeout_s)
    except StackError:
        sick = [s for s in status(settings) if s.state != "running"]
        raise StackError("these services did not become healthy: " + "; ".join(
            f"{s.name} ({s.state}, log {s.log})" for s in sick) + "".join(
            f"\n--- the end of {s.name}'s log:\n{log_tail(Path(s.log))}" for s in sick)) from None
    return status(settings)


def down(settings: Settings) -> list[str]:
    """Stop the services, then the stack's servers that `up` started."""
    stopped = ["services"] if supervisor_process(settings).stop(timeout_s=45) else []
    return stopped + localstack.down(settings)
