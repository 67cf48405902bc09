"""The tuning flow: snapshot → train → evaluate → gate → register → promote, in Prefect.

The candidate and the champion are scored on the same data: the snapshot's eval documents
(never trained on), the frozen regression set (the first tuned snapshot's eval documents, or
AFINA_TUNING_REGRESSION_FILE: what the model must not forget as it keeps learning) and the
optional Q&A file.

Each step is a Prefect task around the pure modules of `services.tuning`. Only transient
errors (a server away, a training process killed from outside) are retried; bad data or a
bug fails the run and leaves the champion where it was. Runs show four artifacts: the
snapshot summary, the loss curve, the eval table (candidate against champion) and the gate
decision.

    afina tune            run it now
    afina flows serve     serve the deployment on its cron schedule (AFINA_TUNING_SCHEDULE)
"""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.asyncutils import run_coro_as_sync
from pydantic import BaseModel

from services import registry
from services.contracts import Bucket
from services.settings import Settings
from services.lifecycle import is_transient
from services.storage import minio_client, read_object
from services.datasets import snapshots
from services.tuning import evaluate, gate, launch, lineage, promotion, report
from services.tuning.train import TrainConfig

FLOW_NAME = "afina-tuning"
DEPLOYMENT_NAME = "scheduled"


class TuningOutcome(BaseModel):
    status: Literal["skipped", "promoted", "rejected"]
    reason: str
    snapshot_id: str
    champion: int  # the champion after the run
    version: int | None = None  # the candidate registered by this run
    reasons: list[str] = []


