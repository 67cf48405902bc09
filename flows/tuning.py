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
import time
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.utilities.asyncutils import run_coro_as_sync
from pydantic import BaseModel

from services import registry
from services.contracts import TokenizerId
from services.datasets import snapshots
from services.lifecycle import is_transient
from services.registry import TrainingSummary
from services.settings import Settings
from services.storage import minio_client
from services.tuning import arrivals, data, evaluate, gate, launch, lineage, promotion, report
from services.tuning.lease import LeaseHeld, TuningLease, holder_name
from services.tuning.train import TrainConfig

FLOW_NAME = "afina-tuning"
DEPLOYMENT_NAME = "scheduled"


class TuningOutcome(BaseModel):
    status: Literal["skipped", "promoted", "rejected"]
    reason: str
    snapshot_id: str | None  # None: skipped before a snapshot was frozen (another run held the lease)
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
    found = snapshots.freeze(minio_client(settings), settings.tuning.eval_percent, settings.tuning.train_volatile)
    get_run_logger().info(f"snapshot {found.id}: {len(found.parts)} documents, "
                          f"{found.train_tokens} train and {found.eval_tokens} eval tokens")
    return found


@task(**retried)
def fetch_version(settings: Settings, version: int) -> registry.LocalVersion:
    return registry.fetch(minio_client(settings), version, settings.state_dir / "cache" / "models")


@task(**retried)
def champion_tokenizer(settings: Settings, champion: registry.LocalVersion) -> TokenizerId:
    return registry.load_tokenizer(minio_client(settings), champion.base_version)[1]


@task(**retried)
def download_data(settings: Settings, frozen: snapshots.Snapshot, chosen: data.Chosen,
                  tokenizer: TokenizerId) -> data.RunData:
    return data.download(minio_client(settings), frozen, chosen, tokenizer, settings.state_dir / "cache" / "parts")


# Training is retried once: a killed run (OOM, a restart) resumes from its checkpoint.
@task(retries=1, retry_delay_seconds=5, retry_condition_fn=only_transient, cache_policy=NO_CACHE)
def train(config: TrainConfig) -> TrainingSummary:
    result = launch.run_training(config)
    get_run_logger().info(f"trained {result.steps} steps: loss {result.first_loss:.3f} → "
                          f"{result.final_loss:.3f}, {result.tokens_per_second:.0f} tokens/s")
    return result


@task(cache_policy=NO_CACHE)
def score(settings: Settings, base: str, adapter: Path | None, run_data: data.RunData) -> evaluate.VersionScores:
    return evaluate.score(settings.tuning, base, adapter, run_data)


@task(**retried)
def register(settings: Settings, card: registry.ModelCard, adapter: Path) -> None:
    client = minio_client(settings)
    registry.register_version(client, card, registry.tokenizer_json(client, card.base_version), adapter_folder=adapter)


@task(**retried)
def promote(settings: Settings, version: int, champion: int) -> None:
    event = run_coro_as_sync(promotion.promote(settings, version, expected=champion))
    get_run_logger().info(f"v{event.version} is the champion (previous v{event.previous_version}); ModelPromoted sent")


@flow(name=FLOW_NAME, log_prints=True)
def tune(steps: int | None = None, learning_rate: float | None = None, force: bool = False,
         why: str = "") -> TuningOutcome:
    """Fine-tune a candidate on the newest dataset snapshot and promote it if it beats the champion.

    steps, learning_rate: override the settings for this run. force: train even when nothing changed.
    why: what started the run (the data trigger sets it: how much new master data arrived).
    One run at a time: a run that finds another holding the tuning lease is skipped.
    """
    if why:
        get_run_logger().info(f"started because: {why}")
    settings = Settings()
    client = minio_client(settings)
    champion_version = registry.alias_version(client)
    if champion_version is None:
        raise RuntimeError("the registry has no champion yet: run `afina base init` first")
    try:
        lease = TuningLease.take(client, holder_name(f"flow run {runtime.flow_run.name or '-'}"))
    except LeaseHeld as exc:
        get_run_logger().info(f"skipped: {exc}")
        return TuningOutcome(status="skipped", reason=str(exc), snapshot_id=None, champion=champion_version)
    with lease:
        return _tune(settings, lease, registry.alias_version(client), steps, learning_rate, force)


