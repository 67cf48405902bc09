"""The Prefect 3 server (API and UI) from the Python environment, its database under the state folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx

from control.localstack.process import ManagedProcess
from services.settings import Settings


def client_env(settings: Settings) -> dict[str, str]:
    """Environment for Prefect clients (flows, workers) that talk to this server, offline."""
    return {"PREFECT_API_URL": settings.prefect_api_url, "DO_NOT_TRACK": "1"}


def use_server(settings: Settings) -> None:
    """Point this process's Prefect client at afina's server; call it before importing Prefect
    (which reads its settings once). A PREFECT_* variable already set wins."""
    for key, value in client_env(settings).items():
        os.environ.setdefault(key, value)


def process(settings: Settings) -> ManagedProcess:
    return ManagedProcess(
        name="prefect",
        state_dir=settings.state_dir,
        port=settings.prefect_port,
        health=lambda: httpx.get(f"{settings.prefect_api_url}/health", timeout=2).json() is True,
    )


def start(settings: Settings, proc: ManagedProcess) -> None:
    home = settings.state_dir / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "true",
        "DO_NOT_TRACK": "1",
        **client_env(settings),
    }
    prefect = Path(sys.executable).with_name("prefect")  # the CLI installed beside this interpreter
    proc.start(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(settings.prefect_port)],
        env=env,
    )
