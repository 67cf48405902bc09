"""Moving the champion alias and announcing it: ModelPromoted on Kafka after the alias moved."""

from __future__ import annotations

from services import registry
from services.contracts import ModelPromoted
from services.messaging import kafka_broker, publish_event
from services.settings import Settings
from services.storage import minio_client


async def announce(settings: Settings, version: int, previous: int | None) -> ModelPromoted:
    card = registry.read_card(minio_client(settings), version)
    if card is None:
        raise LookupError(f"there is no model version {version} in the registry")
    event = ModelPromoted(version=version, previous_version=previous, snapshot_id=card.snapshot_id or "",
                          base_model=card.base_model, metrics=card.metrics)
    broker = kafka_broker(settings, "afina-registry")
    async with broker:
        await broker.start()
        await publish_event(broker, event, key="champion")
    return event


async def promote(settings: Settings, version: int, expected: int | None = registry.ANY) -> ModelPromoted:
    """Move the champion to `version` (only from `expected`, when given) and announce it."""
    version, previous = registry.promote(minio_client(settings), version, expected)
    return await announce(settings, version, previous)


async def rollback(settings: Settings) -> ModelPromoted:
    version, previous = registry.rollback(minio_client(settings))
    return await announce(settings, version, previous)
