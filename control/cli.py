"""The ``afina`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer

from control import localstack
from control.localstack.prefect import use_server
from services import logs
from services.settings import Settings

app = typer.Typer(help="afina: continuous fine-tuning from the documents a company keeps producing.", no_args_is_help=True)
stack_app = typer.Typer(help="The local stack: Kafka, MinIO and Prefect as real servers, no Docker.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")


def _fail(message: str) -> NoReturn:
    """End the command with a message a person can act on, and exit status 1."""
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@app.command("up")
def up() -> None:
    """Start all of afina: the stack, the base model, and the supervised services. Reuses what runs."""
    from control import supervisor

    settings = Settings()
    try:
        services = supervisor.up(settings, echo=typer.echo)
    except localstack.StackError as exc:
        _fail(f"afina up: {exc}")
    _print_parts(localstack.status(settings))
    _print_services(services)


@app.command("down")
def down() -> None:
    """Stop the services and the stack's servers that `afina up` started."""
    from control import supervisor

    _print_stopped(supervisor.down(Settings()))


@app.command("status")
def status() -> None:
    """Show every server and service with its health; exit 1 unless all are running and healthy."""
    from control import supervisor

    settings = Settings()
    parts, services = localstack.status(settings), supervisor.status(settings)
    _print_parts(parts)
    _print_services(services)
    typer.echo(_index_size(settings))
    _exit_unless_running(*parts, *services)


def _index_size(settings: Settings) -> str:
    """The passage index's size, or why it cannot be read."""
    from services.retrieval import embed
    from services.retrieval.index import NotIndexedYet, PassageIndex

    try:
        index = PassageIndex(settings, embed.load(settings.retrieval.embedding_model))
        stats = index.stats()
    except NotIndexedYet as exc:
        return f"{'index':<12} {exc}"
    except Exception as exc:  # noqa: BLE001 (MinIO down, or another embedder's table: say so, go on)
        return f"{'index':<12} unreadable ({type(exc).__name__}: {str(exc)[:160]})"
    return (f"{'index':<12} {stats['rows']} passages, {stats['bytes'] / 2**20:.1f} MiB, {stats['fragments']} fragments "
            f"in s3://index/lancedb/{index.name}.lance ({stats['embedder']})")


@app.command("demo")
def demo() -> None:
    """The main job: start afina, drop the samples, normalize, tune once, ask the model over gRPC."""
    from control import demo as main_job

    settings = Settings()
    use_server(settings)
    try:
        main_job.run(settings, echo=typer.echo)
    except localstack.StackError as exc:
        _fail(f"afina demo: {exc}")


@app.command("supervise", hidden=True)
def supervise() -> None:
    """Run and restart the services in the foreground (what `afina up` starts in the background)."""
    from control.supervisor.supervise import supervise as run

    run(Settings())


def _print_stopped(stopped: list[str]) -> None:
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing to stop")


def _exit_unless_running(*statuses) -> None:
    """Exit 1 unless every server and service is running (and so healthy)."""
    if any(status.state != "running" for status in statuses):
        raise typer.Exit(1)


def _print_services(services) -> None:
    for service in services:
        pid = f"pid {service.pid}" if service.pid else "-"
        restarts = f"{service.restarts} restarts" if service.restarts else ""
        typer.echo(f"{service.name:<12} {service.state:<10} {pid:<11} {service.address}  {restarts}")
        typer.echo(f"{'':<12} log {service.log}")


def _print_parts(parts: list[localstack.PartStatus]) -> None:
    for part in parts:
        pid = f"pid {part.pid}" if part.pid else "-"
        typer.echo(f"{part.name:<8} {part.state:<10} {pid:<11} {'  '.join(part.addresses)}")
        typer.echo(f"{'':<8} log {part.log}")


@stack_app.command("up")
def stack_up() -> None:
    """Install (cached), start and health-check the local stack; reuse what already runs."""
    try:
        parts = localstack.up(Settings(), echo=typer.echo)
    except localstack.StackError as exc:
        _fail(f"afina stack up: {exc}")
    _print_parts(parts)


