"""The contracts every afina part relies on: settings, topics, buckets and events.

Every service imports these names from here and nowhere else, so that a change to
a contract is one change. The event models are the wire format on Kafka (JSON);
each carries ``schema_version``, and changing a model's fields means a new version.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One settings model for every service; environment variables ``AFINA_<FIELD>``.

    The defaults point at the local stack that ``afina stack up`` starts.
    """

    model_config = SettingsConfigDict(env_prefix="AFINA_", extra="ignore")

    state_dir: Path = Field(
        Path(".afina"),
        description="Servers' data, logs, pid files and built tools of the local stack.",
    )
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    kafka_controller_port: int = Field(
        9093, description="KRaft controller port of the local Kafka (local stack only)."
    )
    s3_endpoint: str = Field("127.0.0.1:9000", description="MinIO/S3 endpoint, host:port.")
    s3_console_port: int = Field(9001, description="MinIO console port (local stack only).")
    s3_access_key: str = Field("afina", description="MinIO/S3 access key.")
    s3_secret_key: str = Field("afina-secret", description="MinIO/S3 secret key.")
    s3_secure: bool = Field(False, description="Use TLS to reach MinIO/S3.")
    prefect_api_url: str = Field(
        "http://127.0.0.1:4200/api", description="Prefect server API URL."
    )
    inbox_dir: Path = Field(Path(".afina/inbox"), description="The watched inbox folder (recursive).")
    inbox_name: str = Field(
        "folder", pattern=r"^[a-z0-9][a-z0-9._-]*$",
        description="Source id prefix of the inbox folder: ids are '<inbox_name>:<relative path>'.",
    )
    connector_watch_bucket: bool = Field(True, description="Also watch the MinIO inbox bucket.")
    connector_max_file_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="Larger files are rejected as too_large."
    )
    connector_settle_s: float = Field(
        1.0, gt=0, description="Quiet time before a file changed without a close event is read."
    )
    connector_workers: int = Field(8, ge=1, description="Files read and uploaded at once.")
    connector_rescan_s: float = Field(
        300, gt=0, description="Full comparison of storage with the index every so often (missed events)."
    )
    connector_metrics_port: int = Field(9101, ge=0, description="Prometheus metrics port (0: off).")
    normalizer_workers: int = Field(2, ge=1, description="Worker processes that turn documents into parts.")
    normalizer_timeout_s: float = Field(60, gt=0, description="Time limit to turn one document into its part.")
    normalizer_memory_mb: int = Field(
        2048, ge=256, description="Address space a worker may add for one document (RLIMIT_AS)."
    )
    normalizer_batch: int = Field(128, ge=1, description="Kafka records consumed per batch.")
    normalizer_max_chunk_tokens: int = Field(1024, ge=16, description="Tokens per chunk at most.")
    normalizer_redact: str = Field(
        "email,iban,card,dni,nie,ip,phone", description="PII kinds to redact, comma separated ('' for none)."
    )
    normalizer_metrics_port: int = Field(9102, ge=0, description="Prometheus metrics port (0: off).")
    base_model: str = Field(
        "afina-tiny",
        description="Base causal LM: a Hugging Face id, a local path, or the built-in afina-tiny.",
    )
    # the tuning flow
    tuning_schedule: str = Field("0 2 * * *", description="Cron schedule of the tuning deployment (default nightly).")
    tuning_timezone: str = Field("UTC", description="Time zone of the tuning schedule.")
    tuning_continue: bool = Field(
        True, description="Continue training from the champion's adapter (false: a fresh adapter each run)."
    )
    tuning_steps: int = Field(60, ge=1, description="Optimizer steps per training run.")
    tuning_sequence_length: int = Field(128, ge=16, description="Tokens per training sequence.")
    tuning_micro_batch: int = Field(8, ge=1, description="Sequences per forward pass.")
    tuning_gradient_accumulation: int = Field(2, ge=1, description="Micro-batches per optimizer step.")
    tuning_learning_rate: float = Field(1e-2, gt=0, description="Peak learning rate (AdamW, warm-up then cosine).")
    tuning_lora_r: int = Field(8, ge=1, description="LoRA rank.")
    tuning_checkpoint_every: int = Field(20, ge=1, description="Steps between training checkpoints.")
    tuning_eval_percent: int = Field(10, ge=1, le=50, description="Share of documents held out for evaluation.")
    tuning_regression_file: Path | None = Field(
        None, description="Texts the model must not forget (paragraphs, or JSONL of {text}); default: the first "
        "snapshot's eval documents, frozen.",
    )
    tuning_qa_file: Path | None = Field(None, description="Optional Q&A JSONL ({prompt, expected}) scored at evaluation.")
    gate_min_relative_gain: float = Field(
        0.01, description="Domain eval perplexity must drop at least this much (relative) to promote."
    )
    gate_max_regression: float = Field(
        0.05, description="Regression-set perplexity may rise at most this much (relative)."
    )
    gate_max_eval_perplexity: float | None = Field(None, description="Absolute floor: never promote above this perplexity.")
    gate_min_qa_exact_match: float | None = Field(None, description="Absolute floor on the Q&A exact match (0..1).")
    # the inference service
    inference_address: str = Field("127.0.0.1:50051", description="gRPC address the inference service listens on.")
    inference_token: str = Field("", description="Bearer token callers must send ('' for none).")
    inference_tls_cert: Path | None = Field(None, description="TLS certificate (PEM); with the key, gRPC over TLS.")
    inference_tls_key: Path | None = Field(None, description="TLS private key (PEM).")
    inference_max_batch: int = Field(8, ge=1, description="Requests generated together at most.")
    inference_batch_wait_ms: float = Field(5, ge=0, description="How long a request waits for others to batch with.")
    inference_max_queue: int = Field(64, ge=1, description="Requests waiting at most; more get RESOURCE_EXHAUSTED.")
    inference_max_new_tokens: int = Field(256, ge=1, description="Largest max_new_tokens a request may ask for.")
    inference_max_prompt_tokens: int = Field(1024, ge=1, description="Longest prompt, in tokens.")
    inference_loaded_versions: int = Field(3, ge=1, description="Adapters kept in memory (champion and recent ones).")
    inference_alias_check_s: float = Field(30, gt=0, description="How often to re-read the champion alias.")
    inference_metrics_port: int = Field(9103, ge=0, description="Prometheus metrics port (0: off).")
    inference_torch_threads: int = Field(
        1, ge=0, description="CPU threads per generation step (0: torch's default, one per core; small models are faster on one)."
    )

    @field_validator("state_dir", "inbox_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # processes started from here run in other folders: never hand them a relative path
        return path.expanduser().resolve()

    @property
    def kafka_port(self) -> int:
        return _port_of(self.kafka_bootstrap_servers.split(",")[0])

    @property
    def s3_port(self) -> int:
        return _port_of(self.s3_endpoint)

    @property
    def prefect_port(self) -> int:
        return urlsplit(self.prefect_api_url).port or 80

    @property
    def s3_url(self) -> str:
        return f"{'https' if self.s3_secure else 'http'}://{self.s3_endpoint}"


def _port_of(host_port: str) -> int:
    return int(host_port.rsplit(":", 1)[1])


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
    # (an IndexEntry), so that a restarted or new replica finds what changed meanwhile.
    CONNECTOR_INDEX = "afina.connector.index"
    # Compacted, one partition (a total order): each normalized document's text fingerprint
    # (DedupRecord), which every normalizer replica reads to find duplicates.
    DEDUP_SIGNATURES = "afina.dedup.signatures"


class Bucket(enum.StrEnum):
    INBOX = "inbox"  # what people drop
    RAW = "raw"  # content-addressed bytes: raw/<sha256>
    DATASETS = "datasets"  # immutable parts and snapshots
    MODELS = "models"  # registry: versions and aliases


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


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


class DocumentNormalized(Event):
    """A document version was written to the dataset store as one immutable part (or a tombstone)."""

    source_id: str = Field(min_length=1)
    sha256: Sha256 | None
    part_key: str = Field(description="Object key of the Parquet part (or tombstone) in the datasets bucket.")
    deleted: bool = False
    language: str | None = None
    media_type: str | None = None
    chunks: int = Field(0, ge=0)
    tokens: int = Field(0, ge=0)
    tokenizer: str | None = None


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
        raise InvalidEvent(f"not a valid {model.__name__} (schema_version 1): {problems}") from None
