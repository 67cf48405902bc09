"""Benchmark of ingestion: drop → connector → normalizer → part, through the real services.

Over a generated corpus of mixed documents (PDF, DOCX, HTML, Markdown, text, chat JSONL; ES/EN),
in one run it prints:
1. end-to-end docs/s, MB/s and tokens/s from drop to part through the real services (an
   `afina connector` and an `afina normalizer` process), against the same extraction, cleaning
   and tokenization functions called in one process over the same files (goal ratio >= 0.8);
2. afina's extraction against markitdown's on the same files (unstructured's partition needs
   a model download at run time, impossible offline here) (goal >= 3x faster);
3. drop→part latency p50/p99 for single documents dropped one at a time (goal p50 <= 1 s).

    .venv/bin/python benchmarks/ingest.py [--docs 200] [--latency-samples 20]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from arrivals import Arrivals
from services import media, registry, stack
from services.contracts import DocumentNormalized, Settings, Topic
from services.normalizer.extract import Rejection, extract
from services.normalizer.pipeline import normalize
from services.normalizer.tokenize import chunk, count_tokens
from services.storage import minio_client
from tests import corpus
from tests.integration.harness import ensure_champion_tokenizer

WORDS = ("empresa política cliente producto servicio equipo proyecto informe contrato factura plazo "
         "company policy customer product service team project report contract invoice deadline "
         "vacaciones horario formación viaje gasto reunión objetivo calidad seguridad acceso").split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "."


def make_corpus(n: int, seed: str) -> list[corpus.Doc]:
    """n unique documents, cycling through the formats, of mixed length."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        paragraphs = [" ".join(sentence(rng) for _ in range(rng.randint(2, 6))) for _ in range(rng.randint(3, 25))]
        kind = i % 6
        if kind == 0:
            data = corpus._pdf([paragraphs[j : j + 3] for j in range(0, len(paragraphs), 3)], header="ACME")
            name = f"doc-{i}.pdf"
        elif kind == 1:
            data = corpus._docx(paragraphs, [["a", "b"], ["1", "2"]], "ACME", "Interno")
            name = f"doc-{i}.docx"
        elif kind == 2:
            data = corpus._html(f"Página {i}", paragraphs)
            name = f"doc-{i}.html"
        elif kind == 3:
            data = ("# Documento\n\n" + "\n\n".join(paragraphs)).encode()
            name = f"doc-{i}.md"
        elif kind == 4:
            data = "\n\n".join(paragraphs).encode("cp1252", errors="replace")
            name = f"doc-{i}.txt"
        else:
            import json

            data = "\n".join(json.dumps({"prompt": p, "completion": sentence(rng)}, ensure_ascii=False)
                             for p in paragraphs).encode()
            name = f"doc-{i}.jsonl"
        docs.append(corpus.Doc(name, data))
    return docs


def in_process(docs: list[corpus.Doc], tokenizer) -> tuple[float, int]:
    """The ceiling: the same functions, one process, no services; returns seconds and tokens."""
    start, tokens = time.perf_counter(), 0
    for doc in docs:
        media_type = media.sniff(doc.data[: media.HEAD_BYTES], doc.name, whole=io.BytesIO(doc.data))
        try:
            normalized = normalize(doc.data, media_type, doc.name)
        except Rejection:
            continue
        if normalized.kind == "chat":
            tokens += sum(len(ids) for ids in count_tokens([normalized.text], tokenizer))
        else:
            tokens += sum(len(c.token_ids) for c in chunk(normalized.text, tokenizer, 1024))
    return time.perf_counter() - start, tokens


def extraction_only(docs: list[corpus.Doc]) -> float:
    start = time.perf_counter()
    for doc in docs:
        media_type = media.sniff(doc.data[: media.HEAD_BYTES], doc.name, whole=io.BytesIO(doc.data))
        try:
            extract(doc.data, media_type, doc.name)
        except Rejection:
            pass
    return time.perf_counter() - start


