"""Deduplication across the whole dataset, against every document any replica has accepted.

The index is a log: each document's fingerprint is published to the compacted,
single-partition topic ``afina.dedup.signatures``, and every replica reads the whole topic
into a ``FingerprintIndex`` (at start-up, then as it grows). To decide, a replica publishes its
document's fingerprint, waits until it has read the log up to that record, and compares only
with records *before* it. One partition means one order for all replicas, so when two of them
see near-duplicates at the same moment they agree on which came first. A deleted document's
fingerprint is removed (a tombstone).

A version keeps its place in that order: claimed again (a redelivery, a retry after a crash, a
duplicate normalized again) it is decided at the position it first had, so two copies never
reject each other. When a document's fingerprint goes (deleted) or is replaced (a new version),
the later documents that were its duplicates and now duplicate nothing earlier are "freed": the
caller normalizes them again, so a text never ends in no live part because its original left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from faststream.kafka import KafkaBroker

from services.contracts import Topic
from services.messaging import CompactedTopic
from services.normalizer.fingerprint import Duplicate, Fingerprint, FingerprintIndex
from services.settings import Settings

log = logging.getLogger("afina.normalizer")

WAIT_S = 60  # how long a claim waits for the log reader before the step fails (and is retried)


@dataclass(frozen=True)
class Claim:
    duplicate: Duplicate | None  # the earlier document this one duplicates, if any
    freed: list[Fingerprint] = field(default_factory=list)  # duplicates of its old version, to normalize again


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

    async def claim(self, fingerprint: Fingerprint) -> Claim:
        """Record a document's fingerprint: the earlier document it duplicates, if any, and the
        documents its previous version kept as duplicates that are free now.

        Raises FollowerBehind when the log is not read up to the record in time; called again, it
        waits for the record it sent then rather than sending another, which would come after
        documents claimed meanwhile and make the two copies of a text reject each other.
        """
        held = self.index.get(fingerprint.source_id)
        if held is not None and held[1].sha256 == fingerprint.sha256:  # claimed before: its place stands
            return Claim(self.index.earlier_duplicate(fingerprint, held[0]))
        version = (fingerprint.source_id, fingerprint.sha256)
        if (at := self._sent.get(version)) is None:
            sent = await self.broker.publish(fingerprint.model_dump_json().encode(), topic=Topic.DEDUP_SIGNATURES,
                                             key=fingerprint.source_id.encode())
            at = self._sent[version] = (sent.partition, sent.offset)
        await self.log.wait_past(*at, timeout_s=WAIT_S)
        del self._sent[version]
        return Claim(self.index.earlier_duplicate(fingerprint, at[1]), self._freed_by(held))

    async def forget(self, source_id: str) -> list[Fingerprint]:
        """A deleted document stops counting (a tombstone compacts its fingerprint away); the
        documents that were its duplicates and are free now."""
        held = self.index.get(source_id)
        sent = await self.broker.publish(None, topic=Topic.DEDUP_SIGNATURES, key=source_id.encode())
        await self.log.wait_past(sent.partition, sent.offset, timeout_s=WAIT_S)
        return self._freed_by(held)

    def _freed_by(self, gone: tuple[int, Fingerprint] | None) -> list[Fingerprint]:
        """Of the documents after a fingerprint now gone that had its text, those that duplicate
        nothing earlier any more."""
        if gone is None:
            return []
        return [later for position, later in self.index.later_duplicates(gone[1], gone[0])
                if self.index.earlier_duplicate(later, position) is None]

    def apply(self, source_id: str, value: bytes | None, offset: int) -> None:
        """One record of the log, in its order: a document's fingerprint, or its tombstone."""
        if not value:  # a tombstone
            self.index.remove(source_id)
        else:
            self.index.put(offset, Fingerprint.model_validate_json(value))
