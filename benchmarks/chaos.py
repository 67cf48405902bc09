"""Chaos benchmark: documents dropped while afina's services are SIGKILLed and its servers restart.

    PYTHONPATH=. .venv/bin/python benchmarks/chaos.py [--docs 500] [--seconds 90] [--kill-every 3]

On a stack of its own (Kafka and MinIO only, a fresh state folder, its own ports; the built tools
shared) it runs two connector replicas (each its own inbox folder, both watching the inbox
bucket) and two normalizer replicas, as `afina up` runs them. For ``--seconds`` it drops the
documents, unique texts, into the two folders and the bucket, while every ``--kill-every``
seconds or so one replica chosen at random is SIGKILLed and started again a moment later, as the
supervisor would; Kafka and MinIO are each stopped and started again once. Then it waits until
the dataset store holds every document (or ``--drain-timeout`` passes) and prints, from the
store itself: documents dropped, live parts, missing, duplicated (goal: 0 missing, 0 duplicated)
and the time to drain after the last fault.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from control import localstack
from services.connector.service import BUCKET_PREFIX
from services.contracts import Bucket
from services.datasets import parts
from services.datasets.listing import list_parts
from services.datasets.snapshots import current_parts
from services.settings import Settings
from services.storage import minio_client
from services.tuning.base import init_base

SYLLABLES = [f"{a}{b}" for a in ("pre", "con", "tra", "des", "inter", "sub", "re", "ex", "pro", "ante") for b in (
    "venta", "cargo", "forma", "mando", "puesto", "torno", "gasto", "plazo", "grupo", "marca", "curso", "tiempo")]
AFINA = str(Path(sys.executable).with_name("afina"))
READY = {"connector": b'"msg": "connector ready"', "normalizer": b'"msg": "normalizer ready"'}


@dataclass
class Replica:
    """One service process, started again whenever it is not running."""

    name: str
    command: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None
    kills: int = 0
    exits: list[int] = field(default_factory=list)  # exit statuses it chose itself (not our SIGKILLs)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([AFINA, self.command], env=self.env, stdout=out, stderr=out,
                                            stdin=subprocess.DEVNULL)

    def keep_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            self.exits.append(self.process.returncode)
            self.start()

    def kill(self) -> None:
        """SIGKILL it; it stays down until ``start``."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.kills += 1
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def text(rng: random.Random) -> str:
    return " ".join(rng.choice(SYLLABLES) + rng.choice(SYLLABLES) for _ in range(rng.randint(80, 200)))


def restart_server(settings, name: str, down_s: float, note) -> None:
    note(f"stopping {name} for {down_s:.0f} s")
    localstack.down(settings, only=[name])
    time.sleep(down_s)
    localstack.up(settings, echo=lambda line: None, only=("kafka", "minio"))
    note(f"{name} is back")


class Store(NamedTuple):
    live: dict[str, str]  # what the next snapshot trains on: source key -> the version (sha256) it holds
    written_twice: int  # parts of a document version that already had one
    tombstones: int


