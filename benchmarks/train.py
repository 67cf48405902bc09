"""Benchmark of training: afina's trainer against another recipe, on the same model and data.

On mixed-length documents (many short, a few up to the sequence length) made from the bundled
sample text and written as real dataset parts, in one run it prints:
1. trained tokens/s and peak memory of afina's trainer (`python -m services.tuning.train`:
   documents packed into full sequences, attention kept inside each document) against
   - `--against naive`: transformers `Trainer` + peft LoRA, every document one example padded to
     the maximum length, padding labelled -100 (goal: tokens/s >= 2x);
   - `--against trl`: TRL's `SFTTrainer` + peft LoRA with packing (best-fit decreasing,
     padding-free, position ids per document) (goals: tokens/s >= 1.2x, peak memory <= 1x);
2. both adapters' final eval loss (mean token loss on the same held-out documents, computed the
   same way for both), which must agree within 2%.

Fair by construction: the same base model, LoRA (r, alpha, dropout, targets), seed, AdamW
(lr, no weight decay, clip 1.0), warm-up + cosine schedule, micro-batch shape (micro_batch x
sequence_length) and number of optimizer steps (the naive side accumulates more micro-batches
per step, so each step sees about the same real tokens); both train the same whole number of
epochs over the same documents, so both train the same real (label != -100) tokens. TRL's
best-fit blocks are less full than afina's, so the same tokens take it more optimizer steps, and
early in training more steps lower the loss; `--same steps` stops it at afina's step count instead
(then it trains a few percent fewer tokens): the two views bracket the comparison.
The others' Trainer is given afina's own schedule function, so each step's learning rate is the
same. Each trainer runs in its own process (peak memory = that
process's ru_maxrss on CPU, dominated at a small model's size by the runtime itself; CUDA's max
allocated on a GPU). Other work on a shared machine only ever slows a run down, so the two
alternate for --rounds rounds: each side's fastest round is its speed, and the ratio judged is
the median of the rounds' ratios (a round's two runs are back to back). The eval loss is the
mean next-token loss over held-out documents, one document (+ eos) per sequence, as the flow's
evaluation scores text; both adapters on the same base model, by the same function.

On a 2-core machine that other processes share, torch's OpenMP threads spin-wait and a run can
be several times slower than alone; both trainers inherit this environment, so
`OMP_WAIT_POLICY=PASSIVE` (or `OMP_NUM_THREADS=1`) makes the comparison steadier there.

    PYTHONPATH=. .venv/bin/python benchmarks/train.py [--against naive|trl] [--base afina-tiny]
        [--docs 800] [--steps 60] [--rounds 3]
    # on the default base model against TRL (about 10 minutes on 2 cores):
    PYTHONPATH=. .venv/bin/python benchmarks/train.py --against trl --base smollm2-135m-instruct --steps 6 --rounds 2
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


# --- the other trainers, each run as its own process: `benchmarks/train.py --other CONFIG.json` ------------------

def other_main(config: dict) -> dict:
    """The recipe ``config["recipe"]`` names, on the same model, LoRA and optimizer as afina's trainer.

    naive: what one writes first, each document one example padded to the maximum length, and Trainer.
    trl:   TRL's SFTTrainer with packing (best-fit decreasing, padding-free: one flattened row per
           micro-batch with position ids, so attention stays inside each document, as afina's does).
    """
    import pyarrow.parquet as pq
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.tuning.train import lr_factor

    random.seed(config["seed"])
    torch.manual_seed(config["seed"])  # as afina's trainer does before loading: the same LoRA initialisation
    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(config["base_model"])
    base = AutoModelForCausalLM.from_pretrained(config["base_model"], dtype=torch.bfloat16 if cuda else torch.float32)
    lora = LoraConfig(r=config["lora_r"], lora_alpha=config["lora_alpha"], lora_dropout=config["lora_dropout"],
                      target_modules=config["target_modules"], task_type="CAUSAL_LM")
    documents = [row["token_ids"] + [tokenizer.eos_token_id] for path in config["parts"]
                 for row in pq.read_table(path, columns=["token_ids"]).to_pylist()]
    arguments = dict(
        output_dir=config["output"], per_device_train_batch_size=config["micro_batch"],
        gradient_accumulation_steps=config["gradient_accumulation"], num_train_epochs=config["epochs"],
        learning_rate=config["learning_rate"], weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
        seed=config["seed"], logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0, use_cpu=not cuda,
        bf16=config["bf16"],  # the arithmetic afina's trainer chose (on a CPU: bf16 autocast where it is native)
        # as afina's trainer chose it (by free memory); TRL's own default would be on
        gradient_checkpointing=config["gradient_checkpointing"],
        max_steps=config["max_steps"],  # -1: the epochs decide
    )
    if config["recipe"] == "naive":
        from transformers import (
            DataCollatorForLanguageModeling,
            Trainer,
            TrainingArguments,
        )

        length = config["sequence_length"]
        examples = [{"input_ids": ids + [tokenizer.pad_token_id] * (length - len(ids)),
                     "attention_mask": [1] * len(ids) + [0] * (length - len(ids))} for ids in documents]
        trainer = Trainer(model=get_peft_model(base, lora), args=TrainingArguments(**arguments),
                          train_dataset=examples, data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    else:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(model=base, peft_config=lora, processing_class=tokenizer,
                             train_dataset=Dataset.from_list([{"input_ids": ids} for ids in documents]),
                             args=SFTConfig(**arguments, packing=True, packing_strategy="bfd",
                                            max_length=config["sequence_length"]))

    counted = {"real": 0, "processed": 0}
    collate = trainer.data_collator

    def counting(batch):  # labels -100 on padding (naive); none padded (trl)
        out = collate(batch)
        counted["real"] += int((out["labels"] != IGNORE).sum())
        counted["processed"] += out["labels"].numel()
        return out

    trainer.data_collator = counting

    def afina_schedule(num_training_steps: int, optimizer=None):  # afina's warm-up and cosine, step for step
        trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer or trainer.optimizer, lambda step: lr_factor(step, num_training_steps, config["warmup_steps"]))
        return trainer.lr_scheduler

    trainer.create_scheduler = afina_schedule
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train()
    trainer.model.save_pretrained(Path(config["output"]) / "adapter", safe_serialization=True)
    seconds = time.perf_counter() - started
    result = {"steps": trainer.state.global_step, "trained_tokens_this_run": counted["real"],
              "processed_tokens": counted["processed"], "seconds": seconds,
              "tokens_per_second": counted["real"] / seconds,
              "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None}
    (Path(config["output"]) / "result.json").write_text(json.dumps(result, indent=2))
    return result


# --- the data: mixed-length documents from the sample text, as real dataset parts ------------------------------

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


GOALS = {  # the other recipe: (tokens/s ratio afina/other at least, peak memory ratio afina/other at most)
    "naive": (2.0, None),
    "trl": (1.2, 1.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", choices=sorted(GOALS), default="naive", help="the recipe afina is compared with")
    parser.add_argument("--same", choices=("tokens", "steps"), default="tokens",
                        help="what the other recipe is given as much of: the same trained tokens (whole epochs; "
                             "TRL's fuller-or-not blocks make its step count differ), or the same optimizer steps")
    parser.add_argument("--docs", type=int, default=800, help="training documents generated (before trimming)")
    parser.add_argument("--eval-docs", type=int, default=200, help="held-out documents for the eval loss")
    parser.add_argument("--steps", type=int, default=60, help="afina optimizer steps (rounded to whole epochs)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate the two trainers this many times; each side's fastest round counts")
    parser.add_argument("--base", default="afina-tiny",
                        help="base model: a built-in or packaged name (as AFINA_BASE_MODEL), or a model folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print where it is")
    parser.add_argument("--other", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.other:
        print(json.dumps(other_main(json.loads(Path(args.other).read_text()))))
        return

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.settings import Settings, TuningSettings
    from services.tuning.base import built
    from services.tuning.train import TrainConfig, uses_bf16

    base = Path(args.base) if Path(args.base).is_dir() else built(Settings(), args.base, echo=print)[0]
    tokenizer = AutoTokenizer.from_pretrained(base)
    folder = Path(tempfile.mkdtemp(prefix="afina-bench-train-"))
    other = args.against
    # the same data on both sides: the other recipes have no question-and-answer examples
    defaults = TrainConfig.of(TuningSettings(), base_model=str(base), parts=[], knowledge_examples=False)
    length, per_step = defaults.sequence_length, defaults.micro_batch * defaults.gradient_accumulation

    train_docs = fill_whole_blocks(documents(tokenizer, args.docs, 1, length - 1), length * per_step)
    held_out = documents(tokenizer, args.eval_docs, 2, length - 1)
    parts = write_parts(train_docs, folder / "parts")
    stream = sum(len(ids) + 1 for ids in train_docs)
    steps_per_epoch = stream // (length * per_step)
    epochs = max(1, round(args.steps / steps_per_epoch))
    steps = epochs * steps_per_epoch
    if other == "naive":  # one padded document per example: more micro-batches for the same real tokens per step
        micro_batches = math.ceil(len(train_docs) / defaults.micro_batch)
        accumulation = max(1, round(micro_batches / steps_per_epoch))
        their_steps = f"~{math.ceil(micro_batches / accumulation) * epochs} steps x {accumulation} micro-batches " \
                      "of padded documents (the same real tokens per step, on average)"
    else:  # packed too: the same micro-batch shape and steps (best-fit blocks are a little less full)
        accumulation = defaults.gradient_accumulation
        their_steps = (f"as many steps x {accumulation} micro-batches as its best-fit packed blocks make "
                       "(more than afina's when they are less full), padding-free")
    lengths = sorted(len(ids) + 1 for ids in train_docs)
    bf16 = uses_bf16(defaults.precision, "cuda" if _cuda() else "cpu")

    print(f"afina training benchmark: afina's trainer (documents packed into full sequences) vs {other}: "
          + {"naive": "transformers Trainer + peft LoRA, each document one example padded to the maximum length",
             "trl": "TRL SFTTrainer + peft LoRA, packing (bfd, padding-free)"}[other])
    print(f"model {base.name} ({base}); {'cuda' if _cuda() else 'cpu'}, {os.cpu_count()} cores, "
          f"torch threads {_threads()}, load average {os.getloadavg()[0]:.1f} at the start"
          + "".join(f", {k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("OMP_")))
    print(f"data  {len(train_docs)} train documents in {len(parts)} parts, {stream} tokens with eos; lengths "
          f"min {lengths[0]} median {lengths[len(lengths) // 2]} mean {stream / len(lengths):.1f} "
          f"p90 {lengths[int(len(lengths) * 0.9)]} max {lengths[-1]}; {len(held_out)} held-out documents")
    print(f"both  LoRA r={defaults.lora_r} alpha={defaults.lora_alpha} on {defaults.target_modules} modules, "
          f"lr {defaults.learning_rate} warm-up {defaults.warmup_steps} + cosine, AdamW, clip 1.0, seed "
          f"{defaults.seed}, micro-batch {defaults.micro_batch}x{length}, {epochs} epochs")
    print(f"afina {steps} steps x {defaults.gradient_accumulation} micro-batches of packed blocks; gradient "
          "checkpointing and bf16 or fp32 as afina chooses them (by free memory, by the hardware), the same for "
          f"the other side: {'bf16' if bf16 else 'fp32'}")
    print(f"{other} {their_steps}" + (f"; stopped at afina's {steps} steps (--same steps)" if args.same == "steps"
                                       else ""))
    print(flush=True)

    afina_config = defaults.model_copy(update={"parts": parts, "steps": steps})
    other_config = {"recipe": other, "base_model": str(base), "parts": parts, "output": "", "epochs": epochs,
                    "micro_batch": defaults.micro_batch, "gradient_accumulation": accumulation,
                    "sequence_length": length, "learning_rate": defaults.learning_rate,
                    "warmup_steps": defaults.warmup_steps, "lora_r": defaults.lora_r,
                    "lora_alpha": defaults.lora_alpha, "lora_dropout": defaults.lora_dropout,
                    "target_modules": defaults.target_modules, "seed": defaults.seed,
                    "max_steps": steps if args.same == "steps" else -1,
                    "bf16": bf16}
    results: dict[str, list[dict]] = {"afina": [], other: []}
    for r in range(args.rounds):
        for side in (("afina", other) if r % 2 == 0 else (other, "afina")):
            out = folder / f"{side}-{r}"
            out.mkdir(parents=True)
            if side == "afina":
                (out / "config.json").write_text(afina_config.model_copy(update={"output": str(out)}).model_dump_json())
                command = [sys.executable, "-m", "services.tuning.train", str(out / "config.json")]
            else:  # afina ran first in round 1: its choice of gradient checkpointing is known
                checkpointing = results["afina"][0]["gradient_checkpointing"]
                (out / "config.json").write_text(json.dumps({**other_config, "output": str(out),
                                                             "gradient_checkpointing": checkpointing}))
                command = [sys.executable, str(Path(__file__).resolve()), "--other", str(out / "config.json")]
            result = run(command, out)
            results[side].append(result)
            print(f"round {r + 1} {side:5}: {result['trained_tokens_this_run']} tokens in {result['seconds']:.1f} s "
                  f"= {result['tokens_per_second']:,.0f} tokens/s, {result['steps']} steps, peak "
                  f"{result['peak_memory_bytes'] / 2**20:,.0f} MiB (process: {result['wall_seconds']:.1f} s wall, "
                  f"{result['cpu_seconds']:.1f} s cpu)", flush=True)

    # other work on the machine only ever slows a run down: each side's fastest round is its speed; the
    # ratio that is judged is the median of the rounds' ratios (each round's two runs are back to back)
    a_tokens, o_tokens = results["afina"][0]["trained_tokens_this_run"], results[other][0]["trained_tokens_this_run"]
    a_speed, o_speed = (max(r["tokens_per_second"] for r in results[side]) for side in ("afina", other))
    a_memory, o_memory = (statistics.median(r["peak_memory_bytes"] for r in results[side])
                          for side in ("afina", other))
    per_round = [a["tokens_per_second"] / o["tokens_per_second"] for a, o in zip(results["afina"], results[other])]
    processed = results[other][0]["processed_tokens"]

    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    losses = {}
    for name, adapter in (("base", None), ("afina", folder / "afina-0" / "adapter"),
                          (other, folder / f"{other}-0" / "adapter")):
        model = AutoModelForCausalLM.from_pretrained(base)
        if adapter is not None:
            model = PeftModel.from_pretrained(model, adapter)
        losses[name] = eval_loss(model, tokenizer, held_out)
    difference = abs(losses["afina"] - losses[other]) / losses[other]
    speedup = statistics.median(per_round)
    speed_goal, memory_goal = GOALS[other]

    print()
    # the model shifts labels by one: a sequence's first token is never a target, so after the shift one
    # sequence per document (naive) has a few fewer targets than packed blocks; tokens/s counts labels
    print(f"trained tokens (labels != -100): afina {a_tokens}, {other} {o_tokens}")
    if processed > o_tokens:
        print(f"{other} also computed {processed - o_tokens} tokens that are no target (padding, or a document's "
              f"first token): {processed / o_tokens:.2f}x the trained ones")
    print(f"tokens/s (best of {args.rounds}): afina {a_speed:,.0f}, {other} {o_speed:,.0f} ({a_speed / o_speed:.2f}x); "
          f"ratio round by round: {', '.join(f'{x:.2f}x' for x in per_round)}, median {speedup:.2f}x")
    print(f"peak memory (median): afina {a_memory / 2**20:,.0f} MiB, {other} {o_memory / 2**20:,.0f} MiB, "
          f"ratio {a_memory / o_memory:.2f}x (afina / {other})")
    print(f"eval loss on {len(held_out)} held-out documents: base {losses['base']:.4f}, afina {losses['afina']:.4f}, "
          f"{other} {losses[other]:.4f}; relative difference {difference:.2%}")
    print(f"{'PASS' if speedup >= speed_goal else 'MISS'}  throughput ratio {speedup:.2f}x, median of the rounds "
          f"(goal >= {speed_goal:g}x)")
    if memory_goal is not None:
        print(f"{'PASS' if a_memory / o_memory <= memory_goal else 'MISS'}  peak memory ratio "
              f"{a_memory / o_memory:.2f}x (goal <= {memory_goal:g}x)")
    print(f"{'PASS' if difference <= 0.02 else 'MISS'}  eval losses agree within {difference:.2%} (goal <= 2%)")
    if len(per_round) > 1 and max(per_round) / min(per_round) > 1.25:
        print(f"NOTE  the rounds' ratios disagree (load average now {os.getloadavg()[0]:.1f}): other work slowed "
              "some runs; rerun on a quieter machine for a firm ratio")
    if a_tokens != o_tokens:
        print(f"NOTE  the trained token counts differ by {abs(a_tokens - o_tokens)} ({a_tokens / o_tokens - 1:+.1%})")
    if args.keep:
        print(f"runs kept in {folder}")
    else:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
