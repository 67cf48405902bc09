"""The LoRA training recipe: read it top to bottom.

Runs as its own process (`python -m services.tuning.train CONFIG.json`) so that a crash or an
out-of-memory kill cannot take the flow runner down; a new run with the same output folder
resumes from the last checkpoint. fp32 on CPU, bf16 on a GPU; seeded end to end.

More than one GPU: launch the same module with `torchrun --nproc_per_node N`. Each process then
takes its share of every micro-batch (micro_batch sequences per process, so N times as many per
step); what that takes is in `parallel.Processes`, which does nothing in a single process. The
tests run it with two CPU processes (gloo), where it matches one process.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq
import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from pydantic import BaseModel
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.settings import TuningSettings
from services.tuning.batches import IGNORE, Block, chat_example, pack, pack_examples
from services.tuning.parallel import Processes


class TrainConfig(BaseModel):
    """What one run trains, and how: the recipe's whole input, written as the run's config.json."""

    base_model: str  # a folder (or id) that from_pretrained reads
    parts: list[str]  # local Parquet parts of the snapshot's train split
    output: str  # the run's folder: checkpoints, loss log, the final adapter
    continue_from: str | None = None  # an adapter folder to continue training
    # from the tuning settings (AFINA_TUNING_*), see TrainConfig.of
    sequence_length: int
    micro_batch: int
    gradient_accumulation: int
    steps: int
    learning_rate: float
    lora_r: int
    lora_alpha: int
    checkpoint_every: int
    # the recipe's own
    warmup_steps: int = 5
    lora_dropout: float = 0.0
    # every linear (and GPT-2's Conv1D) layer but the output head, whatever the architecture names them
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    seed: int = 0

    @classmethod
    def of(cls, tuning: TuningSettings, *, base_model: str, parts: list[str], output: str = "",
           continue_from: str | None = None, **overrides) -> TrainConfig:
        """A run's config with the hyperparameters of the tuning settings (``overrides`` win)."""
        hyperparameters = dict(
            sequence_length=tuning.sequence_length, micro_batch=tuning.micro_batch,
            gradient_accumulation=tuning.gradient_accumulation, steps=tuning.steps,
            learning_rate=tuning.learning_rate, lora_r=tuning.lora_r, lora_alpha=2 * tuning.lora_r,
            checkpoint_every=tuning.checkpoint_every,
        )
        return cls(base_model=base_model, parts=parts, output=output, continue_from=continue_from,
                   **{**hyperparameters, **overrides})


def load_blocks(config: TrainConfig, tokenizer) -> tuple[list[Block], int]:
    """Text chunks and chat examples packed into full sequences, and how many examples were longer
    than a sequence and cut to it."""
    documents, chats = [], []
    for path in config.parts:
        for row in pq.read_table(path, columns=["kind", "token_ids", "messages"]).to_pylist():
            if row["kind"] == "chat":
                chats.append(json.loads(row["messages"]))
            else:
                documents.append(row["token_ids"])
    examples, cut = pack_examples((chat_example(tokenizer, messages) for messages in chats), config.sequence_length,
                                  tokenizer.pad_token_id)
    return pack(documents, config.sequence_length, tokenizer.eos_token_id) + examples, cut


