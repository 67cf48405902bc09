"""`afina forget SOURCE`: one document taken out of everything afina keeps.

What a person asking for it expects (a GDPR erasure, a document that should never have been
dropped): nothing of it is trained on again, and nothing of it is left to be.

1. Its deletion goes through the normalizer (a DocumentDiscovered "deleted", as the connector
   sends): its fingerprint leaves the dedup index, and the copies it kept out as duplicates are
   normalized again. The tombstone the normalizer writes is the sign it was done.
2. Every part and tombstone of it is removed, and it leaves the frozen regression set.
3. Its raw bytes are removed, unless another document has the same bytes (in a part, in the dedup
   index or in the connector's index: a copy about to be normalized again needs them), and so is
   this machine's cached copy of its parts.
4. Its row in the connector's index is tombstoned.
5. The model versions trained on a snapshot that held it are marked (`versions/<N>/forgotten.json`):
   their weights may still know it, which only training them again without it undoes.
6. The documents any of its versions held (an email's attachments) are forgotten the same way.

The file must be gone from the inbox first; otherwise the connector would read it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from pydantic import BaseModel

from services import registry
from services.connector.service import BUCKET_PREFIX
from services.contracts import Bucket, ChangeKind, DocumentDiscovered, IndexEntry, Topic
from services.datasets import parts, snapshots
from services.datasets.listing import list_parts
from services.messaging import CompactedTopic, kafka_broker, publish_event
from services.settings import Settings
from services.storage import minio_client, read_object, stat_object

log = logging.getLogger("afina.forget")
WAIT_S = 120.0  # for the normalizer's tombstone


class StillInInbox(Exception):
    """The document is still in watched storage: forgetting it now would not last."""


class Forgotten(BaseModel):
    source_id: str
    parts_removed: int
    raw_removed: list[str]
    raw_kept: list[str]  # bytes another document has too
    left_regression_set: bool
    versions_marked: list[int]
    attachments: list[Forgotten] = []  # the documents it held, forgotten too


def still_in_inbox(settings: Settings, source_id: str) -> str | None:
    """Where the document still is in watched storage, or None."""
    if source_id.startswith(BUCKET_PREFIX):
        key = source_id.removeprefix(BUCKET_PREFIX)
        found = stat_object(minio_client(settings), Bucket.INBOX, key)
        return f"the MinIO bucket {Bucket.INBOX}, key {key}" if found is not None else None
    if source_id.startswith(f"{settings.inbox_name}:"):
        path = settings.inbox_dir / source_id.removeprefix(f"{settings.inbox_name}:")
        return str(path) if path.exists() else None
    return None


async def forget(settings: Settings, source_id: str, echo: Callable[[str], None] = print) -> Forgotten:
    s3 = minio_client(settings)
    if (where := still_in_inbox(settings, source_id)) is not None:
        raise StillInInbox(f"{source_id} is still in {where}: delete it there first, or the connector "
                           "reads it again")
    if not list_parts(s3, source_id):
        raise LookupError(f"the dataset holds no part of {source_id}")

    # 1. the deletion, through the normalizer; 4. the connector's index row
    deleted = DocumentDiscovered(source_id=source_id, kind=ChangeKind.DELETED)
    broker = kafka_broker(settings, "afina-forget")
    async with broker:
        await broker.start()
        await publish_event(broker, deleted, key=source_id)
        await broker.publish(None, topic=Topic.CONNECTOR_INDEX, key=source_id.encode())
    echo("deletion sent; waiting for a normalizer to take its fingerprint out of the dedup index ...")
    tombstone = parts.tombstone_key(source_id, deleted.occurred_at)
    deadline = time.monotonic() + WAIT_S
    while stat_object(s3, Bucket.DATASETS, tombstone) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no normalizer handled the deletion within {WAIT_S:.0f} s: is afina up "
                               "(`afina status`)? Nothing was removed; run afina forget again")
        await asyncio.sleep(0.5)

    # 2. parts and the regression set (what they held read first: 6.)
    stored = list_parts(s3, source_id)
    versions = {p.sha256 for p in stored if p.sha256}
    held = sorted({a.source_id for p in stored if p.info.attachments
                   for a in parts.attachments_of(read_object(s3, Bucket.DATASETS, p.key) or b"")})
    for part in stored:
        s3.remove_object(Bucket.DATASETS, part.key)
    left_regression = _leave_regression_set(s3, parts.source_key(source_id))

    # 3. raw bytes no other document has, and the cached parts
    shared = await _bytes_in_use(settings, s3, source_id) & versions
    for sha in versions - shared:
        s3.remove_object(Bucket.RAW, sha)
    for cached in (settings.state_dir / "cache" / "parts").glob(f"{parts.source_key(source_id)}-*.parquet"):
        cached.unlink()

    # 5. the versions that were trained on it
    marked = _mark_versions(s3, parts.source_key(source_id), source_id)

    # 6. what it held, each a document of its own (one that was rejected has no part to forget)
    attachments = [await forget(settings, child, echo) for child in held if list_parts(s3, child)]
    return Forgotten(source_id=source_id, parts_removed=len(stored), raw_removed=sorted(versions - shared),
                     raw_kept=sorted(shared), left_regression_set=left_regression, versions_marked=marked,
                     attachments=attachments)


async def _bytes_in_use(settings: Settings, s3, source_id: str) -> set[str]:
    """The sha256 of every other document's bytes that afina may still read."""
    used = {p.sha256 for p in list_parts(s3) if p.sha256 and not p.key.startswith(
        f"{parts.PREFIX}/{parts.source_key(source_id)}/")}

    def fingerprint(key: str, value: bytes | None, offset: int) -> None:
        if value and key != source_id:
            used.add(json.loads(value)["sha256"])

    def indexed(key: str, value: bytes | None, offset: int) -> None:
        if value and key != source_id and not key.startswith("~"):
            used.add(IndexEntry.model_validate_json(value).sha256)

    await CompactedTopic(settings, Topic.DEDUP_SIGNATURES, fingerprint, log).start()
    await CompactedTopic(settings, Topic.CONNECTOR_INDEX, indexed, log).start()
    return used - {None}


def _leave_regression_set(s3, source_key: str) -> bool:
    data = read_object(s3, Bucket.DATASETS, snapshots.REGRESSION_KEY)
    if data is None:
        return False
    frozen = snapshots.Snapshot.model_validate_json(data)
    kept = [p for p in frozen.parts if p.source_key != source_key]
    if len(kept) == len(frozen.parts):
        return False
    snapshots.put_regression_set(s3, frozen.model_copy(update={
        "parts": kept, "eval_tokens": sum(p.tokens for p in kept if p.split == "eval")}))
    return True


def _mark_versions(s3, source_key: str, source_id: str) -> list[int]:
    held: dict[str, bool] = {}
    marked = []
    for card in registry.cards(s3):
        if card.snapshot_id is None:
            continue
        if card.snapshot_id not in held:
            snapshot = snapshots.load(s3, card.snapshot_id)
            held[card.snapshot_id] = snapshot is not None and any(p.source_key == source_key for p in snapshot.parts)
        if held[card.snapshot_id]:
            registry.mark_forgotten(s3, card.version, source_id)
            marked.append(card.version)
    return marked