def _tune(settings: Settings, lease: TuningLease, champion_version: int, steps: int | None,
          learning_rate: float | None, force: bool) -> TuningOutcome:
    client = minio_client(settings)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    # 1. what to train on, and whether there is anything new in it
    frozen = freeze_snapshot(settings)
    if (unfinished := lineage.unfinished_promotion(client, frozen.id, champion_version)) is not None:
        promote(settings, unfinished, champion_version)
        return TuningOutcome(status="promoted", snapshot_id=frozen.id, champion=unfinished, version=unfinished,
                             reason=f"finished v{unfinished}'s promotion, which an earlier run left undone")
    skip = None if force else lineage.nothing_new(client, frozen.id, champion_version)
    if skip is not None:
        return _skip(skip, frozen, champion_version)
    champion = fetch_version(settings, champion_version)
    tokenizer = champion_tokenizer(settings, champion)
    chosen = data.choose(frozen, tokenizer)
    create_markdown_artifact(report.snapshot_markdown(snapshots.summary(frozen), chosen.excluded),
                             key="snapshot", description=f"dataset snapshot {frozen.id}")
    run_data = download_data(settings, frozen, chosen, tokenizer)
    timings["snapshot"] = time.perf_counter() - clock

    # 2. train a candidate from the champion
    config = launch.plan(settings, champion, run_data, frozen.id, steps, learning_rate)
    clock = time.perf_counter()
    training = train(config)
    timings["train"] = time.perf_counter() - clock
    adapter = Path(config.output) / "adapter"
    png = report.loss_curve_png(launch.read_losses(Path(config.output)), f"snapshot {frozen.id}")
    create_image_artifact(image_url="data:image/png;base64," + base64.b64encode(png).decode(), key="loss-curve",
                          description=f"training loss, {training.steps} steps")

    # 3. score the candidate and the champion on the same data
    clock = time.perf_counter()
    candidate_scores = score(settings, champion.base, adapter, run_data)
    champion_scores = score(settings, champion.base, champion.adapter, run_data)
    timings["evaluate"] = time.perf_counter() - clock
    create_table_artifact(report.eval_table(candidate_scores, champion_scores), key="eval",
                          description=f"candidate against champion v{champion_version} on the same data")

    # 4. gate, register (promoted or rejected: every candidate is kept), promote
    decision = gate.decide(candidate_scores.for_gate(), champion_scores.for_gate(), settings.gate)
    if lease.lost:
        raise RuntimeError("the tuning lease expired while this run stalled and another run took it: "
                           "not registering, so the two cannot collide")
    version = registry.reserve_version(client)
    create_markdown_artifact(report.gate_markdown(decision, version, champion_version), key="gate",
                             description="promote or not, and why")
    card = lineage.model_card(
        version=version, champion=champion, snapshot=frozen, config=config, training=training,
        metrics=report.metrics(candidate_scores), champion_metrics=report.metrics(champion_scores),
        decision=decision, timings=timings, flow_run_id=str(runtime.flow_run.id) if runtime.flow_run.id else None)
    register(settings, card, adapter)
    for reason in decision.reasons:
        get_run_logger().info(reason)
    if decision.promote:
        promote(settings, version, champion_version)
    return TuningOutcome(status="promoted" if decision.promote else "rejected", snapshot_id=frozen.id,
                         champion=version if decision.promote else champion_version, version=version,
                         reason="the gate passed" if decision.promote else "the gate failed",
                         reasons=decision.reasons)


def _skip(reason: str, frozen: snapshots.Snapshot, champion: int) -> TuningOutcome:
    get_run_logger().info(f"skipped: {reason}")
    create_markdown_artifact(f"# Gate decision\n\nSkipped: {reason}.", key="gate", description="nothing to train")
    return TuningOutcome(status="skipped", reason=reason, snapshot_id=frozen.id, champion=champion)


def serve(settings: Settings) -> None:
    """Serve the deployment: runs on the cron schedule, when enough new master data arrived (the
    tuning trigger's event), and asked for from the UI; one at a time, across every runner."""
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron

    arrived = DeploymentEventTrigger(
        name="enough new master data", description="afina's tuning trigger measured enough new master data",
        expect={arrivals.EVENT}, match={"prefect.resource.id": arrivals.RESOURCE},
        parameters={"why": "{{ event.payload.reason }}"})
    tune.serve(name=DEPLOYMENT_NAME, schedules=[Cron(settings.tuning.schedule, timezone=settings.tuning.timezone)],
               triggers=[arrived], description="Fine-tune, evaluate, gate and promote on the newest dataset snapshot.",
               tags=["afina"], limit=1, global_limit=1)
