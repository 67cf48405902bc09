"""Running the training recipe in its own process, so a crash or an OOM kill cannot take the
flow runner down. A run killed from outside is `Interrupted` (worth retrying: the next run
resumes from the checkpoint); a run that fails by itself is `TrainingFailed` (not retried)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from services.lifecycle import Interrupted
from services.registry import LocalVersion, TrainingSummary
from services.settings import Settings
from services.tuning.data import RunData
from services.tuning.train import TrainConfig


class TrainingFailed(RuntimeError):
    pass


def plan(settings: Settings, champion: LocalVersion, data: RunData, snapshot_id: str,
         steps: int | None = None, learning_rate: float | None = None) -> TrainConfig:
    """The run that trains a candidate from the champion on a snapshot's train parts, validated on
    its eval parts: the tuning settings' recipe (steps, learning_rate: this run's overrides),
    continuing the champion's adapter unless AFINA_TUNING_CONTINUE is false. Its folder is named
    by what it trains, so a run cut short is resumed by the next one."""
    overrides = {name: value for name, value in (("steps", steps), ("learning_rate", learning_rate)) if value}
    resume = settings.tuning.continue_training and champion.adapter is not None
    config = TrainConfig.of(settings.tuning, base_model=champion.base, parts=[str(p) for p in data.train],
                            continue_from=str(champion.adapter) if resume else None,
                            eval_parts=[str(p) for p in data.eval], **overrides)
    recipe = hashlib.sha256(config.model_dump_json(exclude={"parts", "eval_parts", "output"}).encode()).hexdigest()[:10]
    run = settings.state_dir / "runs" / f"{snapshot_id}-from-v{champion.version}-{recipe}"
    return config.model_copy(update={"output": str(run)})


def run_training(config: TrainConfig) -> TrainingSummary:
    """Train in a child process; returns the recipe's result.json. Its log is train.log beside it."""
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    config_path = output / "config.json"
    config_path.write_text(config.model_dump_json(indent=2))
    log_path = output / "train.log"
    with log_path.open("ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "services.tuning.train", str(config_path)],
                                 stdout=log, stderr=log, env=_child_env())
        (output / "train.pid").write_text(str(child.pid))
        code = child.wait()
    (output / "train.pid").unlink(missing_ok=True)
    if code < 0:
        raise Interrupted(f"training was killed by signal {-code}; a new run resumes from its checkpoint")
    if code != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise TrainingFailed(f"training exited with status {code}; the end of {log_path}:\n{tail}")
    return TrainingSummary.model_validate_json((output / "result.json").read_text())


def _child_env() -> dict[str, str]:
    # Busy-waiting OpenMP threads stall when the services share the cores: measured 3-10x slower
    # training on a loaded 2-core machine (benchmarks/train.py), none with passive waiting.
    return {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONUNBUFFERED": "1"}


def read_losses(output: Path) -> list[dict]:
    path = output / "loss.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
