"""`afina demo` (what `make demo` runs): the main job on this machine, from nothing to a served,
fine-tuned model, leaving afina running.

Start everything (`afina up`: the stack, SmolLM2 registered as version 0, the services), drop the
sample documents into the inbox, wait until each is a dataset part, run the tuning flow once
(showing the training's progress), and ask the base model and the tuned champion the same sample
questions over gRPC, with the share of the samples' questions each one knows; then ask the
champion about the newsletter (a volatile document: indexed for retrieval, never trained on)
without and with retrieval, and show the citations. Run again, every
step finds its work done and it is quick.

On a CPU the demo's run trains on a budget of DEMO_TOKENS tokens (set AFINA_TUNING_MAX_TOKENS to
change it); on a GPU it trains the epochs the data calls for, as the nightly run does.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from control import supervisor
from services import registry
from services.connector import drop
from services.connector.inbox import source_id
from services.datasets.listing import has_version
from services.settings import Settings
from services.storage import minio_client
from services.tuning.evaluate import QAItem, contains_answer, read_qa

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
QUESTIONS = 3  # asked of the base model and of the champion, from samples/qa.jsonl
DEMO_TOKENS = 140_000  # the training budget on a CPU: about 10 minutes on 2 cores, beside the services


def wait_normalized(settings: Settings, files: list[Path], echo: Callable[[str], None], timeout_s: float = 600,
                    root: Path | None = None) -> int:
    """Wait until each dropped file's current content is a dataset part; returns how many are.
    Files were dropped by name, or (with ``root``) under their path below ``root``."""
    client = minio_client(settings)
    waiting = {source_id(settings.inbox_name, str(f.relative_to(root)) if root else f.name):
               hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    deadline, shown = time.monotonic() + timeout_s, -1
    while waiting and time.monotonic() < deadline:
        for source, sha in list(waiting.items()):
            if has_version(client, source, sha):
                del waiting[source]
        done = len(files) - len(waiting)
        if done != shown:
            echo(f"  normalized {done}/{len(files)}")
            shown = done
        time.sleep(0.5)
    for source in waiting:
        echo(f"  not normalized within {timeout_s:.0f} s: {source} (see the normalizer logs and afina.documents.rejected)")
    return len(files) - len(waiting)


def ask(settings: Settings, question: str, version: int | None, timeout_s: float = 120, retrieve: bool = False):
    """A version's greedy answer from the inference service, once it can load that version (it
    swaps to a new champion in the background); with ``retrieve``, grounded in the documents."""
    import grpc

    from services.inference import client

    deadline = time.monotonic() + timeout_s
    with client.channel(settings.inference.address, ca=settings.inference.tls_cert) as channel:
        stub = client.pb_grpc.InferenceServiceStub(channel)
        while True:
            try:
                request = client.request(chat=[("user", question)], max_new_tokens=48, temperature=0.0,
                                         model_version=version)
                if retrieve:
                    request.retrieval.SetInParent()
                return stub.Generate(request,
                                     timeout=60, metadata=client.metadata(settings.inference.token))
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND) or time.monotonic() > deadline:
                    raise
            time.sleep(1)


@contextmanager
def training_progress(settings: Settings, echo: Callable[[str], None], every_s: float = 30) -> Iterator[None]:
    """Echo the newest training run's progress bar (the end of its train.log) every ``every_s``."""
    done = threading.Event()

    def watch() -> None:
        shown = ""
        while not done.wait(every_s):
            logs = sorted((settings.state_dir / "runs").glob("*/train.log"), key=lambda p: p.stat().st_mtime)
            if logs:
                with logs[-1].open("rb") as log:
                    log.seek(max(0, log.seek(0, os.SEEK_END) - 400))
                    last = log.read().decode(errors="replace").replace("\n", "\r").split("\r")
                line = next((piece.strip() for piece in reversed(last) if piece.strip().startswith("train:")), "")
                if line and line != shown:
                    echo(f"  {line}")
                    shown = line

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def compare(settings: Settings, items: list[QAItem], champion: int, echo: Callable[[str], None]) -> None:
    """The base model's answer beside the champion's, and the share of the questions each knows."""
    for item in items[:QUESTIONS]:
        echo(f"  Q: {item.prompt}   (the documents say: {item.expected})")
        for label, version in (("base v0", 0), (f"tuned v{champion}", champion)):
            text = ask(settings, item.prompt, version).text.strip().replace("\n", " ")
            mark = "knows" if contains_answer(text, [item.expected, *item.aliases]) else "does not know"
            echo(f"    {label:<9} ({mark}): {text!r}")
    card = registry.read_card(minio_client(settings), champion) if champion else None
    before, after = (card.champion_metrics.get("qa_knows"), card.metrics.get("qa_knows")) if card else (None, None)
    if before is not None and after is not None:
        echo(f"  Q&A, the {len(items)} questions of samples/qa.jsonl: v{card.parent_version} knew {before:.0%}, "
             f"the tuned champion v{champion} knows {after:.0%}")


