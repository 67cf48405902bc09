"""The wire contracts every afina part relies on: topics, buckets, events and the tokenizer id.

Every service imports these names from here and nowhere else, so that a change to
a contract is one change. The event models are the wire format on Kafka (JSON);
each carries ``schema_version``, and changing a model's fields means a new version.
Settings are in ``services.settings``.
"""

from __future__ import annotations

import enum
import hashlib
import re
from datetime import UTC, datetime
from typing import Annotated, Literal, NamedTuple, TypeVar
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import core_schema


class Topic(enum.StrEnum):
    """Kafka topics. Keys are the document's stable source id (per-document ordering)."""

    DOCUMENTS_DISCOVERED = "afina.documents.discovered"
    DOCUMENTS_NORMALIZED = "afina.documents.normalized"
    DOCUMENTS_REJECTED = "afina.documents.rejected"
    MODELS_PROMOTED = "afina.models.promoted"
    # MinIO's own bucket notifications for the inbox bucket (MinIO's event JSON, not an
    # afina event); the connector turns them into DocumentDiscovered.
    INBOX_NOTIFICATIONS = "afina.inbox.notifications"
    # Compacted: the connector's durable record of what it has published, per source id
    # (an IndexEntry), so that a restarted or new replica finds what changed meanwhile;
    # and, under key ``~inbox/<inbox name>``, which folder owns that name (an InboxClaim).
    CONNECTOR_INDEX = "afina.connector.index"
    # Compacted, one partition (a total order): each normalized document's text fingerprint
    # (DedupRecord), which every normalizer replica reads to find duplicates.
    DEDUP_SIGNATURES = "afina.dedup.signatures"


class TopicSpec(NamedTuple):
    partitions: int
    compacted: bool = False


# Document topics are keyed by source id and consumed by a group of normalizers:
# their partition count is the normalizer's maximum useful parallelism.
TOPICS: dict[Topic, TopicSpec] = {
    Topic.DOCUMENTS_DISCOVERED: TopicSpec(6),
    Topic.DOCUMENTS_NORMALIZED: TopicSpec(6),
    Topic.DOCUMENTS_REJECTED: TopicSpec(3),
    Topic.INBOX_NOTIFICATIONS: TopicSpec(3),
    Topic.MODELS_PROMOTED: TopicSpec(1),
    Topic.CONNECTOR_INDEX: TopicSpec(3, compacted=True),
    Topic.DEDUP_SIGNATURES: TopicSpec(1, compacted=True),  # one partition: its order decides which of two duplicates came first
}


