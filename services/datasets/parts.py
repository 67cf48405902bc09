"""Dataset parts: one immutable Parquet file per document version, at a deterministic key.

    datasets/parts/<source key>/<event time>-<sha256>.parquet   a document version
    datasets/parts/<source key>/<event time>-deleted.json       a tombstone

The source key is a hash of the source id; the event time is that of the connector's
event, so a redelivered event rewrites the same key with the same bytes (idempotent), and
the newest entry under a source key is the document's current state.

A part of a document that holds others (an email's attachments) lists them in its Parquet
metadata: each is its own document, under the source id ``<holder's source id>#<name>``, and
goes when its holder's version does.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq
from minio import Minio

from services.contracts import Bucket, Stability

PREFIX = "parts"

SCHEMA = pa.schema([
    ("source_id", pa.string()),
    ("sha256", pa.string()),
    ("chunk_index", pa.int32()),
    ("kind", pa.string()),  # "text", or "chat" for a supervised example
    ("text", pa.string()),
    ("messages", pa.string()),  # chat: JSON list of {"role", "content"}; null for text
    ("token_ids", pa.list_(pa.int32())),
    ("n_tokens", pa.int32()),
    ("language", pa.string()),
    ("media_type", pa.string()),
    ("tokenizer", pa.string()),
    ("stability", pa.string()),  # a contracts.Stability; parts written before it existed have no column: master
    ("section", pa.string()),  # the chunk's heading path ("Handbook > Leave"); null where none. Newer than stability
    ("page", pa.int32()),  # the page the chunk starts on (PDF pages, slides); null for formats without pages
    ("discovered_at", pa.timestamp("us", tz="UTC")),
    ("normalized_at", pa.timestamp("us", tz="UTC")),
])


ATTACHMENTS_KEY = b"afina-attachments"


@dataclass(frozen=True)
class Attachment:
    """A document found inside another: its raw bytes are raw/<sha256>, like any document's."""

    source_id: str
    sha256: str
    size: int
    media_type: str

    @classmethod
    def of(cls, holder: str, name: str, data: bytes, media_type: str) -> Attachment:
        return cls(f"{holder}#{name}", hashlib.sha256(data).hexdigest(), len(data), media_type)


@dataclass(frozen=True)
class PartInfo:
    """What a part's object metadata says, enough to announce it again without reading it."""

    chunks: int
    tokens: int
    language: str
    tokenizer: str  # a TokenizerId; '' for a tombstone
    stability: Stability = Stability.MASTER
    attachments: int = 0  # documents it holds, listed in the part (``attachments_of``)

    def as_metadata(self) -> dict[str, str]:
        return {"afina-chunks": str(self.chunks), "afina-tokens": str(self.tokens),
                "afina-language": self.language, "afina-tokenizer": self.tokenizer,
                "afina-stability": self.stability, "afina-attachments": str(self.attachments)}

    @classmethod
    def from_metadata(cls, metadata) -> PartInfo:
        get = {k.lower().removeprefix("x-amz-meta-"): v for k, v in metadata.items()}.get
        return cls(int(get("afina-chunks", 0)), int(get("afina-tokens", 0)),
                   get("afina-language", "und"), get("afina-tokenizer", ""),
                   Stability(get("afina-stability", Stability.MASTER)), int(get("afina-attachments", 0)))


def source_key(source_id: str) -> str:
    return hashlib.sha256(source_id.encode()).hexdigest()[:32]


def source_key_of(key: str) -> str:
    """The source key in a part's or tombstone's object key."""
    return key.split("/")[1]


def sha256_of(key: str) -> str | None:
    """The document version's sha256 in a part's object key; None for a tombstone."""
    name = key.rsplit("/", 1)[1]
    return name.removesuffix(".parquet").rsplit("-", 1)[1] if name.endswith(".parquet") else None


def _stamp(occurred_at: datetime) -> str:
    return occurred_at.strftime("%Y%m%dT%H%M%S%fZ")


def part_key(source_id: str, occurred_at: datetime, sha256: str) -> str:
    return f"{PREFIX}/{source_key(source_id)}/{_stamp(occurred_at)}-{sha256}.parquet"


def tombstone_key(source_id: str, occurred_at: datetime) -> str:
    return f"{PREFIX}/{source_key(source_id)}/{_stamp(occurred_at)}-deleted.json"


def tombstone(source_id: str, occurred_at: datetime) -> bytes:
    return json.dumps({"source_id": source_id, "deleted_at": occurred_at.isoformat()}).encode()


# Columns that hold one value for the whole part: dictionary-encoded to almost nothing.
_SAME_IN_EVERY_ROW = ["source_id", "sha256", "kind", "language", "media_type", "tokenizer", "stability"]


def to_parquet(rows: list[dict], attachments: list[Attachment] = ()) -> bytes:
    schema = SCHEMA.with_metadata({ATTACHMENTS_KEY: json.dumps([a.__dict__ for a in attachments])}) \
        if attachments else SCHEMA
    table = pa.Table.from_pylist(rows, schema=schema)
    buffer = io.BytesIO()
    # No column statistics: a part is always read whole, and min/max of the text column copied
    # whole texts into the footer, doubling the part's size.
    pq.write_table(table, buffer, compression="zstd", use_dictionary=_SAME_IN_EVERY_ROW, write_statistics=False)
    return buffer.getvalue()


def read_parquet(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def attachments_of(data: bytes) -> list[Attachment]:
    """The documents a part's document holds (none for most)."""
    listed = (pq.read_schema(io.BytesIO(data)).metadata or {}).get(ATTACHMENTS_KEY)
    return [Attachment(**a) for a in json.loads(listed)] if listed else []


def store(client: Minio, key: str, data: bytes, info: PartInfo | None = None) -> None:
    """Write a part (with its PartInfo as object metadata) or, with no info, a tombstone."""
    client.put_object(Bucket.DATASETS, key, io.BytesIO(data), len(data),
                      metadata=info.as_metadata() if info else {},
                      content_type="application/vnd.apache.parquet" if info else "application/json")
