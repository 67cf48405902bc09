"""Shared fixtures. Integration tests run against the real local stack (Kafka, MinIO, Prefect).

The tests have a stack of their own, beside the one `make demo` (`afina up`) leaves running: its
own state folder (`.afina/test`, sharing the built tools and base models) and ports (1000 above
the usual ones), so afina's running services never consume the tests' documents or move their
champion. The session fixture starts it once, or reuses one already running in the same state
folder, and stops at the end only the servers it started itself.
"""

from __future__ import annotations

import os

import pytest

from control import localstack
from control.localstack.prefect import use_server
from services.settings import Settings

# before any Settings is read, so that every test and every process it starts uses the test stack
os.environ.update(localstack.sibling_env(Settings(), Settings().state_dir / "test", port_offset=1000))
use_server(Settings())  # before anything imports Prefect


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def local_stack(settings: Settings):
    parts = localstack.up(settings, echo=lambda line: None)
    started = [part.name for part in parts if part.state == "started"]
    yield settings
    if started and not os.environ.get("AFINA_KEEP_STACK"):
        localstack.down(settings, only=started)