def main(config: TrainConfig) -> dict:
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    processes = Processes.start("cuda" if cuda else "cpu")  # this process alone, or one of torchrun's
    device = processes.device

    # 1. the model: base weights frozen, a LoRA adapter on top (new, or the champion's to continue)
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    base = AutoModelForCausalLM.from_pretrained(config.base_model, dtype=dtype).to(device)
    if config.continue_from:
        model = PeftModel.from_pretrained(base, config.continue_from, is_trainable=True)
    else:
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=config.target_modules, task_type="CAUSAL_LM")
        model = get_peft_model(base, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    forward = processes.wrap(model)

    # 2. the data: a fixed order of blocks, seeded, the same for a resumed run
    blocks, cut = load_blocks(config, tokenizer)
    if not blocks:
        raise SystemExit("the snapshot's train split has no tokens")
    if cut:
        print(f"{cut} chat example(s) longer than {config.sequence_length} tokens were cut to it "
              "(raise AFINA_TUNING_SEQUENCE_LENGTH to keep them whole)", file=sys.stderr)
    order = random.Random(config.seed).sample(range(len(blocks)), len(blocks))

    # 3. optimizer and schedule: AdamW, linear warm-up then cosine
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))

    # 4. resume from the last checkpoint, if a previous run of this output got that far
    step, losses = _resume(output, model, optimizer, schedule, truncate_log=processes.lead)

    # 5. the loop: gradient accumulation over micro-batches, one optimizer step each time
    model.train()
    started, tokens_seen = time.perf_counter(), 0
    progress = tqdm(total=config.steps, initial=step, desc="train", unit="step", file=sys.stderr,
                    disable=not processes.lead)
    while step < config.steps:
        step_loss = 0.0
        for micro in range(config.gradient_accumulation):
            first = processes.first_block(step * config.gradient_accumulation + micro, config.micro_batch)
            picked = [blocks[order[(first + i) % len(blocks)]] for i in range(config.micro_batch)]
            input_ids = torch.tensor([block.ids for block in picked], device=device)
            labels = torch.tensor([block.labels for block in picked], device=device)
            positions = torch.tensor([block.positions for block in picked], device=device)
            with processes.accumulating(forward, last=micro == config.gradient_accumulation - 1):
                # restarting positions, no attention mask and no cache: attention stays in each document
                loss = forward(input_ids=input_ids, labels=labels, position_ids=positions,
                               use_cache=False).loss / config.gradient_accumulation
                loss = processes.weigh(loss, labels)
                loss.backward()
            step_loss += loss.item()
            tokens_seen += int((labels != IGNORE).sum())
        step_loss = processes.mean(step_loss)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        losses.append(step_loss)
        progress.update(1)
        progress.set_postfix(loss=f"{step_loss:.3f}")
        if processes.lead:
            with (output / "loss.jsonl").open("a") as log:
                log.write(json.dumps({"step": step, "loss": round(step_loss, 5), "lr": schedule.get_last_lr()[0]}) + "\n")
            if step % config.checkpoint_every == 0 or step == config.steps:
                _checkpoint(output, model, optimizer, schedule, step, losses)
    progress.close()

    # 6. the result: the adapter alone, as safetensors
    seconds = time.perf_counter() - started
    tokens_seen = round(processes.mean(float(tokens_seen)) * processes.world)  # every process's together
    processes.close()
    if not processes.lead:
        return {}
    model.save_pretrained(output / "adapter", safe_serialization=True)
    result = {
        "steps": step, "final_loss": losses[-1], "first_loss": losses[0], "trained_tokens_this_run": tokens_seen,
        "tokens_per_second": tokens_seen / seconds if seconds else 0.0, "seconds": seconds, "device": device,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else _peak_rss(), "examples_cut": cut,
    }
    (output / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress))


def _checkpoint(output: Path, model, optimizer, schedule, step: int, losses: list[float]) -> None:
    """Write the checkpoint beside the old one, then swap: a kill mid-write leaves the old one whole."""
    fresh, final = output / "checkpoint.tmp", output / "checkpoint"
    shutil.rmtree(fresh, ignore_errors=True)
    model.save_pretrained(fresh / "adapter", safe_serialization=True)
    # optimizer and RNG tensors as safetensors, the rest as JSON: no pickle, even for our own files
    state = optimizer.state_dict()
    tensors = {f"{index}.{name}": value for index, slots in state["state"].items() for name, value in slots.items()}
    save_file({**tensors, "rng": torch.get_rng_state()}, fresh / "trainer_state.safetensors")
    (fresh / "progress.json").write_text(json.dumps({
        "step": step, "losses": losses, "param_groups": state["param_groups"], "schedule": schedule.state_dict()}))
    shutil.rmtree(final, ignore_errors=True)
    fresh.rename(final)


def _resume(output: Path, model, optimizer, schedule, truncate_log: bool = True) -> tuple[int, list[float]]:
    checkpoint = output / "checkpoint"
    if not (checkpoint / "progress.json").exists():
        if truncate_log:
            (output / "loss.jsonl").unlink(missing_ok=True)
        return 0, []
    set_peft_model_state_dict(model, load_file(checkpoint / "adapter" / "adapter_model.safetensors"))
    progress = json.loads((checkpoint / "progress.json").read_text())
    tensors = load_file(checkpoint / "trainer_state.safetensors")
    slots: dict[int, dict] = defaultdict(dict)
    for key, value in tensors.items():
        if key != "rng":
            index, name = key.split(".", 1)
            slots[int(index)][name] = value
    optimizer.load_state_dict({"state": dict(slots), "param_groups": progress["param_groups"]})
    schedule.load_state_dict(progress["schedule"])
    torch.set_rng_state(tensors["rng"])
    if truncate_log:
        _truncate_loss_log(output / "loss.jsonl", progress["step"])
    return progress["step"], progress["losses"]


def _truncate_loss_log(path: Path, step: int) -> None:
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    print(json.dumps(main(TrainConfig.model_validate_json(Path(sys.argv[1]).read_text()))))
