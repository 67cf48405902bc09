"""Shared fixtures. Integration tests run against the real local stack (Kafka, MinIO, Prefect).

The session fixture starts the stack once, or reuses one already running in the same
state folder, and stops at the end only the servers it started itself.
"""

from __future__ import annotations

import os

import pytest

from control import localstack
from control.localstack.prefect import use_server
from services.settings import Settings

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
