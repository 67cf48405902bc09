"""Benchmark of training: afina's trainer against the naive recipe, on the same model and data.

On mixed-length documents (many short, a few up to the sequence length) made from the bundled
sample text and written as real dataset parts, in one run it prints:
1. trained tokens/s and peak memory of afina's trainer (`python -m services.tuning.train`:
   documents packed into full sequences) against the naive recipe (transformers `Trainer` +
   peft LoRA, every document one example padded to the maximum length, padding labelled -100),
   as a ratio (goal >= 2x);
2. both adapters' final eval loss (mean token loss on the same held-out documents, computed the
   same way for both), which must agree within 2%.

Fair by construction: the same base model, LoRA (r, alpha, dropout, targets), seed, AdamW
(lr, no weight decay, clip 1.0), warm-up + cosine schedule, micro-batch shape (micro_batch x
sequence_length) and number of optimizer steps (the naive side accumulates more micro-batches
per step, so each step sees about the same real tokens); both train the same whole number of
epochs over the same documents, so both train exactly the same real (label != -100) tokens.
The naive side uses Trainer's own cosine schedule (its warm-up starts from 0 where afina's starts
from lr/warm-up: a one-step shift). Each trainer runs in its own process (peak memory = that
process's ru_maxrss on CPU, dominated at this model size by the runtime itself; CUDA's max
allocated on a GPU). Other work on a shared machine only ever slows a run down, so the two
alternate for --rounds rounds: each side's fastest round is its speed, and the ratio judged is
the median of the rounds' ratios (a round's two runs are back to back). The eval loss is the
mean next-token loss over held-out documents, one document (+ eos) per sequence, as the flow's
evaluation scores text; both adapters on the same base model, by the same function.

On a 2-core machine that other processes share, torch's OpenMP threads spin-wait and a run can
be several times slower than alone; both trainers inherit this environment, so
`OMP_WAIT_POLICY=PASSIVE` (or `OMP_NUM_THREADS=1`) makes the comparison steadier there.

    PYTHONPATH=. .venv/bin/python benchmarks/train.py [--docs 800] [--steps 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORE = -100


# --- the naive recipe, run as its own process: `benchmarks/train.py --naive CONFIG.json` ---------------------

def naive_main(config: dict) -> dict:
    """What one writes first: each document one example, padded to the maximum length, and Trainer."""
    import pyarrow.parquet as pq
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    random.seed(config["seed"])
    torch.manual_seed(config["seed"])  # as afina's trainer does before loading: the same LoRA initialisation
    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(config["base_model"])
    base = AutoModelForCausalLM.from_pretrained(config["base_model"], dtype=torch.bfloat16 if cuda else torch.float32)
    lora = LoraConfig(r=config["lora_r"], lora_alpha=config["lora_alpha"], lora_dropout=config["lora_dropout"],
                      target_modules=config["target_modules"], task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)

    length = config["sequence_length"]
    examples = []
    for path in config["parts"]:
        for row in pq.read_table(path, columns=["kind", "token_ids"]).to_pylist():
            ids = (row["token_ids"] + [tokenizer.eos_token_id])[:length]
            padding = length - len(ids)
            examples.append({"input_ids": ids + [tokenizer.pad_token_id] * padding,
                             "attention_mask": [1] * len(ids) + [0] * padding})

    counted = {"real": 0, "padded": 0}
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)  # labels = input_ids, -100 on padding

    def collate(batch):
        out = collator(batch)
        counted["real"] += int((out["labels"] != IGNORE).sum())
        counted["padded"] += out["labels"].numel()
        return out

    args = TrainingArguments(
        output_dir=config["output"], per_device_train_batch_size=config["micro_batch"],
        gradient_accumulation_steps=config["gradient_accumulation"], num_train_epochs=config["epochs"],
        learning_rate=config["learning_rate"], lr_scheduler_type="cosine", warmup_steps=config["warmup_steps"],
        weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", seed=config["seed"], logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0, use_cpu=not cuda,
    )
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=collate)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train()
    model.save_pretrained(Path(config["output"]) / "adapter", safe_serialization=True)
    seconds = time.perf_counter() - started
    result = {"steps": trainer.state.global_step, "trained_tokens_this_run": counted["real"],
              "processed_tokens": counted["padded"], "seconds": seconds,
              "tokens_per_second": counted["real"] / seconds,
              "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None}
    (Path(config["output"]) / "result.json").write_text(json.dumps(result, indent=2))
    return result


# --- the data: mixed-length documents from the sample text, as real dataset parts ------------------------------

def base_model(given: str | None) -> Path:
    """The given model folder, else the stack's built afina-tiny, else one built once into a cache."""
    if given:
        return Path(given)
    built = ROOT / ".afina" / "models" / "afina-tiny"
    if (built / "model.safetensors").exists():
        return built
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "afina-bench" / "afina-tiny"
    if not (cache / "model.safetensors").exists():
        from services.tuning import tiny

        print(f"building afina-tiny into {cache} (about a minute) ...", flush=True)
        tiny.build(cache)
    return cache