def wait_searchable(settings: Settings, prefix: str, timeout_s: float = 300) -> bool:
    """Wait until the passage index has passages of documents whose source id starts with ``prefix``."""
    from services.retrieval import embed
    from services.retrieval.index import Filters, PassageIndex

    index = PassageIndex(settings, embed.load(settings.retrieval.embedding_model), read_consistency_s=0)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if index.ranked("Cierzo", 1, Filters(source_prefix=prefix)):
                return True
        except Exception:  # noqa: BLE001 (no table yet)
            pass
        time.sleep(1)
    return False


def grounded(settings: Settings, item: QAItem, echo: Callable[[str], None]) -> None:
    """A question only a volatile document answers: the champion without retrieval, then with it and
    its citations."""
    echo(f"  Q: {item.prompt}   (the newsletter says: {item.expected})")
    for label, retrieve in (("without retrieval", False), ("with retrieval", True)):
        answer = ask(settings, item.prompt, None, retrieve=retrieve)
        text = answer.text.strip().replace("\n", " ")
        mark = "knows" if contains_answer(text, [item.expected, *item.aliases]) else "does not know"
        echo(f"    {label:<17} ({mark}): {text!r}")
    for i, cited in enumerate(answer.citations, 1):
        echo(f"      [{i}] {cited.source_id} ({cited.section or 'chunk ' + str(cited.chunk)}, {cited.stability})")


def run(settings: Settings, echo: Callable[[str], None] = print) -> None:
    started = time.perf_counter()
    echo("1/6 starting afina (stack, base model, services) ...")
    supervisor.up(settings, echo=echo)

    inbox = SAMPLES / "inbox"
    files = sorted(p for p in inbox.rglob("*") if p.is_file())
    echo(f"2/6 dropping {len(files)} sample documents into {settings.inbox_dir} (news/: volatile, retrieved only) ...")
    for file in files:
        drop.to_folder(settings, file, name=str(file.relative_to(inbox)))
    echo("3/6 waiting for the normalizer ...")
    wait_normalized(settings, files, echo, root=inbox)

    echo("4/6 running the tuning flow (snapshot, train, evaluate, gate, promote) ...")
    qa_file = Path(os.environ.setdefault("AFINA_TUNING_QA_FILE", str(SAMPLES / "qa.jsonl")))
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("AFINA_TUNING_MAX_TOKENS", str(DEMO_TOKENS))
    from flows.tuning import tune

    with training_progress(settings, echo):
        outcome = tune()
    echo(f"  {outcome.status}: {outcome.reason}")
    for reason in outcome.reasons:
        echo(f"    {reason}")

    echo(f"5/6 asking the base model and the champion (v{outcome.champion}) over gRPC ...")
    compare(settings, read_qa(qa_file), outcome.champion, echo)
    echo("6/6 asking about the newsletter (volatile: retrieved, not trained on) ...")
    if wait_searchable(settings, source_id(settings.inbox_name, "news/")):
        grounded(settings, read_qa(SAMPLES / "qa_news.jsonl")[0], echo)
    else:
        echo("  the newsletter is not in the passage index (see the indexer's log)")
    echo(f"\nafina is running ({time.perf_counter() - started:.0f} s):")
    echo(f"  Prefect UI      {settings.prefect_api_url.removesuffix('/api')}")
    echo(f"  MinIO console   http://127.0.0.1:{settings.s3_console_port}  (login {settings.s3_access_key})")
    echo(f"  gRPC inference  {settings.inference.address}  e.g. .venv/bin/afina generate --chat \"How much does the Tramontana 2 tent cost?\"")
    if settings.inference.http_address:
        echo(f"  OpenAI API      http://{settings.inference.http_address}/v1  (model \"champion\"; any OpenAI client)")
    echo("Drop more files:  .venv/bin/afina drop FILE...   (or copy them into "
         f"{settings.inbox_dir}, or upload to the MinIO bucket 'inbox')")
    echo("Tune now:         .venv/bin/afina tune        (the deployment also runs nightly, and when "
         f"{settings.tuning.trigger_documents} new master documents arrived)")
    echo("Search:           .venv/bin/afina search \"Día del Sendero\"   /   .venv/bin/afina generate --chat "
         "--retrieve \"¿Qué día es el inventario anual?\"")
    echo("Status / stop:    .venv/bin/afina status   /   .venv/bin/afina down")
