"""`afina demo` (what `make demo` runs): the main job on this machine, from nothing to a served,
fine-tuned model, leaving afina running.

Start everything (`afina up`), drop the sample documents into the inbox, wait until each is a
dataset part, run the tuning flow once, wait until the inference service serves the champion,
and ask it a question over gRPC. Run again, every step finds its work done and it is quick.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from control import supervisor
from services.connector import drop
from services.connector.inbox import source_id
from services.datasets.listing import has_version
from services.settings import Settings
from services.storage import minio_client

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
QUESTION = "¿Cuántos días tiene un cliente para devolver un producto?"


def wait_normalized(settings: Settings, files: list[Path], echo: Callable[[str], None], timeout_s: float = 600) -> int:
    """Wait until each dropped file's current content is a dataset part; returns how many are."""
    client = minio_client(settings)
    waiting = {source_id(settings.inbox_name, f.name): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
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


def ask(settings: Settings, question: str, want_version: int, timeout_s: float = 120):
    """The inference service's answer, once it serves the wanted version (it swaps in the background)."""
    import grpc

    from services.inference import client

    deadline = time.monotonic() + timeout_s
    with client.channel(settings.inference.address, ca=settings.inference.tls_cert) as channel:
        stub = client.pb_grpc.InferenceServiceStub(channel)
        while True:
            try:
                # sampled with a fixed seed: the same answer every time, and the tiny model's greedy answer is often empty
                answer = stub.Generate(client.request(chat=[("user", question)], max_new_tokens=48, temperature=0.7,
                                                      top_k=40, seed=7),
                                       timeout=60, metadata=client.metadata(settings.inference.token))
                if answer.model_version == want_version or time.monotonic() > deadline:
                    return answer
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
            time.sleep(1)


def run(settings: Settings, echo: Callable[[str], None] = print) -> None:
    started = time.perf_counter()
    echo("1/5 starting afina (stack, base model, services) ...")
    supervisor.up(settings, echo=echo)

    files = sorted(p for p in (SAMPLES / "inbox").iterdir() if p.is_file())
    echo(f"2/5 dropping {len(files)} sample documents into {settings.inbox_dir} ...")
    for file in files:
        drop.to_folder(settings, file)
    echo("3/5 waiting for the normalizer ...")
    wait_normalized(settings, files, echo)

    echo("4/5 running the tuning flow (snapshot, train, evaluate, gate, promote) ...")
    os.environ.setdefault("AFINA_TUNING_QA_FILE", str(SAMPLES / "qa.jsonl"))
    from flows.tuning import tune

    outcome = tune()
    echo(f"  {outcome.status}: {outcome.reason}")
    for reason in outcome.reasons:
        echo(f"    {reason}")

    echo(f"5/5 asking the champion (v{outcome.champion}) over gRPC: {QUESTION}")
    answer = ask(settings, QUESTION, outcome.champion)
    echo(f"  v{answer.model_version} answers: {answer.text.strip()!r}")
    echo(f"\nafina is running ({time.perf_counter() - started:.0f} s):")
    echo(f"  Prefect UI      {settings.prefect_api_url.removesuffix('/api')}")
    echo(f"  MinIO console   http://127.0.0.1:{settings.s3_console_port}  (login {settings.s3_access_key})")
    echo(f"  gRPC inference  {settings.inference.address}  e.g. .venv/bin/afina generate --chat \"{QUESTION}\"")
    echo("Drop more files:  .venv/bin/afina drop FILE...   (or copy them into "
         f"{settings.inbox_dir}, or upload to the MinIO bucket 'inbox')")
    echo("Tune now:         .venv/bin/afina tune        (the deployment also runs nightly)")
    echo("Status / stop:    .venv/bin/afina status   /   .venv/bin/afina down")
