"""Fixtures of the integration tests (the stack itself comes from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.contracts import Topic
from services.settings import Settings
from tests.integration.harness import EventLog


@pytest.fixture
def event_log(local_stack: Settings) -> Iterator[EventLog]:
    log = EventLog(local_stack, [Topic.DOCUMENTS_DISCOVERED, Topic.DOCUMENTS_REJECTED])
    yield log
    log.close()