def documents(tokenizer, n: int, seed: int, longest: int) -> list[list[int]]:
    """n new documents in the sample text's language, of skewed length: many short, a few long.

    Sentences come from a word bigram chain over the sample text's lines, so held-out documents
    are new text of the same kind (not lines the base model already memorised) and the losses sit
    in a realistic range. Lengths are log-normal (median ~24 tokens) and a document ends at a
    sentence end; a document plus its eos always fits in one sequence (``longest`` + 1), so the
    naive recipe never truncates and both sides train on the same tokens."""
    from services.tuning import tiny

    chain: dict[str, list[str]] = {}
    for line in tiny.sample_text().splitlines():
        words = ["<s>", *line.split(), "</s>"]
        for a, b in zip(words, words[1:]):
            chain.setdefault(a, []).append(b)
    rng = random.Random(seed)

    def sentence() -> str:
        words, word = [], rng.choice(chain["<s>"])
        while word != "</s>" and len(words) < 40:
            words.append(word)
            word = rng.choice(chain[word])
        return " ".join(words)

    docs = []
    while len(docs) < n:
        target = max(8, int(rng.lognormvariate(math.log(24), 0.9)))
        ids: list[int] = []
        while len(ids) < target:
            more = tokenizer(("\n" if ids else "") + sentence(), add_special_tokens=False)["input_ids"]
            if ids and len(ids) + len(more) > longest:
                break
            ids += more
        if len(ids) <= longest:
            docs.append(ids)
    return docs


def fill_whole_blocks(docs: list[list[int]], unit: int) -> list[list[int]]:
    """The leading documents whose stream (each + eos) is a whole number of ``unit`` tokens; the
    last one kept is cut to fit. Packed, they make whole blocks and whole optimizer steps, so both
    trainers can be given exactly the same number of epochs, hence of trained tokens."""
    limit = sum(len(ids) + 1 for ids in docs) // unit * unit
    if limit == 0:
        raise SystemExit(f"too few documents for one optimizer step of {unit} tokens: raise --docs")
    kept, used = [], 0
    for ids in docs:
        room = limit - used
        if room <= 0:
            break
        if len(ids) + 1 > room:
            if room == 1:  # an eos alone would be left: take one token from the previous document instead
                kept[-1] = kept[-1][:-1]
                room = 2
            ids = ids[: room - 1]
        kept.append(ids)
        used += len(ids) + 1
    assert used == limit
    return kept


def write_parts(docs: list[list[int]], folder: Path, parts: int = 4) -> list[str]:
    from services.datasets.parts import to_parquet

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    paths = []
    size = math.ceil(len(docs) / parts)
    for p in range(parts):
        chunk = docs[p * size : (p + 1) * size]
        if not chunk:
            continue
        rows = [{"source_id": f"bench:{p}", "sha256": f"{p:064x}", "chunk_index": i, "kind": "text", "text": "",
                 "messages": None, "token_ids": ids, "n_tokens": len(ids), "language": "es",
                 "media_type": "text/plain", "tokenizer": "bench", "discovered_at": now, "normalized_at": now}
                for i, ids in enumerate(chunk)]
        path = folder / f"part-{p}.parquet"
        path.write_bytes(to_parquet(rows))
        paths.append(str(path))
    return paths


# --- running and scoring ----------------------------------------------------------------------------------------

