"""Dataset snapshots: the current parts frozen into an immutable manifest with train/eval splits.

    datasets/snapshots/<id>/manifest.json

The current state of each document is the newest entry under its source key; a tombstone
means it is gone. The split is decided by the source key alone, so a document keeps its
side in every snapshot: what was once evaluated on is never trained on. The id is a hash
of the parts in it, so "nothing changed" is "the same id".
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime

from minio import Minio
from pydantic import BaseModel, ConfigDict, Field

from services.contracts import Bucket
from services.normalizer.listing import StoredPart, list_parts
from services.storage import read_object

PREFIX = "snapshots"


class SnapshotPart(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    source_key: str
    sha256: str
    tokens: int
    chunks: int
    language: str
    tokenizer: str
    split: str  # "train" or "eval"


class Snapshot(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    created_at: datetime
    eval_percent: int
    parts: list[SnapshotPart]
    train_tokens: int = Field(ge=0)
    eval_tokens: int = Field(ge=0)
    tokenizers: list[str]


def split_of(source_key: str, eval_percent: int) -> str:
    return "eval" if int(source_key[:8], 16) % 100 < eval_percent else "train"


def current_parts(client: Minio, eval_percent: int) -> list[SnapshotPart]:
    """The newest entry of every document, tombstones dropped."""
    newest: dict[str, StoredPart] = {}
    for stored in list_parts(client):  # S3 lists keys in order, and a source's keys start with event time
        newest[stored.source_key] = stored
    return [
        SnapshotPart(key=p.key, source_key=source_key, sha256=p.key.rsplit("-", 1)[1].removesuffix(".parquet"),
                     tokens=p.info.tokens, chunks=p.info.chunks, language=p.info.language,
                     tokenizer=p.info.tokenizer, split=split_of(source_key, eval_percent))
        for source_key, p in sorted(newest.items())
        if not p.tombstone  # a tombstone: the document is gone
    ]


def freeze(client: Minio, eval_percent: int = 10) -> Snapshot:
    """Write the manifest of the current parts (once per distinct content) and return it."""
    found = current_parts(client, eval_percent)
    snapshot_id = hashlib.sha256("\n".join(p.key for p in found).encode() + f"|{eval_percent}".encode()).hexdigest()[:16]
    existing = load(client, snapshot_id)
    if existing is not None:
        return existing
    snapshot = Snapshot(
        id=snapshot_id, created_at=datetime.now(UTC), eval_percent=eval_percent, parts=found,
        train_tokens=sum(p.tokens for p in found if p.split == "train"),
        eval_tokens=sum(p.tokens for p in found if p.split == "eval"),
        tokenizers=sorted({p.tokenizer for p in found} - {""}),
    )
    data = snapshot.model_dump_json(indent=1).encode()
    client.put_object(Bucket.DATASETS, f"{PREFIX}/{snapshot_id}/manifest.json", io.BytesIO(data), len(data))
    return snapshot


def load(client: Minio, snapshot_id: str) -> Snapshot | None:
    data = read_object(client, Bucket.DATASETS, f"{PREFIX}/{snapshot_id}/manifest.json")
    return None if data is None else Snapshot.model_validate_json(data)


def list_ids(client: Minio) -> list[str]:
    return sorted({o.object_name.split("/")[1] for o in client.list_objects(Bucket.DATASETS, prefix=f"{PREFIX}/")})


def summary(snapshot: Snapshot) -> dict:
    return json.loads(snapshot.model_dump_json(exclude={"parts"})) | {
        "documents": len(snapshot.parts),
        "train_documents": sum(p.split == "train" for p in snapshot.parts),
        "eval_documents": sum(p.split == "eval" for p in snapshot.parts),
    }
