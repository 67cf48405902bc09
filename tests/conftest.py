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

# Where speed matters the tests tune afina-tiny, with the recipe that suits it and a fixed number
# of steps (the defaults suit SmolLM2 and follow the data); a test that needs SmolLM2 says so.
TINY_RECIPE = {"AFINA_BASE_MODEL": "afina-tiny", "AFINA_TUNING_STEPS": "60", "AFINA_TUNING_LEARNING_RATE": "1e-2",
               "AFINA_TUNING_LORA_R": "8", "AFINA_TUNING_SEQUENCE_LENGTH": "128", "AFINA_TUNING_MICRO_BATCH": "8",
               # fp32 keeps afina-tiny's gate decisions as they were measured; test_training runs bf16 apart
               "AFINA_TUNING_PRECISION": "fp32"}
for name, value in TINY_RECIPE.items():
    os.environ.setdefault(name, value)
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