def markitdown_extraction(docs: list[corpus.Doc]) -> float | None:
    try:
        from markitdown import MarkItDown
    except ImportError:
        return None
    converter = MarkItDown(enable_plugins=False)
    start = time.perf_counter()
    for doc in docs:
        try:
            converter.convert_stream(io.BytesIO(doc.data), file_extension=Path(doc.name).suffix)
        except Exception:  # markitdown's failures are its own; timing is what is compared
            pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=204)
    parser.add_argument("--latency-samples", type=int, default=20)
    args = parser.parse_args()

    settings = Settings()
    stack.up(settings, echo=lambda line: None)
    ensure_champion_tokenizer(settings)
    s3 = minio_client(settings)
    tokenizer, _ = registry.load_tokenizer(s3, registry.alias_version(s3))
    run_id = uuid.uuid4().hex[:8]
    docs = make_corpus(args.docs, run_id)
    megabytes = sum(len(d.data) for d in docs) / 1e6
    print(f"ingest benchmark ({os.cpu_count()} cores): {len(docs)} documents, {megabytes:.1f} MB, 6 formats")

    # The services load the parsers and the language model before they say ready: so does the ceiling.
    in_process(make_corpus(6, run_id + "-warm-up"), tokenizer)
    ceiling_s, ceiling_tokens = in_process(docs, tokenizer)
    ours = extraction_only(docs)
    theirs = markitdown_extraction(docs)

    work = Path(tempfile.mkdtemp(prefix="afina-bench-ingest-"))
    inbox, staging = work / "inbox", work / "staging"
    inbox.mkdir()
    staging.mkdir()
    name = f"ingest{run_id}"
    env = {**os.environ, "AFINA_INBOX_DIR": str(inbox), "AFINA_INBOX_NAME": name, "AFINA_STATE_DIR": str(settings.state_dir),
           "AFINA_CONNECTOR_WATCH_BUCKET": "false", "AFINA_CONNECTOR_METRICS_PORT": "0", "AFINA_NORMALIZER_METRICS_PORT": "0"}
    afina = str(Path(sys.executable).with_name("afina"))
    logs = {svc: (work / f"{svc}.log").open("wb") for svc in ("connector", "normalizer")}
    procs = [subprocess.Popen([afina, svc], env=env, stdout=logs[svc], stderr=logs[svc]) for svc in logs]
    outcomes = Arrivals(settings, [Topic.DOCUMENTS_NORMALIZED, Topic.DOCUMENTS_REJECTED])
    try:
        for svc, ready in (("connector", b"connector ready"), ("normalizer", b"normalizer ready")):
            while ready not in (work / f"{svc}.log").read_bytes():
                time.sleep(0.1)
        for doc in docs:
            (staging / doc.name).write_bytes(doc.data)
        start = time.time()  # the arrivals' clock
        for doc in docs:
            os.replace(staging / doc.name, inbox / doc.name)
        end = outcomes.wait([f"{name}:{d.name}" for d in docs])
        services_s = end - start
        normalized = [e for _, e in (outcomes.at[f"{name}:{d.name}"] for d in docs) if isinstance(e, DocumentNormalized)]
        tokens = sum(e.tokens for e in normalized)

        latencies = []
        for i, doc in enumerate(make_corpus(args.latency_samples, run_id + "-latency")):
            (staging / doc.name).write_bytes(doc.data)
            start = time.time()
            os.replace(staging / doc.name, inbox / f"lat-{doc.name}")
            latencies.append(outcomes.wait([f"{name}:lat-{doc.name}"]) - start)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)

    print(f"1. drop → part through the services: {len(docs) / services_s:6.1f} docs/s {megabytes / services_s:6.2f} MB/s "
          f"{tokens / services_s:9.0f} tokens/s ({len(normalized)} normalized)")
    print(f"   same functions in one process:     {len(docs) / ceiling_s:6.1f} docs/s {megabytes / ceiling_s:6.2f} MB/s "
          f"{ceiling_tokens / ceiling_s:9.0f} tokens/s")
    print(f"   ratio services / one process: {ceiling_s / services_s:.2f} (goal >= 0.80)")
    if theirs is None:
        print("2. markitdown is not installed (pip install 'markitdown[pdf,docx]'): comparison skipped")
    else:
        print(f"2. extraction: afina {len(docs) / ours:7.1f} docs/s, markitdown {len(docs) / theirs:7.1f} docs/s: "
              f"afina {theirs / ours:.1f}x faster (goal >= 3x; unstructured cannot run offline)")
    print(f"3. drop → part latency, single documents: p50 {statistics.median(latencies) * 1000:5.0f} ms "
          f"p99 {sorted(latencies)[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))] * 1000:5.0f} ms "
          f"(goal p50 <= 1000 ms)")


if __name__ == "__main__":
    main()