def look(s3) -> Store:
    """The dataset store as a snapshot sees it, and what it holds besides."""
    stored = list_parts(s3)
    versions = Counter((part.source_key, part.sha256) for part in stored if not part.tombstone)
    live = {part.source_key: part.sha256 for part in current_parts(s3, eval_percent=10)}
    return Store(live, sum(n - 1 for n in versions.values()), sum(part.tombstone for part in stored))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=90, help="how long the drops and the faults last")
    parser.add_argument("--kill-every", type=float, default=3, help="mean seconds between two SIGKILLs")
    parser.add_argument("--drain-timeout", type=float, default=900)
    parser.add_argument("--seed", default=None)
    args = parser.parse_args()
    seed = args.seed or uuid.uuid4().hex[:8]
    rng = random.Random(seed)

    state = Path(tempfile.mkdtemp(prefix="afina-chaos-"))
    os.environ.update(localstack.sibling_env(Settings(), state, port_offset=18000))
    os.environ.update({"AFINA_BASE_MODEL": "afina-tiny", "AFINA_CONNECTOR_METRICS_PORT": "0",
                       "AFINA_NORMALIZER_METRICS_PORT": "0"})  # every Settings() from here on: the chaos stack
    settings = Settings()
    started = time.monotonic()

    def note(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", flush=True)

    replicas: list[Replica] = []
    try:
        localstack.up(settings, echo=lambda line: None, only=("kafka", "minio"))
        init_base(settings, echo=lambda line: None)
        s3 = minio_client(settings)
        folders = [state / f"inbox-{i}" for i in (1, 2)]
        for i, folder in enumerate(folders, 1):
            folder.mkdir()
            replicas.append(Replica(f"connector-{i}", "connector", {
                **os.environ, "AFINA_INBOX_DIR": str(folder), "AFINA_INBOX_NAME": f"chaos-{i}"},
                state / f"connector-{i}.log"))
        for i in (1, 2):
            replicas.append(Replica(f"normalizer-{i}", "normalizer", dict(os.environ), state / f"normalizer-{i}.log"))
        for replica in replicas:
            replica.start()
        for replica in replicas:
            while READY[replica.command] not in replica.log.read_bytes():
                if replica.process.poll() is not None:
                    raise SystemExit(f"{replica.name} exited at start-up:\n{replica.log.read_text()[-3000:]}")
                time.sleep(0.2)
        note(f"stack and {len(replicas)} replicas ready (seed {seed})")

        # the documents: where each goes and the source id it will have
        staging = state / "staging"
        staging.mkdir()
        plan = []  # (source id, where, name, bytes)
        for i in range(args.docs):
            data = text(rng).encode()
            name = f"doc-{i:04}.txt"
            where = ("bucket", "folder-1", "folder-2")[i % 3]
            sid = BUCKET_PREFIX + name if where == "bucket" else f"chaos-{where[-1]}:{name}"
            plan.append((sid, where, name, data))
        expected = {parts.source_key(sid): hashlib.sha256(data).hexdigest() for sid, _, _, data in plan}

        # the faults, on their own thread: SIGKILLs at random (each victim started again a moment
        # later, as the supervisor would), Kafka and MinIO restarted once each; a replica that
        # exits on its own is started again too
        faults: list[str] = []

        def chaos() -> None:
            servers = {args.seconds * 0.3: "kafka", args.seconds * 0.65: "minio"}
            t0 = time.monotonic()
            next_kill = t0 + rng.expovariate(1 / args.kill_every)
            down: dict[str, tuple[float, Replica]] = {}  # killed, and when each starts again
            while servers or down or time.monotonic() - t0 < args.seconds:
                now = time.monotonic()
                for at, name in sorted(servers.items()):
                    if now - t0 >= at:
                        del servers[at]
                        restart_server(settings, name, rng.uniform(4, 8), note)
                        faults.append(f"{name} restart")
                running = [r for r in replicas if r.name not in down]
                if now >= next_kill and now - t0 < args.seconds and running:
                    victim = rng.choice(running)
                    victim.kill()
                    faults.append(f"SIGKILL {victim.name}")
                    down[victim.name] = (now + rng.uniform(0.3, 2.0), victim)
                    next_kill = now + rng.expovariate(1 / args.kill_every)
                for name, (at, replica) in list(down.items()):
                    if now >= at:
                        del down[name]
                        replica.start()
                for replica in replicas:
                    replica.keep_running()
                time.sleep(0.1)

        faulting = threading.Thread(target=chaos, daemon=True)
        faulting.start()
        drop_started = time.monotonic()
        for n, (sid, where, name, data) in enumerate(plan):
            due = drop_started + args.seconds * n / len(plan)
            time.sleep(max(0.0, due - time.monotonic()))
            if where == "bucket":
                while True:  # a person retries an upload that failed while MinIO was down
                    try:
                        s3.put_object(Bucket.INBOX, name, io.BytesIO(data), len(data))
                        break
                    except Exception:  # noqa: BLE001 - any failure of the upload: try again
                        time.sleep(1)
            else:
                (staging / name).write_bytes(data)
                os.replace(staging / name, folders[int(where[-1]) - 1] / name)
        note(f"{len(plan)} documents dropped")
        faulting.join()
        last_fault = time.monotonic()
        note(f"faults over: {len(faults)} ({', '.join(f'{n} {k}' for k, n in Counter(faults).items())})")

        while True:
            for replica in replicas:
                replica.keep_running()
            try:
                store = look(s3)
            except Exception:  # noqa: BLE001 - MinIO busy after its restart: look again
                time.sleep(2)
                continue
            missing = [key for key, sha in expected.items() if store.live.get(key) != sha]
            if not missing or time.monotonic() - last_fault > args.drain_timeout:
                break
            time.sleep(2)
        drained = time.monotonic() - last_fault
    finally:
        for replica in replicas:
            replica.stop()
        localstack.down(settings)

    same_text = sum(n - 1 for n in Counter(store.live.values()).values())  # the texts are unique
    strangers = sum(1 for key in store.live if key not in expected)
    duplicated = same_text + store.written_twice
    kills = {r.name: r.kills for r in replicas}
    exits = {r.name: r.exits for r in replicas if r.exits}
    print(f"chaos ({os.cpu_count()} cores, seed {seed}): {len(plan)} documents dropped over {args.seconds:.0f} s "
          f"into 2 folders and the bucket")
    print(f"  faults: {sum(kills.values())} SIGKILLs {kills}; Kafka and MinIO restarted once each")
    if exits:
        print(f"  replicas that exited on their own (status): {exits}")
    print(f"  live parts:    {len(store.live)} ({strangers} of no dropped document; {store.tombstones} tombstones)")
    print(f"  missing:       {len(missing)} (goal 0){'  e.g. ' + ', '.join(missing[:3]) if missing else ''}")
    print(f"  duplicated:    {duplicated} (goal 0): {same_text} texts in two live parts, "
          f"{store.written_twice} document versions written twice")
    print(f"  time to drain: {drained:.1f} s after the last fault"
          f"{'' if not missing else f' (gave up after {args.drain_timeout:.0f} s)'}")
    print(f"  verdict: {'PASS' if not missing and not duplicated else 'MISS'}; the logs were in {state}")
    if not missing and not duplicated:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
