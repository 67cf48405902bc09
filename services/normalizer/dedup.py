"""Deduplication across the whole dataset, against every document any replica has accepted.

The index is a log: each document's fingerprint is published to the compacted,
single-partition topic ``afina.dedup.signatures``, and every replica reads the whole topic
into a ``FingerprintIndex`` (at start-up, then as it grows). To decide, a replica publishes its
document's fingerprint, waits until it has read the log up to that record, and compares only
with records *before* it. One partition means one order for all replicas, so when two of them
see near-duplicates at the same moment they agree on which came first. A deleted document's
fingerprint is removed (a tombstone).
"""

from __future__ import annotations

import logging

from faststream.kafka import KafkaBroker

from services.contracts import Topic
from services.messaging import CompactedTopic
from services.normalizer.fingerprint import Duplicate, Fingerprint, FingerprintIndex
from services.settings import Settings

log = logging.getLogger("afina.normalizer")

WAIT_S = 60  # how long a claim waits for the log reader before the step fails (and is retried)


class DedupLog:
    def __init__(self, settings: Settings, broker: KafkaBroker) -> None:
        self.broker = broker
        self.index = FingerprintIndex()
        self.log = CompactedTopic(settings, Topic.DEDUP_SIGNATURES, self.apply, log)
        self._sent: dict[tuple[str, str], tuple[int, int]] = {}  # claims sent, not yet read back

    async def start(self) -> None:
        """Read the whole log, then keep following it."""
        await self.log.start(follow=True)
        log.info("dedup index loaded", extra={"documents": len(self.index)})

    async def stop(self) -> None:
        await self.log.stop()

    def claimed(self, source_id: str, sha256: str) -> bool:
        """Whether this version of the document has claimed its fingerprint already (as far as
        this replica has read the index): only then may it have a part."""
        return self.index.holds(source_id, sha256)

    async def claim(self, fingerprint: Fingerprint) -> Duplicate | None:
        """Record a document's fingerprint; the earlier document it duplicates, if any.

        Raises FollowerBehind when the log is not read up to the record in time; called again, it
        waits for the record it sent then rather than sending another, which would come after
        documents claimed meanwhile and make the two copies of a text reject each other.
        """
        version = (fingerprint.source_id, fingerprint.sha256)
        if (at := self._sent.get(version)) is None:
            sent = await self.broker.publish(fingerprint.model_dump_json().encode(), topic=Topic.DEDUP_SIGNATURES,
                                             key=fingerprint.source_id.encode())
            at = self._sent[version] = (sent.partition, sent.offset)
        await self.log.wait_past(*at, timeout_s=WAIT_S)
        del self._sent[version]
        return self.index.earlier_duplicate(fingerprint, at[1])

    async def forget(self, source_id: str) -> None:
        """A deleted document stops counting (a tombstone compacts its fingerprint away)."""
        sent = await self.broker.publish(None, topic=Topic.DEDUP_SIGNATURES, key=source_id.encode())
        await self.log.wait_past(sent.partition, sent.offset, timeout_s=WAIT_S)

    def apply(self, source_id: str, value: bytes | None, offset: int) -> None:
        """One record of the log, in its order: a document's fingerprint, or its tombstone."""
        if not value:  # a tombstone
            self.index.remove(source_id)
        else:
            self.index.put(offset, Fingerprint.model_validate_json(value))
