"""The model registry in MinIO `models`: versions and the aliases that point at them.

    models/aliases/champion.json         `AliasRecord`: version N, previous M and every move, in one write
    models/versions/<N>/reserved         the number N taken (created only if absent)
    models/versions/<N>/card.json        what the version is: base model, metrics, lineage (written once)
    models/versions/<N>/forgotten.json   documents it was trained on that `afina forget` removed since
    models/versions/<N>/tokenizer.json   the version's tokenizer (Hugging Face tokenizers format)
    models/versions/<N>/model/...        base weights and configs (safetensors), when stored here
    models/versions/<N>/adapter/...      a fine-tuned version's LoRA adapter (safetensors + config)

A base version (kind "base") is a full model: its own `model/` files, or a Hugging Face id or
path in its card's `base_model`. A fine-tuned version (kind "adapter") names the base version
it adapts in `base_version` and stores only its adapter. The card's format is `ModelCard`, the
one type every reader gets.

Writers race (a scheduled run beside `afina tune`, a promotion by hand), so every write that
matters is conditional in MinIO itself: a version number is taken by creating its `reserved`
object, a card is created only where none is, and an alias moves only from the version the
writer read (compare-and-swap on the object's ETag). A loser gets `WriteConflict` or
`ChampionMoved`, never a silent overwrite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from minio import Minio
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Tokenizer

from services.contracts import Bucket, TokenizerId
from services.storage import WriteConflict, put_bytes, put_if, read_object, read_object_etag

CHAMPION = "champion"


class GateDecision(BaseModel):
    """What the gate decided about a candidate, and why (each rule passed or failed, in words)."""

    promote: bool
    reasons: list[str]


class TrainingSummary(BaseModel):
    """What a training run reports (the recipe's result.json)."""

    model_config = ConfigDict(ser_json_inf_nan="constants")  # a diverged run's loss is NaN

    steps: int
    first_loss: float
    final_loss: float
    trained_tokens_this_run: int
    tokens_per_second: float
    seconds: float
    device: str
    peak_memory_bytes: int
    examples_cut: int = 0  # chat examples longer than a sequence, cut to it
    planned_steps: int | None = None  # from the epochs and the token budget (steps < planned: stopped early)
    epochs: float | None = None  # passes over the train sequences the planned steps make
    stopped_early: bool = False
    best_step: int | None = None  # the validated step whose adapter was kept (None: no validation)
    best_val_loss: float | None = None
    gradient_checkpointing: bool = False
    precision: Literal["bf16", "fp32"] = "fp32"  # what the products were computed in


class ModelCard(BaseModel):
    """What a model version is: models/versions/<N>/card.json."""

    # Fields a later afina adds are skipped by an older reader, not an error. A diverged candidate's
    # perplexity is inf or NaN: written as JSON's usual Infinity/NaN extension, not as null.
    model_config = ConfigDict(frozen=True, extra="ignore", ser_json_inf_nan="constants")

    version: int = Field(ge=0)
    kind: Literal["base", "adapter"]
    base_model: str = Field(description="The model it stems from: afina-tiny, a Hugging Face id or a path.")
    base_version: int = Field(ge=0, description="The base version it adapts (a base version: itself).")
    created_at: datetime | None = None
    build: dict[str, int | float | str] = Field({}, description="A base version: how it was made.")
    # a fine-tuned version
    status: Literal["promoted", "rejected"] | None = None
    parent_version: int | None = Field(None, description="The champion it was measured against.")
    continued_from: int | None = Field(None, description="The version whose adapter it continued training.")
    snapshot_id: str | None = None
    snapshot: dict[str, int] = {}
    hyperparameters: dict[str, Any] = {}
    code_version: str | None = None
    training: TrainingSummary | None = None
    metrics: dict[str, float] = {}
    champion_metrics: dict[str, float] = {}
    gate: GateDecision | None = None
    timings_s: dict[str, float] = {}
    flow_run_id: str | None = None


class AliasMove(BaseModel):
    version: int
    at: datetime


class AliasRecord(BaseModel):
    """models/aliases/<alias>.json: the version an alias points at, the one before, and its history."""

    model_config = ConfigDict(extra="ignore")

    version: int
    previous: int | None = None
    history: list[AliasMove] = []  # every version it pointed at, oldest first

    def ever(self, version: int) -> bool:
        return version == self.version or any(move.version == version for move in self.history)


class ChampionMoved(Exception):
    """The alias is no longer where the writer read it: another run or a person moved it first."""


class ForgottenSources(BaseModel):
    """models/versions/<N>/forgotten.json: what the version was trained on that was forgotten since."""

    sources: list[str] = []


def forgotten(client: Minio, version: int) -> list[str]:
    data = read_object(client, Bucket.MODELS, f"versions/{version}/forgotten.json")
    return [] if data is None else ForgottenSources.model_validate_json(data).sources


def mark_forgotten(client: Minio, version: int, source_id: str) -> None:
    """Record on a version (whose card is written once) that a document it learned from was forgotten."""
    sources = forgotten(client, version)
    if source_id not in sources:
        _put(client, f"versions/{version}/forgotten.json",
             ForgottenSources(sources=[*sources, source_id]).model_dump_json().encode())


def alias_key(alias: str) -> str:
    return f"aliases/{alias}.json"


def tokenizer_key(version: int) -> str:
    return f"versions/{version}/tokenizer.json"


def read_alias(client: Minio, alias: str = CHAMPION) -> tuple[AliasRecord, str] | None:
    """The alias and the ETag it was read at (for `move_alias`), or None when it points nowhere yet."""
    found = read_object_etag(client, Bucket.MODELS, alias_key(alias))
    return None if found is None else (AliasRecord.model_validate_json(found[0]), found[1])


def alias_version(client: Minio, alias: str = CHAMPION) -> int | None:
    found = read_alias(client, alias)
    return None if found is None else found[0].version


def tokenizer_json(client: Minio, version: int) -> bytes:
    data = read_object(client, Bucket.MODELS, tokenizer_key(version))
    if data is None:
        raise LookupError(f"model version {version} has no tokenizer in the registry")
    return data


def load_tokenizer(client: Minio, version: int) -> tuple[Tokenizer, TokenizerId]:
    """A version's fast tokenizer, and its id (which changes when its content does)."""
    data = tokenizer_json(client, version)
    return Tokenizer.from_str(data.decode()), TokenizerId.of(version, data)


def card_key(version: int) -> str:
    return f"versions/{version}/card.json"


def model_prefix(version: int) -> str:
    return f"versions/{version}/model/"


def adapter_prefix(version: int) -> str:
    return f"versions/{version}/adapter/"


def read_card(client: Minio, version: int) -> ModelCard | None:
    data = read_object(client, Bucket.MODELS, card_key(version))
    return None if data is None else ModelCard.model_validate_json(data)


def reserve_version(client: Minio) -> int:
    """Take the next free version number: created only if absent, so two runs never share one."""
    while True:
        version = next_version(client)
        try:
            put_if(client, Bucket.MODELS, f"versions/{version}/reserved", b"", etag=None)
            return version
        except WriteConflict:
            continue  # another run took it between the listing and the write


def register_version(client: Minio, card: ModelCard, tokenizer: bytes,
                     model_folder: Path | None = None, adapter_folder: Path | None = None) -> None:
    """Store a version's files (its tokenizer.json given as bytes); the card last and only where
    none is, so a version with a card is complete and never rewritten (WriteConflict)."""
    version = card.version
    if read_card(client, version) is not None:
        raise WriteConflict(f"model version {version} is already registered: versions are written once")
    card = card.model_copy(update={"created_at": card.created_at or datetime.now(UTC)})  # names its cache folder
    for folder, prefix in ((model_folder, model_prefix(version)), (adapter_folder, adapter_prefix(version))):
        if folder is not None:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                client.fput_object(Bucket.MODELS, prefix + path.relative_to(folder).as_posix(), str(path))
    _put(client, tokenizer_key(version), tokenizer)
    put_if(client, Bucket.MODELS, card_key(version), card.model_dump_json(indent=2).encode(), etag=None)


ANY = -1  # move_alias: from wherever the alias is now


def move_alias(client: Minio, alias: str, version: int, *, expected: int | None = ANY,
               previous: int | None = ANY) -> AliasRecord:
    """Point an alias at a version if it still points at `expected` (None: nowhere yet; ANY: as read).

    One object written whole, so readers see the old or the new, and only over the ETag read, so a
    writer that raced another loses with ChampionMoved instead of undoing its move. `previous`
    defaults to the version it pointed at.
    """
    found = read_alias(client, alias)
    current, etag = (found[0], found[1]) if found else (None, None)
    now = current.version if current else None
    if expected != ANY and now != expected:
        raise ChampionMoved(f"the {alias} is {_named(now)}, not {_named(expected)}: it was moved meanwhile")
    history = current.history if current else []
    record = AliasRecord(version=version, previous=now if previous == ANY else previous,
                         history=[*history, AliasMove(version=version, at=datetime.now(UTC))])
    try:
        put_if(client, Bucket.MODELS, alias_key(alias), record.model_dump_json().encode(), etag=etag)
    except WriteConflict as exc:
        raise ChampionMoved(f"the {alias} was moved by another writer while this one moved it") from exc
    return record


def _named(version: int | None) -> str:
    return "unset" if version is None else f"v{version}"


def previous_version(client: Minio, alias: str = CHAMPION) -> int | None:
    found = read_alias(client, alias)
    return None if found is None else found[0].previous


def versions(client: Minio) -> list[int]:
    found = {int(o.object_name.split("/")[1]) for o in client.list_objects(Bucket.MODELS, prefix="versions/")}
    return sorted(found)


def next_version(client: Minio) -> int:
    return max(versions(client), default=-1) + 1


def cards(client: Minio) -> list[ModelCard]:
    return [card for version in versions(client) if (card := read_card(client, version)) is not None]


def trained_on(client: Minio, snapshot_id: str, parent_version: int) -> ModelCard | None:
    """The newest version already trained on this snapshot against this champion."""
    for card in reversed(cards(client)):
        if card.snapshot_id == snapshot_id and card.parent_version == parent_version:
            return card
    return None


class LocalVersion(BaseModel):
    """Where a version's files are on this machine: what `from_pretrained` needs."""

    version: int
    base: str  # a local folder, or a Hugging Face id that from_pretrained resolves itself
    base_version: int
    adapter: Path | None  # None for a base version
    card: ModelCard


def fetch(client: Minio, version: int, cache_dir: Path) -> LocalVersion:
    """Download a version (and the base it adapts) into cache_dir, once: versions are immutable."""
    card = read_card(client, version)
    if card is None:
        raise LookupError(f"there is no model version {version} in the registry")
    cached = cache_folder(cache_dir, card)
    if card.kind == "adapter":
        base = fetch(client, card.base_version, cache_dir)
        adapter = _download(client, adapter_prefix(version), cached / "adapter")
        return LocalVersion(version=version, base=base.base, base_version=base.version, adapter=adapter, card=card)
    folder = _download(client, model_prefix(version), cached / "model")
    base = str(folder) if folder is not None else card.base_model
    return LocalVersion(version=version, base=base, base_version=version, adapter=None, card=card)


def cache_folder(cache_dir: Path, card: ModelCard) -> Path:
    """Where a version's files are cached: under its number and the time it was registered, since a
    registry made again from nothing (a wiped MinIO, another stack on the same state folder) numbers
    its versions from 0 again, and its version 1 is not the old one."""
    registered = card.created_at.strftime("%Y%m%dT%H%M%S%fZ") if card.created_at else "undated"
    return cache_dir / str(card.version) / registered


def _download(client: Minio, prefix: str, folder: Path) -> Path | None:
    """The objects under prefix as files in folder; None when there are none."""
    done = folder / ".complete"
    if done.exists():
        return folder
    objects = list(client.list_objects(Bucket.MODELS, prefix=prefix, recursive=True))
    if not objects:
        return None
    for obj in objects:
        client.fget_object(Bucket.MODELS, obj.object_name, str(folder / obj.object_name[len(prefix):]))
    done.touch()  # last: a download cut short is done again, never half-used
    return folder


def promote(client: Minio, version: int, expected: int | None = ANY) -> tuple[int, int | None]:
    """Make a registered version the champion, if the champion is still `expected` (a candidate beat
    that one, not whichever came after); the old champion becomes the previous one."""
    if read_card(client, version) is None:
        raise LookupError(f"there is no model version {version} in the registry")
    current = alias_version(client)
    if current == version:
        return version, previous_version(client)
    move_alias(client, CHAMPION, version, expected=current if expected == ANY else expected)
    return version, current


def rollback(client: Minio) -> tuple[int, int | None]:
    """Give the champion alias back to the previous version."""
    previous, current = previous_version(client), alias_version(client)
    if previous is None:
        raise LookupError("there is no previous champion to roll back to")
    move_alias(client, CHAMPION, previous, expected=current, previous=current)
    return previous, current


def _put(client: Minio, key: str, data: bytes) -> None:
    put_bytes(client, Bucket.MODELS, key, data)
