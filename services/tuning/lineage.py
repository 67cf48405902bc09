"""A model version's card: what it is, where it came from, how it scored and what the gate said."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from minio import Minio

from services import registry
from services.datasets.snapshots import Snapshot
from services.registry import GateDecision, LocalVersion, ModelCard, TrainingSummary
from services.tuning.train import TrainConfig

HYPERPARAMETERS_LEFT_OUT = {"base_model", "parts", "output", "continue_from"}  # paths of this machine


def code_version() -> str:
    """The git commit of the code that trained (plus "-dirty" for local changes), else the package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return f"afina {metadata.version('afina')}"


def nothing_new(client: Minio, snapshot_id: str, champion: int) -> str | None:
    """Why training on this snapshot would teach the champion nothing new, or None."""
    card = registry.read_card(client, champion)
    if card is not None and card.snapshot_id == snapshot_id:
        return f"nothing changed since the champion's snapshot {snapshot_id}"
    tried = registry.trained_on(client, snapshot_id, champion)
    if tried is not None and _unfinished(client, tried) is None:
        return f"v{tried.version} was already trained on snapshot {snapshot_id} against v{champion}"
    return None


def unfinished_promotion(client: Minio, snapshot_id: str, champion: int) -> int | None:
    """A version that passed the gate against this champion on this snapshot but never became the
    champion (the run stopped between writing its card and moving the alias): the next run
    finishes the promotion instead of calling the snapshot tried."""
    tried = registry.trained_on(client, snapshot_id, champion)
    return None if tried is None else _unfinished(client, tried)


def _unfinished(client: Minio, tried: ModelCard) -> int | None:
    found = registry.read_alias(client)
    if tried.status != "promoted" or found is None or found[0].ever(tried.version):
        return None
    return tried.version


def model_card(*, version: int, champion: LocalVersion, snapshot: Snapshot, config: TrainConfig,
               training: TrainingSummary, metrics: dict[str, float], champion_metrics: dict[str, float],
               decision: GateDecision, timings: dict[str, float], flow_run_id: str | None) -> ModelCard:
    """The card of a candidate trained from the champion on a snapshot."""
    return ModelCard(
        version=version, kind="adapter", status="promoted" if decision.promote else "rejected",
        created_at=datetime.now(UTC), base_model=champion.card.base_model, base_version=champion.base_version,
        parent_version=champion.version,  # the champion it was measured against (and continued from)
        continued_from=champion.version if config.continue_from else None,
        snapshot_id=snapshot.id,
        snapshot={"documents": len(snapshot.parts), "train_tokens": snapshot.train_tokens,
                  "eval_tokens": snapshot.eval_tokens},
        hyperparameters=config.model_dump(exclude=HYPERPARAMETERS_LEFT_OUT), code_version=code_version(),
        training=training, metrics=metrics, champion_metrics=champion_metrics, gate=decision,
        timings_s={name: round(seconds, 2) for name, seconds in timings.items()}, flow_run_id=flow_run_id,
    )