@stack_app.command("init")
def stack_init() -> None:
    """Create the contract topics, buckets and inbox notifications on running servers (idempotent)."""
    localstack.init(Settings())
    typer.echo("topics, buckets and inbox notifications are in place")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the servers that `afina stack up` started (nothing else)."""
    _print_stopped(localstack.down(Settings()))


@stack_app.command("status")
def stack_status() -> None:
    """Show each server of the local stack; exit 1 unless all are running and healthy."""
    parts = localstack.status(Settings())
    _print_parts(parts)
    _exit_unless_running(*parts)


@app.command("connector")
def connector() -> None:
    """Run the connector: inbox folder and inbox bucket -> raw/ in MinIO + events on Kafka."""
    from services.connector.service import run

    logs.configure("connector")
    run(Settings())


@app.command("normalizer")
def normalizer() -> None:
    """Run a normalizer replica (a consumer group: start more for more throughput)."""
    from services.normalizer.service import run

    logs.configure("normalizer")
    run(Settings())


@app.command("indexer")
def indexer() -> None:
    """Run an indexer replica: normalized documents -> passages in the retrieval index (a consumer group)."""
    from services.indexer.service import run

    logs.configure("indexer")
    run(Settings())


@app.command("trigger")
def trigger() -> None:
    """Run the tuning trigger: a tuning run when enough new master data arrived (a Prefect event)."""
    from services.trigger.service import run

    logs.configure("trigger")
    settings = Settings()
    use_server(settings)
    run(settings)


datasets_app = typer.Typer(help="The dataset store in MinIO.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("parts")
def datasets_parts(source: str = typer.Option("", help="Only this source id.")) -> None:
    """List the stored parts and tombstones: key, chunks, tokens, language, tokenizer."""
    from services.datasets.listing import list_parts
    from services.storage import minio_client

    rows = list_parts(minio_client(Settings()), source or None)
    for row in rows:
        info = row.info
        typer.echo(f"{row.key}  {info.chunks:>4} chunks {info.tokens:>7} tokens  {info.language:<4} {info.tokenizer}")
    typer.echo(f"{len(rows)} parts and tombstones")


@datasets_app.command("list")
def datasets_list() -> None:
    """List the frozen snapshots: id, documents, train/eval tokens."""
    from services.datasets import snapshots
    from services.storage import minio_client

    client = minio_client(Settings())
    for snapshot_id in snapshots.list_ids(client):
        info = snapshots.summary(snapshots.load(client, snapshot_id))
        typer.echo(f"{snapshot_id}  {info['created_at']}  {info['documents']:>5} documents  "
                   f"train {info['train_tokens']:>8} tokens  eval {info['eval_tokens']:>7} tokens")


@datasets_app.command("show")
def datasets_show(snapshot_id: str) -> None:
    """Show one snapshot's manifest: its summary and every part with its split."""
    from services.datasets import snapshots
    from services.storage import minio_client

    found = snapshots.load(minio_client(Settings()), snapshot_id)
    if found is None:
        _fail(f"no snapshot {snapshot_id}; `afina datasets list` shows them")
    typer.echo(json.dumps(snapshots.summary(found), indent=2, default=str))
    for part in found.parts:
        typer.echo(f"{part.split:<5} {part.tokens:>7} tokens  {part.language:<4} {part.key}")


@app.command("forget")
def forget(source_id: str = typer.Argument(..., help="The document's source id, as `afina datasets parts` shows it.")) -> None:
    """Take a document out of everything afina keeps: its parts, raw bytes, dedup fingerprint and
    index row, and the regression set; mark the model versions that were trained on it."""
    import asyncio

    from services.datasets import forget as forgetting

    try:
        done = asyncio.run(forgetting.forget(Settings(), source_id, echo=typer.echo))
    except (forgetting.StillInInbox, LookupError, TimeoutError) as exc:
        _fail(str(exc))
    typer.echo(f"forgot {source_id}: {done.parts_removed} parts and tombstones, {len(done.raw_removed)} raw "
               f"objects removed ({len(done.raw_kept)} kept: another document has the same bytes)"
               + (", taken out of the regression set" if done.left_regression_set else ""))
    if done.versions_marked:
        typer.echo("trained on it (marked; only training again without it takes it out of their weights): "
                   + ", ".join(f"v{v}" for v in done.versions_marked))
    if done.attachments:
        typer.echo(f"and the {len(done.attachments)} documents it held: "
                   + ", ".join(held.source_id for held in done.attachments))


