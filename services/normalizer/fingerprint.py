"""Text fingerprints for deduplication, and the in-memory index that compares them: exact (a hash
of the normalized text) and near (MinHash signatures with LSH bands). Pure: the fingerprints are
computed in the worker processes, and ``dedup.DedupLog`` keeps the index in step with Kafka.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash
from pydantic import BaseModel, ConfigDict

NUM_PERM = 128
BANDS, ROWS = 16, 8  # 16 bands of 8 rows: candidates from ~0.7 Jaccard, then checked against 0.8
NEAR_THRESHOLD = 0.8
SHINGLE_WORDS = 3
_WORD = re.compile(r"\w+")


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
    # what it takes to normalize this version again, should it be freed from being a duplicate
    media_type: str | None = None
    size: int | None = None

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


@dataclass
class _Entry:
    position: int  # where it stands in the log's one order
    fingerprint: Fingerprint
    sig: np.ndarray


class FingerprintIndex:
    """Every document's current fingerprint, by its position in one shared order (the log's offsets):
    a document is a duplicate only of one that came before it."""

    def __init__(self) -> None:
        self._by_source: dict[str, _Entry] = {}
        self._exact: dict[str, set[str]] = defaultdict(set)  # exact hash → source ids
        self._bands: dict[tuple[int, bytes], set[str]] = defaultdict(set)  # (band, hash) → source ids

    def __len__(self) -> int:
        return len(self._by_source)

    def put(self, position: int, fingerprint: Fingerprint) -> None:
        """The document's fingerprint is now this one (replacing its earlier version's)."""
        self.remove(fingerprint.source_id)
        entry = _Entry(position, fingerprint, fingerprint.sig())
        self._by_source[fingerprint.source_id] = entry
        self._exact[fingerprint.exact].add(fingerprint.source_id)
        for band, h in enumerate(band_hashes(entry.sig)):
            self._bands[(band, h)].add(fingerprint.source_id)

    def remove(self, source_id: str) -> None:
        entry = self._by_source.pop(source_id, None)
        if entry is None:
            return
        self._exact[entry.fingerprint.exact].discard(source_id)
        for band, h in enumerate(band_hashes(entry.sig)):
            self._bands[(band, h)].discard(source_id)

    def get(self, source_id: str) -> tuple[int, Fingerprint] | None:
        """The document's position in the order and its fingerprint, or None."""
        entry = self._by_source.get(source_id)
        return None if entry is None else (entry.position, entry.fingerprint)

    def later_duplicates(self, fingerprint: Fingerprint, position: int) -> list[tuple[int, Fingerprint]]:
        """The documents after ``position`` whose text is the same as or near this one's: those it
        made duplicates (other than its own versions)."""
        sig = fingerprint.sig()
        candidates = {s for band, h in enumerate(band_hashes(sig)) for s in self._bands[(band, h)]}
        found = []
        for source_id in candidates | self._exact[fingerprint.exact]:
            entry = self._by_source.get(source_id)
            if entry is None or entry.position <= position or source_id == fingerprint.source_id:
                continue
            if entry.fingerprint.exact == fingerprint.exact or similarity(sig, entry.sig) >= NEAR_THRESHOLD:
                found.append((entry.position, entry.fingerprint))
        return sorted(found, key=lambda pair: pair[0])

    def holds(self, source_id: str, sha256: str) -> bool:
        """Whether this version of the document is the one whose fingerprint the index holds."""
        entry = self._by_source.get(source_id)
        return entry is not None and entry.fingerprint.sha256 == sha256

    def earlier_duplicate(self, fingerprint: Fingerprint, position: int) -> Duplicate | None:
        """The first document before ``position`` whose text is the same as or near this one's; a
        document's own earlier versions never count."""

        def earlier(source_id: str) -> _Entry | None:
            entry = self._by_source.get(source_id)
            return entry if entry and entry.position < position and source_id != fingerprint.source_id else None

        exact = [e for s in self._exact[fingerprint.exact] if (e := earlier(s))]
        if exact:
            return Duplicate(min(exact, key=lambda e: e.position).fingerprint.source_id, 1.0)
        sig = fingerprint.sig()
        candidates = {s for band, h in enumerate(band_hashes(sig)) for s in self._bands[(band, h)]}
        near = [(e, score) for s in candidates if (e := earlier(s)) and (score := similarity(sig, e.sig)) >= NEAR_THRESHOLD]
        if not near:
            return None
        first, score = min(near, key=lambda pair: pair[0].position)
        return Duplicate(first.fingerprint.source_id, score)
