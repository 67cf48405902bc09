"""Benchmark of the connector, a real `afina connector` process on the local stack, both sources:

- drop→event latency (p50, p99) for single small files dropped one at a time;
- throughput (files/s, MB/s) for 1,000 small files and for 5 large ones;
- the same bytes hashed and uploaded to raw/ directly with the MinIO client, 8 threads, in
  the same run: the storage ceiling on this machine, printed as the connector's ratio to it.

    .venv/bin/python benchmarks/connector.py [--small 1000] [--large 5] [--large-mb 50]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from arrivals import Arrivals

from control import localstack
from services.contracts import Bucket, Topic
from services.settings import Settings
from services.storage import minio_client


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def payloads(count: int, size: int) -> list[bytes]:
    return [os.urandom(size) for _ in range(count)]  # random: nothing deduplicates away


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--small-kb", type=int, default=4)
    parser.add_argument("--large", type=int, default=5)
    parser.add_argument("--large-mb", type=int, default=50)
    parser.add_argument("--latency-samples", type=int, default=40)
    args = parser.parse_args()

    settings = Settings()
    localstack.up(settings, echo=lambda line: None)
    s3 = minio_client(settings)
    work = Path(tempfile.mkdtemp(prefix="afina-bench-connector-"))
    inbox, staging = work / "inbox", work / "staging"
    inbox.mkdir()
    staging.mkdir()
    name = f"bench{uuid.uuid4().hex[:8]}"
    prefix = f"bench/{name}/"
    env = {**os.environ, "AFINA_INBOX_DIR": str(inbox), "AFINA_INBOX_NAME": name,
           "AFINA_CONNECTOR_METRICS_PORT": "0", "AFINA_STATE_DIR": str(settings.state_dir)}
    log = (work / "connector.log").open("wb")
    connector = subprocess.Popen([str(Path(sys.executable).with_name("afina")), "connector"], env=env,
                                 stdout=log, stderr=log)
    arrivals = Arrivals(settings, [Topic.DOCUMENTS_DISCOVERED])
    written_shas: list[str] = []
    try:
        while b"connector ready" not in (work / "connector.log").read_bytes():
            time.sleep(0.1)

        def drop_files(items: list[tuple[str, bytes]]) -> list[str]:
            for rel, data in items:  # complete files arrive by rename, as `afina drop` does
                (staging / rel).write_bytes(data)
            for rel, _ in items:
                os.replace(staging / rel, inbox / rel)
            return [f"{name}:{rel}" for rel, _ in items]

        def put_objects(items: list[tuple[str, bytes]], threads: int = 8) -> list[str]:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda it: s3.put_object(Bucket.INBOX, prefix + it[0], io.BytesIO(it[1]), len(it[1])), items))
            return [f"bucket:inbox/{prefix}{rel}" for rel, _ in items]

        print(f"connector benchmark ({os.cpu_count()} cores), files dropped by rename / uploaded with put_object")
        for source, drop in (("folder", drop_files), ("bucket", put_objects)):
            latencies = []
            for i, data in enumerate(payloads(args.latency_samples, 2048)):
                written_shas.append(hashlib.sha256(data).hexdigest())
                start = time.time()  # the arrivals' clock
                (sid,) = drop([(f"lat-{source}-{i}.txt", data)])
                latencies.append(arrivals.wait([sid]) - start)
            print(f"{source:6} drop→event latency over {len(latencies)} small files: "
                  f"p50 {statistics.median(latencies) * 1000:6.0f} ms   p99 {percentile(latencies, 0.99) * 1000:6.0f} ms")

        for label, count, size in (("small", args.small, args.small_kb * 1024), ("large", args.large, args.large_mb << 20)):
            data = payloads(count, size)
            written_shas.extend(hashlib.sha256(d).hexdigest() for d in data)
            mb = count * size / 1e6
            # the ceiling: hash + upload of the same bytes straight to raw/, 8 threads, no events
            ceiling_start = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda d: s3.put_object(Bucket.RAW, f"bench-ceiling/{hashlib.sha256(d).hexdigest()}",
                                                      io.BytesIO(d), len(d)), data))
            ceiling = time.perf_counter() - ceiling_start
            print(f"{label}: {count} files x {size / 1e6:.3f} MB; ceiling (hash+upload, 8 threads): "
                  f"{count / ceiling:7.1f} files/s {mb / ceiling:7.1f} MB/s")
            for source, drop in (("folder", drop_files), ("bucket", put_objects)):
                items = [(f"{label}-{source}-{i}.bin", d) for i, d in enumerate(data)]
                start = time.time()
                sids = drop(items)
                elapsed = arrivals.wait(sids) - start
                print(f"  {source:6} connector: {count / elapsed:7.1f} files/s {mb / elapsed:7.1f} MB/s"
                      f"   ratio to ceiling {ceiling / elapsed:.2f}")
    finally:
        connector.terminate()
        connector.wait(30)
        for obj in list(s3.list_objects(Bucket.INBOX, prefix=prefix, recursive=True)):
            s3.remove_object(Bucket.INBOX, obj.object_name)
        for obj in list(s3.list_objects(Bucket.RAW, prefix="bench-ceiling/", recursive=True)):
            s3.remove_object(Bucket.RAW, obj.object_name)
        for sha in written_shas:
            s3.remove_object(Bucket.RAW, sha)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
