"""The connector's durable index: what was last published for each source id.

It lives on a compacted Kafka topic, so any replica, on any machine, rebuilds it at
start-up and finds what changed while no connector was running.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker

from services.contracts import ChangeKind, InboxClaim, IndexEntry, Topic
from services.lifecycle import retry_forever
from services.messaging import CompactedTopic, TopicMissing
from services.settings import Settings

log = logging.getLogger("afina.connector")


def decide(previous: IndexEntry | None, sha256: str | None) -> ChangeKind | None:
    """The event a document's current content calls for (None: nothing to publish).

    ``sha256`` is None when the document is gone.
    """
    known = previous is not None and not previous.deleted and previous.sha256 is not None
    if sha256 is None:
        return ChangeKind.DELETED if known else None
    if not known:
        return ChangeKind.CREATED
    if previous.sha256 == sha256:
        return None  # re-saved with the same bytes
    return ChangeKind.UPDATED


async def load(settings: Settings, prefixes: tuple[str, ...]) -> tuple[dict[str, IndexEntry], InboxClaim | None]:
    """The index as it stands: the compacted topic read from its start to its current end, for our
    source ids, and the claim on our inbox name (None: never claimed)."""
    entries: dict[str, IndexEntry] = {}
    claim_key = InboxClaim.key(settings.inbox_name)
    claims: list[InboxClaim] = []

    def apply(key: str, value: bytes | None, offset: int) -> None:
        if key == claim_key and value:
            claims.append(InboxClaim.model_validate_json(value))
        elif key.startswith(prefixes):
            if value:
                entries[key] = IndexEntry.model_validate_json(value)
            else:
                entries.pop(key, None)

    await CompactedTopic(settings, Topic.CONNECTOR_INDEX, apply, log).start()
    return entries, (claims[-1] if claims else None)


async def claim(broker: KafkaBroker, inbox_name: str, claim: InboxClaim) -> None:
    """Record that ``claim.folder_id`` owns the inbox name (acknowledged: later runs rely on it)."""
    await broker.publish(claim.model_dump_json().encode(), topic=Topic.CONNECTOR_INDEX,
                         key=InboxClaim.key(inbox_name).encode())


async def record(broker: KafkaBroker, source_id: str, entry: IndexEntry) -> None:
    """Record what was published, without waiting for the broker's acknowledgement.

    The event it follows is already acknowledged; should this record be lost, a restart
    publishes the event once more (at-least-once), so a round trip per document is saved.
    """
    sent = await broker.publish(
        entry.model_dump_json().encode(), topic=Topic.CONNECTOR_INDEX, key=source_id.encode(), no_confirm=True
    )
    sent.add_done_callback(_log_lost_record)


def _log_lost_record(sent: asyncio.Future) -> None:
    if not sent.cancelled() and sent.exception() is not None:
        log.warning(
            "an index record was not written; the event may be published again after a restart",
            extra={"error": repr(sent.exception())},
        )


async def load_when_available(
    settings: Settings, prefixes: tuple[str, ...], log: logging.Logger
) -> tuple[dict[str, IndexEntry], InboxClaim | None]:
    """load(), retried with backoff while Kafka is unreachable."""
    return await retry_forever(
        lambda: load(settings, prefixes), "reading the connector index", log,
        retry_on=(KafkaError, OSError, asyncio.TimeoutError, TopicMissing),
    )
