"""What the dataset store holds: parts and tombstones, newest first per source."""

from __future__ import annotations

from dataclasses import dataclass

from services.contracts import Bucket, Settings
from services.normalizer import parts
from services.storage import minio_client


@dataclass(frozen=True)
class StoredPart:
    key: str
    chunks: int
    tokens: int
    language: str
    tokenizer: str


def list_parts(settings: Settings, source_id: str | None = None) -> list[StoredPart]:
    client = minio_client(settings)
    prefix = f"{parts.PREFIX}/{parts.source_key(source_id)}/" if source_id else f"{parts.PREFIX}/"
    found = []
    for obj in client.list_objects(Bucket.DATASETS, prefix=prefix, recursive=True, include_user_meta=True):
        info = parts.PartInfo.from_metadata(obj.metadata or {})
        found.append(StoredPart(obj.object_name, info.chunks, info.tokens, info.language, info.tokenizer))
    return found
