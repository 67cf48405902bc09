"""Dataset snapshots: the current parts frozen into an immutable manifest with train/eval splits.

    datasets/snapshots/<id>/manifest.json

    datasets/snapshots/latest.json          {"id": ...} of the newest snapshot

The current state of each document is the newest entry under its source key; a tombstone
means it is gone. Volatile documents (news, campaigns) are served by retrieval, not trained on:
a snapshot holds master documents only unless asked to include them. A document keeps its side in every snapshot (what was once evaluated on is
never trained on, and the reverse); a new one's side comes from its source key, within the eval
share in tokens (`assign_splits`). The id is a hash of the parts and their sides, so "nothing
changed" is "the same id".
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from minio import Minio
from pydantic import BaseModel, ConfigDict, Field

from services.contracts import Bucket, Sha256, Stability, TokenizerId
from services.datasets.listing import StoredPart, list_parts
from services.storage import put_bytes, read_object

PREFIX = "snapshots"


class SnapshotPart(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    source_key: str
    sha256: Sha256
    tokens: int
    chunks: int
    language: str
    tokenizer: TokenizerId
    split: Literal["train", "eval"]
    stability: Stability = Stability.MASTER


class Snapshot(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    created_at: datetime
    eval_percent: int
    parts: list[SnapshotPart]
    train_tokens: int = Field(ge=0)
    eval_tokens: int = Field(ge=0)
    tokenizers: list[TokenizerId]


def _bucket(source_key: str) -> int:
    return int(source_key[:8], 16) % 100


def assign_splits(tokens: dict[str, int], eval_percent: int, before: dict[str, str]) -> dict[str, str]:
    """Each document's side, from its tokens (by source key) and the sides of the previous snapshot.

    A document keeps the side it had: what was evaluated on is never trained on, and what was
    trained on is never evaluated on. A new document goes to eval when its key's bucket says so and
    the eval split stays within ``eval_percent`` of the tokens (a large manual whose bucket says eval
    goes to train rather than outweigh it); new documents are placed in bucket order, so the same
    documents always get the same sides. When no document is in eval, the new one nearest to it by
    bucket (or, with none new, any) goes there, so that every snapshot can be evaluated.
    """
    sides = {k: before[k] for k in tokens if k in before}
    budget = eval_percent / 100 * sum(tokens.values())
    in_eval = sum(tokens[k] for k, side in sides.items() if side == "eval")
    new = sorted((k for k in tokens if k not in before), key=lambda k: (_bucket(k), k))
    for key in new:
        fits = in_eval + tokens[key] <= budget
        sides[key] = "eval" if _bucket(key) < eval_percent and fits else "train"
        in_eval += tokens[key] if sides[key] == "eval" else 0
    if len(sides) > 1 and "eval" not in sides.values():
        sides[min(new or sides, key=lambda k: (_bucket(k), k))] = "eval"
    return sides


def current_parts(client: Minio, eval_percent: int, before: dict[str, str] | None = None,
                  include_volatile: bool = False) -> list[SnapshotPart]:
    """The newest entry of every document, tombstones (and, unless included, volatile documents)
    dropped, each with its side."""
    newest: dict[str, StoredPart] = {}
    for stored in list_parts(client):  # S3 lists keys in order, and a source's keys start with event time
        newest[stored.source_key] = stored
    live = {k: p for k, p in sorted(newest.items())  # a tombstone: the document is gone
            if not p.tombstone and (include_volatile or p.info.stability is Stability.MASTER)}
    sides = assign_splits({k: p.info.tokens for k, p in live.items()}, eval_percent, before or {})
    return [
        SnapshotPart(key=p.key, source_key=source_key, sha256=p.sha256,
                     tokens=p.info.tokens, chunks=p.info.chunks, language=p.info.language,
                     tokenizer=p.info.tokenizer, split=sides[source_key], stability=p.info.stability)
        for source_key, p in live.items()
    ]


def latest(client: Minio) -> Snapshot | None:
    data = read_object(client, Bucket.DATASETS, f"{PREFIX}/latest.json")
    return None if data is None else load(client, json.loads(data)["id"])


def freeze(client: Minio, eval_percent: int = 10, include_volatile: bool = False) -> Snapshot:
    """Write the manifest of the current parts (once per distinct content) and return it."""
    previous = latest(client)
    found = current_parts(client, eval_percent, {p.source_key: p.split for p in previous.parts} if previous else {},
                          include_volatile)
    content = "\n".join(f"{p.key} {p.split}" for p in found) + f"|{eval_percent}"
    snapshot_id = hashlib.sha256(content.encode()).hexdigest()[:16]
    existing = load(client, snapshot_id)
    if existing is not None:
        _put_json(client, f"{PREFIX}/latest.json", {"id": snapshot_id})
        return existing
    snapshot = Snapshot(
        id=snapshot_id, created_at=datetime.now(UTC), eval_percent=eval_percent, parts=found,
        train_tokens=sum(p.tokens for p in found if p.split == "train"),
        eval_tokens=sum(p.tokens for p in found if p.split == "eval"),
        tokenizers=sorted({p.tokenizer for p in found}),
    )
    data = snapshot.model_dump_json(indent=1).encode()
    put_bytes(client, Bucket.DATASETS, f"{PREFIX}/{snapshot_id}/manifest.json", data)
    _put_json(client, f"{PREFIX}/latest.json", {"id": snapshot_id})
    return snapshot


REGRESSION_KEY = f"{PREFIX}/regression.json"


def regression_set(client: Minio, snapshot: Snapshot) -> Snapshot:
    """The frozen regression set: the eval documents of the first snapshot tuned on, kept as they
    were then (parts are immutable), so every later candidate is checked for forgetting them."""
    data = read_object(client, Bucket.DATASETS, REGRESSION_KEY)
    if data is not None:
        return Snapshot.model_validate_json(data)
    frozen = snapshot.model_copy(update={"parts": [p for p in snapshot.parts if p.split == "eval"], "train_tokens": 0})
    put_regression_set(client, frozen)
    return frozen


def put_regression_set(client: Minio, frozen: Snapshot) -> None:
    """Write the regression set (once by `regression_set`; again only when `afina forget` takes a
    document out of it)."""
    _put_json(client, REGRESSION_KEY, json.loads(frozen.model_dump_json()))


def _put_json(client: Minio, key: str, value: dict) -> None:
    put_bytes(client, Bucket.DATASETS, key, json.dumps(value).encode())


def split_parts(snapshot: Snapshot, split: str, tokenizer: TokenizerId) -> tuple[list[SnapshotPart], list[SnapshotPart]]:
    """The split's parts whose token ids ``tokenizer`` made (any version of one base tokenizes
    alike), and those another tokenizer made, which a model on this base cannot train on."""
    ours, others = [], []
    for part in snapshot.parts:
        if part.split == split:
            (ours if part.tokenizer.content_hash == tokenizer.content_hash else others).append(part)
    return ours, others


def download(client: Minio, chosen: list[SnapshotPart], folder: Path) -> list[Path]:
    """Parts as local Parquet files (parts are immutable: a file already there is reused)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for part in chosen:
        path = folder / f"{part.source_key}-{part.sha256}.parquet"
        if not path.exists():
            client.fget_object(Bucket.DATASETS, part.key, str(path))
        paths.append(path)
    return paths


def load(client: Minio, snapshot_id: str) -> Snapshot | None:
    data = read_object(client, Bucket.DATASETS, f"{PREFIX}/{snapshot_id}/manifest.json")
    return None if data is None else Snapshot.model_validate_json(data)


def list_ids(client: Minio) -> list[str]:
    found = client.list_objects(Bucket.DATASETS, prefix=f"{PREFIX}/")
    return sorted({o.object_name.split("/")[1] for o in found if o.is_dir})


def summary(snapshot: Snapshot) -> dict:
    return json.loads(snapshot.model_dump_json(exclude={"parts"})) | {
        "documents": len(snapshot.parts),
        "train_documents": sum(p.split == "train" for p in snapshot.parts),
        "eval_documents": sum(p.split == "eval" for p in snapshot.parts),
    }