def only_transient(task, task_run, state) -> bool:
    """Prefect's retry condition: retry a server away or an interrupted step, never bad data or a bug."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classifying is the point
        return is_transient(exc)
    return False


retried = dict(retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=only_transient, cache_policy=NO_CACHE)


@task(**retried)
def freeze_snapshot(settings: Settings) -> snapshots.Snapshot:
    found = snapshots.freeze(minio_client(settings), settings.tuning.eval_percent)
    get_run_logger().info(f"snapshot {found.id}: {len(found.parts)} documents, "
                          f"{found.train_tokens} train and {found.eval_tokens} eval tokens")
    return found


@task(**retried)
def fetch_version(settings: Settings, version: int) -> registry.LocalVersion:
    return registry.fetch(minio_client(settings), version, settings.state_dir / "cache" / "models")


@task(**retried)
def download_split(settings: Settings, frozen: snapshots.Snapshot, split: str, ours: str,
                   folder: Path) -> tuple[list[Path], list[str]]:
    """The split's parts tokenized with the base model's tokenizer (content hash ``ours``), and the
    keys of the others."""
    client = minio_client(settings)
    usable = frozen.model_copy(update={"parts": [p for p in frozen.parts if p.tokenizer.split(":")[-1] == ours]})
    excluded = [p.key for p in frozen.parts if p.split == split and p.tokenizer.split(":")[-1] != ours]
    return snapshots.download(client, usable, split, folder), excluded


# Training is retried once: a killed run (OOM, a restart) resumes from its checkpoint.
@task(retries=1, retry_delay_seconds=5, retry_condition_fn=only_transient, cache_policy=NO_CACHE)
def train(config: TrainConfig) -> dict:
    result = launch.run_training(config)
    get_run_logger().info(f"trained {result['steps']} steps: loss {result['first_loss']:.3f} → "
                          f"{result['final_loss']:.3f}, {result['tokens_per_second']:.0f} tokens/s")
    return result


@task(cache_policy=NO_CACHE)
def score(settings: Settings, base: str, adapter: Path | None, eval_parts: list[Path],
          regression_parts: list[Path]) -> evaluate.VersionScores:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    regression = (evaluate.read_texts(settings.tuning.regression_file) if settings.tuning.regression_file
                  else evaluate.texts_of_parts(regression_parts, tokenizer))
    qa = evaluate.read_qa(settings.tuning.qa_file) if settings.tuning.qa_file else []
    model = evaluate.load_model(base, adapter)
    return evaluate.score_version(model, tokenizer, evaluate.texts_of_parts(eval_parts, tokenizer), regression, qa,
                                  settings.tuning.sequence_length)


@task(**retried)
def register(settings: Settings, card: dict, base_version: int, adapter: Path) -> None:
    client = minio_client(settings)
    tokenizer_json = read_object(client, Bucket.MODELS, registry.tokenizer_key(base_version))
    registry.register_version(client, card["version"], card, tokenizer_json, adapter_folder=adapter)


@task(**retried)
def promote(settings: Settings, version: int) -> None:
    event = run_coro_as_sync(promotion.promote(settings, version))
    get_run_logger().info(f"v{event.version} is the champion (previous v{event.previous_version}); ModelPromoted sent")


def train_config(settings: Settings, champion: registry.LocalVersion, parts: list[Path], frozen: snapshots.Snapshot,
                 steps: int | None, learning_rate: float | None) -> TrainConfig:
    overrides = {k: v for k, v in (("steps", steps), ("learning_rate", learning_rate)) if v}
    config = TrainConfig.of(settings.tuning, base_model=champion.base, parts=[str(p) for p in parts],
                            continue_from=str(champion.adapter) if settings.tuning.continue_training and champion.adapter
                            else None, **overrides)
    # The run's folder is named by what it trains, so a run cut short is resumed by the next one.
    recipe = hashlib.sha256(config.model_dump_json(exclude={"parts", "output"}).encode()).hexdigest()[:10]
    run = settings.state_dir / "runs" / f"{frozen.id}-from-v{champion.version}-{recipe}"
    return config.model_copy(update={"output": str(run)})


def already_tried(settings: Settings, snapshot_id: str, champion: int) -> int | None:
    """The newest version already trained on this snapshot against this champion (and rejected)."""
    client = minio_client(settings)
    for version in reversed(registry.versions(client)):
        card = registry.read_card(client, version) or {}
        if card.get("snapshot_id") == snapshot_id and card.get("parent_version") == champion:
            return version
    return None


@flow(name=FLOW_NAME, log_prints=True)
def tune(steps: int | None = None, learning_rate: float | None = None, force: bool = False) -> TuningOutcome:
    """Fine-tune a candidate on the newest dataset snapshot and promote it if it beats the champion.

    steps, learning_rate: override the settings for this run. force: train even when nothing changed.
    """
    settings = Settings()
    log = get_run_logger()
    client = minio_client(settings)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    champion_version = registry.alias_version(client)
    if champion_version is None:
        raise RuntimeError("the registry has no champion yet: run `afina base init` first")
    frozen = freeze_snapshot(settings)
    champion_card = registry.read_card(client, champion_version) or {}
    if not force and champion_card.get("snapshot_id") == frozen.id:
        return _skip(f"nothing changed since the champion's snapshot {frozen.id}", frozen, champion_version)
    tried = already_tried(settings, frozen.id, champion_version)
    if not force and tried is not None:
        return _skip(f"v{tried} was already trained on snapshot {frozen.id} against v{champion_version}",
                     frozen, champion_version)

    champion = fetch_version(settings, champion_version)
    run_parts = settings.state_dir / "cache" / "parts"
    # parts name their tokenizer "v<version>:<content hash>"; versions of one base share the hash
    ours = registry.load_tokenizer(client, champion.base_version)[1].split(":")[-1]
    train_parts, excluded = download_split(settings, frozen, "train", ours, run_parts)
    eval_parts, excluded_eval = download_split(settings, frozen, "eval", ours, run_parts)
    create_markdown_artifact(report.snapshot_markdown(snapshots.summary(frozen), excluded + excluded_eval),
                             key="snapshot", description=f"dataset snapshot {frozen.id}")
    if not train_parts or not eval_parts:
        raise ValueError(f"snapshot {frozen.id} has {len(train_parts)} train and {len(eval_parts)} eval parts "
                         "usable: both are needed (drop more documents)")
    regression = snapshots.regression_set(client, frozen)
    regression_parts, _ = download_split(settings, regression, "eval", ours, run_parts)
    timings["snapshot"] = time.perf_counter() - clock

    config = train_config(settings, champion, train_parts, frozen, steps, learning_rate)
    clock = time.perf_counter()
    training = train(config)
    timings["train"] = time.perf_counter() - clock
    adapter = Path(config.output) / "adapter"
    losses = launch.read_losses(Path(config.output))
    png = report.loss_curve_png(losses, f"snapshot {frozen.id}")
    create_image_artifact(image_url="data:image/png;base64," + base64.b64encode(png).decode(), key="loss-curve",
                          description=f"training loss, {training['steps']} steps")

    clock = time.perf_counter()
    candidate_scores = score(settings, champion.base, adapter, eval_parts, regression_parts)
    champion_scores = score(settings, champion.base, champion.adapter, eval_parts, regression_parts)
    timings["evaluate"] = time.perf_counter() - clock
    create_table_artifact(report.eval_table(candidate_scores, champion_scores), key="eval",
                          description=f"candidate against champion v{champion_version} on the same data")

    decision = gate.decide(_gate_scores(candidate_scores), _gate_scores(champion_scores), settings.gate)
    version = registry.next_version(client)
    create_markdown_artifact(report.gate_markdown(decision, version, champion_version), key="gate",
                             description="promote or not, and why")
    card = lineage.model_card(
        version=version, parent_version=champion_version, base_version=champion.base_version,
        base_model=str(champion.card.get("base_model", settings.tuning.base_model)), snapshot=frozen, config=config,
        training=training, metrics=report.metrics(candidate_scores), champion_metrics=report.metrics(champion_scores),
        decision=decision, timings=timings, flow_run_id=str(runtime.flow_run.id) if runtime.flow_run.id else None)
    register(settings, card, champion.base_version, adapter)
    for reason in decision.reasons:
        log.info(reason)
    if decision.promote:
        promote(settings, version)
    return TuningOutcome(status="promoted" if decision.promote else "rejected", snapshot_id=frozen.id,
                         champion=version if decision.promote else champion_version, version=version,
                         reason="the gate passed" if decision.promote else "the gate failed",
                         reasons=decision.reasons)


def _gate_scores(scores: evaluate.VersionScores) -> gate.Scores:
    return gate.Scores(eval_perplexity=scores.eval.perplexity, regression_perplexity=scores.regression.perplexity,
                       qa_exact_match=scores.qa.exact_match if scores.qa else None)


def _skip(reason: str, frozen: snapshots.Snapshot, champion: int) -> TuningOutcome:
    get_run_logger().info(f"skipped: {reason}")
    create_markdown_artifact(f"# Gate decision\n\nSkipped: {reason}.", key="gate", description="nothing to train")
    return TuningOutcome(status="skipped", reason=reason, snapshot_id=frozen.id, champion=champion)


def serve(settings: Settings) -> None:
    """Serve the deployment: scheduled runs on the cron schedule, and runs asked for from the UI."""
    from prefect.schedules import Cron

    tune.serve(name=DEPLOYMENT_NAME, schedules=[Cron(settings.tuning.schedule, timezone=settings.tuning.timezone)],
               description="Fine-tune, evaluate, gate and promote on the newest dataset snapshot.",
               tags=["afina"], limit=1)