def run(command: list[str], output: Path) -> dict:
    """Run one trainer in its own process; its result plus its own peak memory and wall time."""
    output.mkdir(parents=True, exist_ok=True)
    log = (output / "log.txt").open("w")
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    log.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed:\n" + (output / "log.txt").read_text()[-4000:])
    result = json.loads((output / "result.json").read_text())
    if not _cuda():  # on a GPU each trainer reports CUDA's max allocated itself
        result["peak_memory_bytes"] = usage.ru_maxrss * 1024  # the child's own peak RSS (Linux: KiB)
    result["wall_seconds"] = wall
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return result


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def eval_loss(model, tokenizer, docs: list[list[int]], batch_size: int = 16) -> float:
    """Mean next-token loss over held-out documents, each (plus eos) its own unpadded-loss row."""
    import torch

    device = next(model.parameters()).device
    model.eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(docs), batch_size):
            rows = [ids + [tokenizer.eos_token_id] for ids in docs[start : start + batch_size]]
            longest = max(map(len, rows))
            input_ids = torch.full((len(rows), longest), tokenizer.pad_token_id, device=device)
            labels = torch.full((len(rows), longest), IGNORE, device=device)
            mask = torch.zeros((len(rows), longest), dtype=torch.long, device=device)
            for r, ids in enumerate(rows):
                input_ids[r, : len(ids)] = labels[r, : len(ids)] = torch.tensor(ids)
                mask[r, : len(ids)] = 1
            logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()
            nll += torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], ignore_index=IGNORE,
                                                     reduction="sum").item()
            count += int((labels[:, 1:] != IGNORE).sum())
    return nll / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=800, help="training documents generated (before trimming)")
    parser.add_argument("--eval-docs", type=int, default=200, help="held-out documents for the eval loss")
    parser.add_argument("--steps", type=int, default=60, help="afina optimizer steps (rounded to whole epochs)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate the two trainers this many times; each side's fastest round counts")
    parser.add_argument("--base", help="base model folder (default: the built afina-tiny)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print where it is")
    parser.add_argument("--naive", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive:
        print(json.dumps(naive_main(json.loads(Path(args.naive).read_text()))))
        return

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.settings import TuningSettings
    from services.tuning.train import TrainConfig

    base = base_model(args.base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    folder = Path(tempfile.mkdtemp(prefix="afina-bench-train-"))
    # the same data on both sides: the naive recipe has no question-and-answer examples
    defaults = TrainConfig.of(TuningSettings(), base_model=str(base), parts=[], knowledge_examples=False)
    length, per_step = defaults.sequence_length, defaults.micro_batch * defaults.gradient_accumulation

    train_docs = fill_whole_blocks(documents(tokenizer, args.docs, 1, length - 1), length * per_step)
    held_out = documents(tokenizer, args.eval_docs, 2, length - 1)
    parts = write_parts(train_docs, folder / "parts")
    stream = sum(len(ids) + 1 for ids in train_docs)
    steps_per_epoch = stream // (length * per_step)
    epochs = max(1, round(args.steps / steps_per_epoch))
    steps = epochs * steps_per_epoch
    micro_batches = math.ceil(len(train_docs) / defaults.micro_batch)  # the naive recipe's, per epoch
    accumulation = max(1, round(micro_batches / steps_per_epoch))
    lengths = sorted(len(ids) + 1 for ids in train_docs)

    print("afina training benchmark: afina's trainer (documents packed into full sequences) vs the naive recipe")
    print("(transformers Trainer + peft LoRA, each document one example padded to the maximum length)")
    print(f"model {base.name} ({base}); {'cuda' if _cuda() else 'cpu'}, {os.cpu_count()} cores, "
          f"torch threads {_threads()}, load average {os.getloadavg()[0]:.1f} at the start"
          + "".join(f", {k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("OMP_")))
    print(f"data  {len(train_docs)} train documents in {len(parts)} parts, {stream} tokens with eos; lengths "
          f"min {lengths[0]} median {lengths[len(lengths) // 2]} mean {stream / len(lengths):.1f} "
          f"p90 {lengths[int(len(lengths) * 0.9)]} max {lengths[-1]}; {len(held_out)} held-out documents")
    print(f"both  LoRA r={defaults.lora_r} alpha={defaults.lora_alpha} on {defaults.target_modules} modules, "
          f"lr {defaults.learning_rate} warm-up {defaults.warmup_steps} + cosine, AdamW, clip 1.0, seed "
          f"{defaults.seed}, micro-batch {defaults.micro_batch}x{length}, {epochs} epochs")
    print(f"afina {steps} steps x {defaults.gradient_accumulation} micro-batches of packed blocks")
    print(f"naive ~{math.ceil(micro_batches / accumulation) * epochs} steps x {accumulation} micro-batches of "
          f"padded documents (the same real tokens per step, on average)")
    print(flush=True)

    afina_config = defaults.model_copy(update={"parts": parts, "steps": steps})
    naive_config = {"base_model": str(base), "parts": parts, "output": "", "epochs": epochs,
                    "micro_batch": defaults.micro_batch, "gradient_accumulation": accumulation,
                    "sequence_length": length, "learning_rate": defaults.learning_rate,
                    "warmup_steps": defaults.warmup_steps, "lora_r": defaults.lora_r,
                    "lora_alpha": defaults.lora_alpha, "lora_dropout": defaults.lora_dropout,
                    "target_modules": defaults.target_modules, "seed": defaults.seed}
    results: dict[str, list[dict]] = {"afina": [], "naive": []}
    for r in range(args.rounds):
        for side in (("afina", "naive") if r % 2 == 0 else ("naive", "afina")):
            out = folder / f"{side}-{r}"
            out.mkdir(parents=True)
            if side == "afina":
                (out / "config.json").write_text(afina_config.model_copy(update={"output": str(out)}).model_dump_json())
                command = [sys.executable, "-m", "services.tuning.train", str(out / "config.json")]
            else:
                (out / "config.json").write_text(json.dumps({**naive_config, "output": str(out)}))
                command = [sys.executable, str(Path(__file__).resolve()), "--naive", str(out / "config.json")]
            result = run(command, out)
            results[side].append(result)
            print(f"round {r + 1} {side:5}: {result['trained_tokens_this_run']} tokens in {result['seconds']:.1f} s "
                  f"= {result['tokens_per_second']:,.0f} tokens/s, {result['steps']} steps, peak "
                  f"{result['peak_memory_bytes'] / 2**20:,.0f} MiB (process: {result['wall_seconds']:.1f} s wall, "
                  f"{result['cpu_seconds']:.1f} s cpu)", flush=True)

    # other work on the machine only ever slows a run down: each side's fastest round is its speed; the
    # ratio that is judged is the median of the rounds' ratios (each round's two runs are back to back)
    a_tokens, n_tokens = results["afina"][0]["trained_tokens_this_run"], results["naive"][0]["trained_tokens_this_run"]
    a_speed, n_speed = (max(r["tokens_per_second"] for r in results[side]) for side in ("afina", "naive"))
    a_memory, n_memory = (statistics.median(r["peak_memory_bytes"] for r in results[side])
                          for side in ("afina", "naive"))
    per_round = [a["tokens_per_second"] / n["tokens_per_second"] for a, n in zip(results["afina"], results["naive"])]
    processed = results["naive"][0]["processed_tokens"]

    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    losses = {}
    for name, adapter in (("base", None), ("afina", folder / "afina-0" / "adapter"),
                          ("naive", folder / "naive-0" / "adapter")):
        model = AutoModelForCausalLM.from_pretrained(base)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, adapter)
        losses[name] = eval_loss(model, tokenizer, held_out)
    difference = abs(losses["afina"] - losses["naive"]) / losses["naive"]
    speedup = statistics.median(per_round)

    print()
    # the model shifts labels by one: a sequence's first token is never a target, so after the shift the naive
    # recipe (one sequence per document) has a few fewer targets than packed blocks; tokens/s counts labels
    a_rows, n_rows = steps * per_step, len(train_docs) * epochs
    print(f"trained tokens (labels != -100): afina {a_tokens}, naive {n_tokens}; predicted after the shift: "
          f"afina {a_tokens - a_rows}, naive {n_tokens - n_rows}")
    print(f"naive also computed {processed - n_tokens} padding tokens: {processed / n_tokens:.2f}x the real ones")
    print(f"tokens/s (best of {args.rounds}): afina {a_speed:,.0f}, naive {n_speed:,.0f} ({a_speed / n_speed:.2f}x); "
          f"ratio round by round: {', '.join(f'{x:.2f}x' for x in per_round)}, median {speedup:.2f}x")
    print(f"peak memory (median): afina {a_memory / 2**20:,.0f} MiB, naive {n_memory / 2**20:,.0f} MiB, "
          f"ratio {n_memory / a_memory:.2f}x (naive / afina)")
    print(f"eval loss on {len(held_out)} held-out documents: base {losses['base']:.4f}, afina {losses['afina']:.4f}, "
          f"naive {losses['naive']:.4f}; relative difference {difference:.2%}")
    print(f"{'PASS' if speedup >= 2 else 'MISS'}  throughput ratio {speedup:.2f}x, median of the rounds (goal >= 2x)")
    print(f"{'PASS' if difference <= 0.02 else 'MISS'}  eval losses agree within {difference:.2%} (goal <= 2%)")
    if len(per_round) > 1 and max(per_round) / min(per_round) > 1.25:
        print(f"NOTE  the rounds' ratios disagree (load average now {os.getloadavg()[0]:.1f}): other work slowed "
              "some runs; rerun on a quieter machine for a firm ratio")
    if a_tokens != n_tokens:
        print(f"NOTE  the trained token counts differ by {abs(a_tokens - n_tokens)}")
    if args.keep:
        print(f"runs kept in {folder}")
    else:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