models_app = typer.Typer(help="The model registry: versions, the champion, rollback.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """Every registered version, the champion and the previous one marked."""
    from services import registry
    from services.storage import minio_client

    client = minio_client(Settings())
    champion, previous = registry.alias_version(client), registry.previous_version(client)
    for version in registry.versions(client):
        card = registry.read_card(client, version)
        if card is None:
            continue  # a version still being registered: its card is written last
        mark = "champion" if version == champion else "previous" if version == previous else card.status or ""
        forgotten = registry.forgotten(client, version)
        typer.echo(f"v{version:<4} {mark:<9} {card.kind:<10} {card.base_model}  snapshot {card.snapshot_id or '-'}"
                   + (f"  trained on {len(forgotten)} forgotten document(s)" if forgotten else ""))


@models_app.command("show")
def models_show(version: int) -> None:
    """One version's card: base model, metrics, lineage, gate decision."""
    from services import registry
    from services.storage import minio_client

    card = registry.read_card(minio_client(Settings()), version)
    if card is None:
        _fail(f"there is no model version {version}")
    typer.echo(card.model_dump_json(indent=2))


@models_app.command("promote")
def models_promote(version: int) -> None:
    """Make a version the champion by hand (the old one becomes previous) and announce it."""
    from services.tuning import promotion

    _move_champion(promotion.promote(Settings(), version))


@models_app.command("rollback")
def models_rollback() -> None:
    """Give the champion back to the previous version and announce it."""
    from services.tuning import promotion

    _move_champion(promotion.rollback(Settings()))


def _move_champion(moving) -> None:
    import asyncio

    from services.registry import ChampionMoved

    try:
        event = asyncio.run(moving)
    except (LookupError, ChampionMoved) as exc:
        _fail(str(exc))
    typer.echo(f"champion: v{event.version} (previous v{event.previous_version})")


base_app = typer.Typer(help="The base model.", no_args_is_help=True)
app.add_typer(base_app, name="base")


@base_app.command("init")
def base_init() -> None:
    """Build the base model (AFINA_BASE_MODEL, SmolLM2 by default) and register it as version 0, the champion."""
    from services.tuning.base import init_base

    init_base(Settings(), echo=typer.echo)


@app.command("drop")
def drop(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="Files to drop."),
    bucket: bool = typer.Option(False, "--bucket", help="Upload to the MinIO inbox bucket instead of the folder."),
) -> None:
    """Drop files into the inbox folder (atomically) or upload them to the inbox bucket."""
    from services.connector import drop as dropping

    settings = Settings()
    for file in files:
        where = dropping.to_bucket(settings, file) if bucket else dropping.to_folder(settings, file)
        typer.echo(f"{file} -> {where}")


@app.command("tune")
def tune(
    force: bool = typer.Option(False, help="Train even when nothing changed since the champion's snapshot."),
    steps: int = typer.Option(0, help="Training steps for this run (0: AFINA_TUNING_STEPS)."),
) -> None:
    """Run the tuning flow now: snapshot, train, evaluate, gate, promote. Recorded in Prefect."""
    settings = Settings()
    use_server(settings)
    from flows.tuning import tune as tuning_flow

    outcome = tuning_flow(steps=steps or None, force=force)
    snapshot = f"snapshot {outcome.snapshot_id}, " if outcome.snapshot_id else ""
    typer.echo(f"{outcome.status}: {outcome.reason} ({snapshot}champion v{outcome.champion})")
    for reason in outcome.reasons:
        typer.echo(f"  {reason}")


flows_app = typer.Typer(help="The Prefect deployments.", no_args_is_help=True)
app.add_typer(flows_app, name="flows")


@flows_app.command("serve")
def flows_serve() -> None:
    """Serve the tuning deployment on its cron schedule (AFINA_TUNING_SCHEDULE) until stopped."""
    settings = Settings()
    use_server(settings)
    from flows.tuning import serve

    serve(settings)


@app.command("doctor")
def doctor() -> None:
    """Check this machine for what afina needs (Python, Java, Go, ports, disk, memory, built tools)
    and say what to do about each problem; exit 1 when something is missing."""
    from control import doctor as checking

    results = checking.run(Settings())
    for line in checking.report(results):
        typer.echo(line)
    if not checking.healthy(results):
        raise typer.Exit(1)


@app.command("docs")
def docs(
    out: Path = typer.Option(Path("proto/asyncapi.yaml"), help="Where to write the AsyncAPI document."),
    check: bool = typer.Option(False, help="Only check that the file is up to date (exit 1 if not)."),
) -> None:
    """Write the AsyncAPI document of afina's Kafka topics and events (generated by FastStream)."""
    from services import asyncapi

    text = asyncapi.document_yaml()
    if check:
        if not out.exists() or out.read_text() != text:
            _fail(f"{out} is out of date: run `afina docs` and commit it")
        typer.echo(f"{out} is up to date")
        return
    out.write_text(text)
    typer.echo(f"wrote {out}")


from services.inference import commands as inference_commands  # noqa: E402

app.command("serve")(inference_commands.serve)
app.command("generate")(inference_commands.generate)
app.command("search")(inference_commands.search)


if __name__ == "__main__":
    app()