class Bucket(enum.StrEnum):
    INBOX = "inbox"  # what people drop
    RAW = "raw"  # content-addressed bytes: raw/<sha256>
    DATASETS = "datasets"  # immutable parts and snapshots
    MODELS = "models"  # registry: versions and aliases
    INDEX = "index"  # the passage index of the retrieval path (LanceDB tables)


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class TokenizerId(str):
    """Which tokenizer made a part's token ids: ``v<version>:<content hash>``.

    The version is the registry version it was read from; the hash (the first 12 hex digits of the
    sha256 of its tokenizer.json) changes when its content does, so every version of one base
    model, sharing the base's tokenizer, tokenizes alike. Parts, snapshots and events carry it.
    """

    _FORM = re.compile(r"^v(\d+):([0-9a-f]{12})$")

    def __new__(cls, value: str) -> TokenizerId:
        if not cls._FORM.match(value):
            raise ValueError(f"{value!r} is not a tokenizer id ('v<version>:<12 hex digits>')")
        return super().__new__(cls, value)

    @classmethod
    def of(cls, version: int, tokenizer_json: bytes) -> TokenizerId:
        return cls(f"v{version}:{hashlib.sha256(tokenizer_json).hexdigest()[:12]}")

    @property
    def version(self) -> int:
        return int(self._FORM.match(self)[1])

    @property
    def content_hash(self) -> str:
        return self._FORM.match(self)[2]

    @classmethod
    def __get_pydantic_core_schema__(cls, source, handler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(cls, core_schema.str_schema())


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Fields every event carries. Unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    event_id: UUID = Field(default_factory=uuid4)
    occurred_at: datetime = Field(default_factory=_now)


class ChangeKind(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


class DocumentDiscovered(Event):
    """A document appeared, changed or went away in watched storage (claim check: bytes are in ``raw``)."""

    source_id: str = Field(
        min_length=1, description="Stable id: '<inbox_name>:<relative path>' or 'bucket:inbox/<key>'."
    )
    kind: ChangeKind
    sha256: Sha256 | None = Field(None, description="Content hash; the raw object is raw/<sha256>. None when deleted.")
    size: int | None = Field(None, ge=0)
    media_type: str | None = Field(None, description="Sniffed from the content, e.g. 'application/pdf'.")
    modified_at: datetime | None = None


class Stability(enum.StrEnum):
    """How a document's content ages, from the operator's rules (services/normalizer/stability.py)."""

    MASTER = "master"  # policies, handbooks, laws, vocabulary: fine-tuned into the weights
    VOLATILE = "volatile"  # news, campaigns, announcements: served by retrieval, not trained on


class DocumentNormalized(Event):
    """A document version was written to the dataset store as one immutable part (or a tombstone).

    Version 2 added ``stability``; a version-1 record (without it) reads as master, as every
    document was before.
    """

    schema_version: Literal[1, 2] = 2
    source_id: str = Field(min_length=1)
    sha256: Sha256 | None
    part_key: str = Field(description="Object key of the Parquet part (or tombstone) in the datasets bucket.")
    deleted: bool = False
    language: str | None = None
    media_type: str | None = None
    chunks: int = Field(0, ge=0)
    tokens: int = Field(0, ge=0)
    tokenizer: TokenizerId | None = None
    stability: Stability = Stability.MASTER


class RejectReason(enum.StrEnum):
    CORRUPT = "corrupt"
    ENCRYPTED = "encrypted"
    UNSUPPORTED = "unsupported"
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    BOMB = "bomb"
    NO_TEXT = "no_text"
    TIMEOUT = "timeout"
    DUPLICATE = "duplicate"
    LOW_QUALITY = "low_quality"
    INVALID_EVENT = "invalid_event"  # a Kafka record that is not a valid contract event


class DocumentRejected(Event):
    """Dead letter: something could not be processed; the reason says why, for a person."""

    source_id: str = Field(min_length=1, description="The document, or 'topic/partition/offset' for a bad record.")
    sha256: Sha256 | None = None
    reason: RejectReason
    message: str = Field(min_length=1)
    stage: Literal["connector", "normalizer", "consumer"]
    payload: str | None = Field(None, description="The offending record (truncated) for invalid events.")


class ModelPromoted(Event):
    """The champion alias moved to a new model version."""

    version: int = Field(ge=0)
    previous_version: int | None = Field(None, ge=0)
    snapshot_id: str
    base_model: str
    metrics: dict[str, float] = Field(default_factory=dict)


class IndexEntry(BaseModel):
    """What the connector last published for one source id (topic afina.connector.index, compacted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    sha256: Sha256 | None = Field(None, description="None when deleted or rejected unread.")
    size: int = Field(0, ge=0)
    version: str = Field("", description="What changes with the content: a file's mtime_ns, an object's ETag.")
    deleted: bool = False
    rejected: bool = False


class InboxClaim(BaseModel):
    """Which folder an inbox name belongs to (topic afina.connector.index, key ``claim_key(name)``).

    The folder is known by the id in its marker file, not by its path: replicas on other
    machines see the same folder under other paths, and a folder moved keeps its id.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    folder_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="The id in the folder's marker file.")
    folder: str = Field(description="Where the folder was when it claimed the name (for messages).")
    claimed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @staticmethod
    def key(inbox_name: str) -> str:
        # '~' starts no inbox name and no bucket source id: the key is never a source id
        return f"~inbox/{inbox_name}"


EVENT_TOPICS: dict[Topic, type[Event]] = {
    Topic.DOCUMENTS_DISCOVERED: DocumentDiscovered,
    Topic.DOCUMENTS_NORMALIZED: DocumentNormalized,
    Topic.DOCUMENTS_REJECTED: DocumentRejected,
    Topic.MODELS_PROMOTED: ModelPromoted,
}


E = TypeVar("E", bound=Event)


class InvalidEvent(ValueError):
    """A record that does not match its topic's contract; ``str()`` says what is wrong."""


def parse_event(model: type[E], raw: bytes | str) -> E:
    """Validate a JSON record against an event model, with an error a person can read."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<record>'}: {err['msg']}" for err in exc.errors()
        )
        versions = model.model_fields["schema_version"].annotation.__args__
        raise InvalidEvent(f"not a valid {model.__name__} (schema_version {' or '.join(map(str, versions))}): "
                           f"{problems}") from None
