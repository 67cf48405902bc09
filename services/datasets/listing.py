"""What the dataset store holds: parts and tombstones, in key order (oldest first per source)."""

from __future__ import annotations

from dataclasses import dataclass

from minio import Minio

from services.contracts import Bucket
from services.datasets import parts


@dataclass(frozen=True)
class StoredPart:
    key: str
    info: parts.PartInfo  # zeros for a tombstone

    @property
    def source_key(self) -> str:
        return parts.source_key_of(self.key)

    @property
    def sha256(self) -> str | None:
        """The document version it holds; None for a tombstone."""
        return parts.sha256_of(self.key)

    @property
    def tombstone(self) -> bool:
        return self.sha256 is None


def list_parts(client: Minio, source_id: str | None = None) -> list[StoredPart]:
    prefix = f"{parts.PREFIX}/{parts.source_key(source_id)}/" if source_id else f"{parts.PREFIX}/"
    return [StoredPart(obj.object_name, parts.PartInfo.from_metadata(obj.metadata or {}))
            for obj in client.list_objects(Bucket.DATASETS, prefix=prefix, recursive=True, include_user_meta=True)]


def newest(client: Minio, source_id: str) -> StoredPart | None:
    """The document's current entry (its newest part or tombstone); None when it has none."""
    stored = list_parts(client, source_id)
    return max(stored, key=lambda p: p.key) if stored else None


def has_version(client: Minio, source_id: str, sha256: str) -> bool:
    """Whether this version of the document has a part."""
    return any(stored.sha256 == sha256 for stored in list_parts(client, source_id))
