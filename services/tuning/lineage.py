"""A model version's card: what it is, where it came from, how it scored and what the gate said."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from services.tuning.gate import Decision
from services.datasets.snapshots import Snapshot
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


def model_card(*, version: int, parent_version: int, base_version: int, base_model: str, snapshot: Snapshot,
               config: TrainConfig, training: dict, metrics: dict[str, float], champion_metrics: dict[str, float],
               decision: Decision, timings: dict[str, float], flow_run_id: str | None) -> dict:
    return {
        "version": version,
        "kind": "adapter",
        "status": "promoted" if decision.promote else "rejected",
        "created_at": datetime.now(UTC).isoformat(),
        "base_model": base_model,
        "base_version": base_version,
        "parent_version": parent_version,  # the champion it was measured against (and continued from)
        "continued_from": parent_version if config.continue_from else None,
        "snapshot_id": snapshot.id,
        "snapshot": {"documents": len(snapshot.parts), "train_tokens": snapshot.train_tokens,
                     "eval_tokens": snapshot.eval_tokens},
        "hyperparameters": config.model_dump(exclude=HYPERPARAMETERS_LEFT_OUT),
        "code_version": code_version(),
        "training": {key: training[key] for key in ("steps", "first_loss", "final_loss", "trained_tokens_this_run",
                                                    "tokens_per_second", "seconds", "device", "peak_memory_bytes")},
        "metrics": metrics,
        "champion_metrics": champion_metrics,
        "gate": decision.model_dump(),
        "timings_s": {name: round(seconds, 2) for name, seconds in timings.items()},
        "flow_run_id": flow_run_id,
    }
