"""Deduplication across the whole dataset: exact (hash of the normalized text) and near
(MinHash signatures with LSH bands), against every document any replica has accepted.

The index is a log: each document's fingerprint is published to the compacted,
single-partition topic ``afina.dedup.signatures``, and every replica reads the whole topic
into memory (at start-up, then as it grows). To decide, a replica publishes its document's
fingerprint, waits until it has read the log up to that record, and compares only with
records *before* it. One partition means one order for all replicas, so when two of them
see near-duplicates at the same moment they agree on which came first. A document's own
earlier versions never count; a deleted document's fingerprint is removed (a tombstone).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from datasketch import MinHash
from faststream.kafka import KafkaBroker
from pydantic import BaseModel, ConfigDict

from services.contracts import Topic
from services.settings import Settings

NUM_PERM = 128
BANDS, ROWS = 16, 8  # 16 bands of 8 rows: candidates from ~0.7 Jaccard, then checked against 0.8
NEAR_THRESHOLD = 0.8
SHINGLE_WORDS = 3
_WORD = re.compile(r"\w+")

log = logging.getLogger("afina.normalizer")


# ---- fingerprints (pure; computed in the worker processes) -------------------------------


def normalized_hash(text: str) -> str:
    """Equal for texts that differ only in case, spacing and punctuation."""
    return hashlib.sha256(" ".join(_WORD.findall(text.casefold())).encode()).hexdigest()


def signature(text: str) -> np.ndarray:
    words = _WORD.findall(text.casefold())
    shingles = {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))}
    minhash = MinHash(num_perm=NUM_PERM, seed=1)
    minhash.update_batch([s.encode() for s in shingles])
    return minhash.hashvalues.astype(np.uint64)


def band_hashes(sig: np.ndarray) -> list[bytes]:
    return [hashlib.blake2b(sig[b * ROWS : (b + 1) * ROWS].tobytes(), digest_size=8).digest() for b in range(BANDS)]


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def fingerprint_fields(text: str) -> tuple[str, str]:
    """The exact hash and the base64 MinHash signature of a text (the costly part, done in a worker)."""
    return normalized_hash(text), base64.b64encode(signature(text).astype("<u8").tobytes()).decode()


class Fingerprint(BaseModel):
    """A document's entry in the dedup log (JSON, keyed by source id)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = 1
    source_id: str
    sha256: str
    exact: str
    minhash: str  # base64 of NUM_PERM little-endian uint64

    @classmethod
    def of(cls, source_id: str, sha256: str, text: str) -> Fingerprint:
        exact, minhash = fingerprint_fields(text)
        return cls(source_id=source_id, sha256=sha256, exact=exact, minhash=minhash)

    def sig(self) -> np.ndarray:
        return np.frombuffer(base64.b64decode(self.minhash), dtype="<u8")


@dataclass(frozen=True)
class Duplicate:
    of: str  # the source id of the document that came first
    similarity: float  # 1.0 for an exact duplicate


# ---- the shared index ---------------------------------------------------------------------


@dataclass
class _Entry:
    offset: int
    fingerprint: Fingerprint
    sig: np.ndarray


class DedupLog:
    def __init__(self, settings: Settings, broker: KafkaBroker) -> None:
        self.settings = settings
        self.broker = broker
        self._by_source: dict[str, _Entry] = {}
        self._exact: dict[str, set[str]] = defaultdict(set)  # exact hash → source ids
        self._bands: dict[tuple[int, bytes], set[str]] = defaultdict(set)  # (band, hash) → source ids
        self._read_up_to = -1  # offset of the last record applied
        self._progress = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Read the whole log, then keep following it."""
        partition = TopicPartition(Topic.DEDUP_SIGNATURES, 0)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap_servers,
                                          enable_auto_commit=False)
        await self._consumer.start()
        self._consumer.assign([partition])
        await self._consumer.seek_to_beginning(partition)
        end = (await self._consumer.end_offsets([partition]))[partition]
        self._task = asyncio.create_task(self._follow())
        await self._wait_for(end - 1)
        log.info("dedup index loaded", extra={"documents": len(self._by_source), "log_end": end})

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._consumer:
            await self._consumer.stop()

    def claimed(self, source_id: str, sha256: str) -> bool:
        """Whether this version of the document has claimed its fingerprint already (as far as
        this replica has read the index): only then may it have a part."""
        entry = self._by_source.get(source_id)
        return entry is not None and entry.fingerprint.sha256 == sha256

    async def claim(self, fingerprint: Fingerprint) -> Duplicate | None:
        """Record a document's fingerprint; the earlier document it duplicates, if any."""
        sent = await self.broker.publish(fingerprint.model_dump_json().encode(), topic=Topic.DEDUP_SIGNATURES,
                                         key=fingerprint.source_id.encode())
        await self._wait_for(sent.offset)
        return self._earlier_duplicate(fingerprint, sent.offset)

    async def forget(self, source_id: str) -> None:
        """A deleted document stops counting (a tombstone compacts its fingerprint away)."""
        sent = await self.broker.publish(None, topic=Topic.DEDUP_SIGNATURES, key=source_id.encode())
        await self._wait_for(sent.offset)

    def _earlier_duplicate(self, fingerprint: Fingerprint, offset: int) -> Duplicate | None:
        def earlier(source_id: str) -> _Entry | None:
            entry = self._by_source.get(source_id)
            return entry if entry and entry.offset < offset and source_id != fingerprint.source_id else None

        exact = [e for s in self._exact[fingerprint.exact] if (e := earlier(s))]
        if exact:
            return Duplicate(min(exact, key=lambda e: e.offset).fingerprint.source_id, 1.0)
        sig = fingerprint.sig()
        candidates = {s for band, h in enumerate(band_hashes(sig)) for s in self._bands[(band, h)]}
        near = [(e, score) for s in candidates if (e := earlier(s)) and (score := similarity(sig, e.sig)) >= NEAR_THRESHOLD]
        if not near:
            return None
        first, score = min(near, key=lambda pair: pair[0].offset)
        return Duplicate(first.fingerprint.source_id, score)

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    self._apply(record.key.decode(), record.value, record.offset)
            async with self._progress:
                if batches:
                    self._read_up_to = max(r.offset for rs in batches.values() for r in rs)
                self._progress.notify_all()

    async def _wait_for(self, offset: int) -> None:
        async with self._progress:
            await self._progress.wait_for(lambda: self._read_up_to >= offset)

    def _apply(self, source_id: str, value: bytes | None, offset: int) -> None:
        self._remove(source_id)
        if not value:
            return  # tombstone
        fingerprint = Fingerprint.model_validate_json(value)
        entry = _Entry(offset, fingerprint, fingerprint.sig())
        self._by_source[source_id] = entry
        self._exact[fingerprint.exact].add(source_id)
        for band, h in enumerate(band_hashes(entry.sig)):
            self._bands[(band, h)].add(source_id)

    def _remove(self, source_id: str) -> None:
        entry = self._by_source.pop(source_id, None)
        if entry is None:
            return
        self._exact[entry.fingerprint.exact].discard(source_id)
        for band, h in enumerate(band_hashes(entry.sig)):
            self._bands[(band, h)].discard(source_id)
