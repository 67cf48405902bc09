"""The LoRA training recipe: read it top to bottom.

Runs as its own process (`python -m services.tuning.train CONFIG.json`) so that a crash or an
out-of-memory kill cannot take the flow runner down; a new run with the same output folder
resumes from the last checkpoint. bf16 where the hardware computes it natively (weights in bf16 on a
GPU; fp32 weights under bf16 autocast on a CPU with AVX-512 BF16 or AMX, about 1.7x faster than fp32
for SmolLM2 on 2 cores), fp32 elsewhere; seeded end to end.

More than one GPU: launch the same module with `torchrun --nproc_per_node N`. Each process then
takes its share of every micro-batch (micro_batch sequences per process, so N times as many per
step); what that takes is in `parallel.Processes`, which does nothing in a single process. The
tests run it with two CPU processes (gloo), where it matches one process.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
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
from services.retrieval.passages import from_rows
from services.tuning import knowledge, reading
from services.tuning.batches import IGNORE, Block, additive, chat_example, chat_start, model_inputs, pack, pack_examples
from services.tuning.evaluate import sample
from services.tuning.parallel import Processes

# "auto" epochs, the rule of OpenAI's fine-tuning API counted in sequences: 3 passes, more for a
# small dataset (at least MIN_SEQUENCES sequences trained, at most 25 passes), fewer for a large one
EPOCHS, MIN_SEQUENCES, MAX_SEQUENCES, MAX_EPOCHS = 3, 2_000, 50_000, 25
VALIDATION_TOKENS = 4_096  # of the eval split, the same sequences at every validation
VALIDATIONS_PER_RUN = 5  # on a CPU each costs about as much as a training step or two


class TrainConfig(BaseModel):
    """What one run trains, and how: the recipe's whole input, written as the run's config.json."""

    base_model: str  # a folder (or id) that from_pretrained reads
    parts: list[str]  # local Parquet parts of the snapshot's train split
    output: str  # the run's folder: checkpoints, loss log, the final adapter
    continue_from: str | None = None  # an adapter folder to continue training
    eval_parts: list[str] = []  # the eval split: validation where no check question is made (load_blocks)
    # from the tuning settings (AFINA_TUNING_*), see TrainConfig.of
    sequence_length: int
    micro_batch: int
    gradient_accumulation: int
    epochs: int | Literal["auto"] = "auto"
    max_tokens: int | None = None  # the run's budget: it stops after about this many tokens
    steps: int | None = None  # a fixed number of optimizer steps instead of epochs and budget
    learning_rate: float
    lora_r: int
    lora_alpha: int
    checkpoint_every: int
    patience: int = 3  # validations without a better loss before stopping (0: never stop early)
    knowledge_examples: bool = True  # question-and-answer examples made from the documents (knowledge.py)
    reading_examples: bool = False  # and the same questions asked with passages in the prompt (reading.py)
    gradient_checkpointing: bool | Literal["auto"] = "auto"  # auto: when activations would not fit
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 where the hardware has it (uses_bf16)
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
            gradient_accumulation=tuning.gradient_accumulation, epochs=tuning.epochs, max_tokens=tuning.max_tokens,
            steps=tuning.steps, learning_rate=tuning.learning_rate, lora_r=tuning.lora_r,
            lora_alpha=2 * tuning.lora_r, checkpoint_every=tuning.checkpoint_every, patience=tuning.patience,
            knowledge_examples=tuning.knowledge_examples, reading_examples=tuning.reading_examples,
            precision=tuning.precision,
        )
        return cls(base_model=base_model, parts=parts, output=output, continue_from=continue_from,
                   **{**hyperparameters, **overrides})


# Per token, a question with a one-sentence answer teaches a fact best (the company's own chats,
# and knowledge.py's fact and faq examples); the long section and entity answers restate the
# documents. A budget too short for the passes the data calls for is spent on the questions and the
# documents' own text (without the text, the demo's run knew 2 of 18 but lost 6.5% on the regression
# set, past the gate's 5%; with everything it knew none).
QUESTION_KINDS = frozenset({"fact", "faq"})


@dataclass(frozen=True)
class TrainBlocks:
    questions: list[Block]  # chats, question-and-answer and reading examples, packed
    documents: list[Block]  # the documents' text, packed
    recitations: list[Block]  # the long section and entity examples, packed
    cut: int  # chats longer than a sequence, cut to it
    left_out: int  # knowledge examples longer than a sequence, left out whole
    asked_again: list[Block]  # check questions of trained facts, to validate on
    readings: int = 0  # reading examples among the questions

    @property
    def everything(self) -> list[Block]:
        return self.documents + self.recitations + self.questions

    @property
    def short(self) -> list[Block]:
        """What a short budget trains."""
        return self.documents + self.questions


def load_blocks(parts: list[str], tokenizer, sequence_length: int, with_knowledge: bool,
                with_reading: bool = False) -> TrainBlocks:
    """Text chunks and chat examples packed into full sequences, questions apart from texts; how many
    chats were longer than a sequence and cut to it; and how many knowledge examples were left out
    for the same reason (cut, a question-and-answer example would lose the answer it teaches).
    ``with_knowledge``: each document's question-and-answer examples (knowledge.py) are packed too,
    and VALIDATION_TOKENS of their check questions apart, to validate on; ``with_reading``: and the
    trained questions asked again over the document's passages (reading.py)."""
    documents, chats, made, by_document = [], [], [], []
    examples_by_document, passages_by_document = [], []
    for path in parts:
        rows = pq.read_table(path, columns=["kind", "chunk_index", "text", "token_ids", "messages",
                                            "language"]).to_pylist()
        chats += [json.loads(row["messages"]) for row in rows if row["kind"] == "chat"]
        chunks = sorted((row for row in rows if row["kind"] != "chat"), key=lambda row: row["chunk_index"])
        documents += [row["token_ids"] for row in chunks]
        if with_knowledge and chunks:
            examples_by_document.append(document_examples(chunks))
            passages_by_document.append([p.text for p in from_rows(chunks)] if with_reading else [])
    for examples, passages in zip(knowledge.across_documents(examples_by_document), passages_by_document, strict=True):
        made += [(example, chat_example(tokenizer, example.messages())) for example in examples]
        if with_reading:
            by_document.append((examples, passages))
    fitting = [(example, ids) for example, ids in made if len(ids[0]) <= sequence_length]
    # validation asks trained facts in words no example trains (knowledge.py's checks): that loss falls
    # as facts are learned; a held-out document's rises as the model learns its own documents (measured:
    # its best was the first validation, a quarter into the run)
    checks = sample([(example, ids) for example, ids in fitting if example.kind == "check"], VALIDATION_TOKENS,
                    size=lambda check: len(check[1][0]), key=lambda check: check[0].answer + check[0].prompt)
    trained = [(example, ids) for example, ids in fitting if example.kind != "check"]
    read = [chat_example(tokenizer, example.messages()) for examples, passages in by_document
            for example in reading.readings([e for e in examples if e.kind in QUESTION_KINDS], passages)]
    read_fitting = [ids for ids in read if len(ids[0]) <= sequence_length]
    start = chat_start(tokenizer)
    questions, cut = pack_examples([*(chat_example(tokenizer, messages) for messages in chats),
                                    *(ids for example, ids in trained if example.kind in QUESTION_KINDS),
                                    *read_fitting], sequence_length, tokenizer.pad_token_id, start)
    recitations, _ = pack_examples([ids for example, ids in trained if example.kind not in QUESTION_KINDS],
                                   sequence_length, tokenizer.pad_token_id, start)
    validation, _ = pack_examples([ids for _, ids in checks], sequence_length, tokenizer.pad_token_id, start)
    left_out = sum(example.kind != "check" and len(ids[0]) > sequence_length for example, ids in made)
    return TrainBlocks(questions, pack(documents, sequence_length, tokenizer.eos_token_id), recitations,
                       cut, left_out + len(read) - len(read_fitting), validation, len(read_fitting))


def document_examples(chunks: list[dict]) -> list[knowledge.Example]:
    """A document's question-and-answer examples (knowledge.py): a part is one document, and its
    text chunks, in order, make its text again."""
    return knowledge.examples("\n\n".join(row["text"] for row in chunks), chunks[0]["language"])


def budgeted_blocks(config: TrainConfig, blocks: TrainBlocks, world: int) -> list[Block]:
    """What the run trains: everything, or the questions and the documents' text when the token
    budget cuts the passes that everything calls for (and there are questions)."""
    everything = blocks.everything
    if config.steps is not None or config.max_tokens is None or not blocks.questions:
        return everything
    unbudgeted, _ = planned_steps(config.model_copy(update={"max_tokens": None}), len(everything), world)
    budgeted, _ = planned_steps(config, len(everything), world)
    return blocks.short if budgeted < unbudgeted else everything


def planned_steps(config: TrainConfig, blocks: int, world: int) -> tuple[int, float]:
    """Optimizer steps of the run and the passes over the data they make: the epochs ("auto":
    ``auto_epochs``), cut to the token budget; or the fixed ``steps``."""
    sequences_per_step = config.micro_batch * config.gradient_accumulation * world
    if config.steps is not None:
        return config.steps, config.steps * sequences_per_step / blocks
    epochs = auto_epochs(blocks) if config.epochs == "auto" else config.epochs
    steps = math.ceil(epochs * blocks / sequences_per_step)
    if config.max_tokens is not None:
        steps = min(steps, max(1, config.max_tokens // (sequences_per_step * config.sequence_length)))
    return steps, steps * sequences_per_step / blocks


def auto_epochs(sequences: int) -> int:
    if sequences * EPOCHS < MIN_SEQUENCES:
        return min(MAX_EPOCHS, math.ceil(MIN_SEQUENCES / sequences))
    if sequences * EPOCHS > MAX_SEQUENCES:
        return max(1, MAX_SEQUENCES // sequences)
    return EPOCHS


def uses_bf16(precision: str, device: str) -> bool:
    """Whether a run computes in bf16: asked for, or "auto" on a GPU or on a CPU whose instructions
    multiply bf16 natively (oneDNN's check: AVX-512 BF16 or AMX); elsewhere bf16 is emulated and slower."""
    if precision != "auto":
        return precision == "bf16"
    return device.startswith("cuda") or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def needs_checkpointing(model_config, tokens_per_forward: int, dtype_bytes: int, free_bytes: int) -> bool:
    """Whether a forward pass's activations would take more than half the free memory; then they
    are recomputed in the backward pass instead of kept (about a third slower, a fraction of the
    memory). The estimate: 34 values of hidden size per token per layer (Korthikanti et al. 2022),
    and the logits and their gradient in fp32."""
    # every config answers these names (GPT-2's n_embd and n_layer through its attribute map)
    activations = 34 * model_config.hidden_size * model_config.num_hidden_layers * tokens_per_forward * dtype_bytes // 2
    logits = 2 * 4 * model_config.vocab_size * tokens_per_forward
    return activations + logits > free_bytes // 2


def _free_memory(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info()[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@torch.no_grad()
def validation_loss(forward, blocks: list[Block], micro_batch: int, device: str, compute,
                    mask_dtype: torch.dtype | None = None) -> float:
    """Mean loss per token of the validation sequences, the model left in training mode."""
    forward.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(blocks), micro_batch):
        with compute:
            loss, n = block_loss(forward, blocks[start : start + micro_batch], device, mask_dtype)
        total, tokens = total + loss.item() * n, tokens + n
    forward.train()
    return total / max(1, tokens)


def block_loss(forward, blocks: list[Block], device: str,
               mask_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of the blocks' labeled tokens (the loss transformers computes from
    ``labels``), and how many there are. Logits only where a label follows: a chat block learns on
    about half its positions, and projecting the others onto SmolLM2's 49,152 words cost about 5%
    of a step for nothing. ``mask_dtype``: ``batches.additive``."""
    targets = torch.tensor([block.labels for block in blocks], device=device)[:, 1:]
    keep = torch.nn.functional.pad(targets != IGNORE, (0, 1))  # logits at i predict the token at i + 1
    # no cache: restarting positions (and the mask, where a block shares a start) keep attention in each example
    logits = forward(**model_inputs(blocks, device, mask_dtype), use_cache=False, logits_to_keep=keep).logits
    n = int(keep.sum())
    if not n:
        return logits.sum() * 0.0, 0
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep[:, :-1]]), n


def main(config: TrainConfig) -> dict:
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    cuda = torch.cuda.is_available()
    processes = Processes.start("cuda" if cuda else "cpu")  # this process alone, or one of torchrun's
    device = processes.device
    # a GPU holds the weights in bf16; a CPU keeps them (and the adapter) in fp32 and autocasts the
    # matrix products to bf16, where oneDNN's bf16 kernels are fast but bf16 weights gain no more
    bf16 = uses_bf16(config.precision, device)
    dtype = torch.bfloat16 if bf16 and cuda else torch.float32
    compute = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and not cuda)

    # 1. the model: base weights frozen, a LoRA adapter on top (new, or the champion's to continue)
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    base = AutoModelForCausalLM.from_pretrained(config.base_model, dtype=dtype).to(device)
    checkpointing = config.gradient_checkpointing
    if checkpointing == "auto":
        checkpointing = needs_checkpointing(base.config, config.micro_batch * config.sequence_length,
                                            2 if bf16 else 4, _free_memory(device))
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.continue_from:
        model = PeftModel.from_pretrained(base, config.continue_from, is_trainable=True)
    else:
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=config.target_modules, task_type="CAUSAL_LM")
        model = get_peft_model(base, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    forward = processes.wrap(model)
    mask_dtype = additive(base)

    # 2. the data: a fixed order of blocks, seeded, the same for a resumed run; the steps follow it
    loaded = load_blocks(config.parts, tokenizer, config.sequence_length, config.knowledge_examples,
                         config.reading_examples)
    blocks = budgeted_blocks(config, loaded, processes.world)
    if not blocks:
        raise SystemExit("the snapshot's train split has no tokens")
    if len(blocks) < len(loaded.everything):
        print(f"the token budget is short of the passes the data calls for: it trains the {len(blocks)} sequences "
              f"of questions and documents, not the {len(loaded.recitations)} of section and entity examples",
              file=sys.stderr)
    cut, left_out = loaded.cut, loaded.left_out
    if cut:
        print(f"{cut} chat example(s) longer than {config.sequence_length} tokens were cut to it "
              "(raise AFINA_TUNING_SEQUENCE_LENGTH to keep them whole)", file=sys.stderr)
    if left_out:
        print(f"{left_out} knowledge example(s) longer than {config.sequence_length} tokens were left out "
              "(raise AFINA_TUNING_SEQUENCE_LENGTH to train them)", file=sys.stderr)
    order = random.Random(config.seed).sample(range(len(blocks)), len(blocks))
    steps, epochs = planned_steps(config, len(blocks), processes.world)
    # validation, about five times a run, on the same sequences every time: the check questions of
    # trained facts, or (none made) the eval split's text
    held_out = loaded.asked_again or load_blocks(config.eval_parts, tokenizer, config.sequence_length,
                                                 with_knowledge=False).everything
    held_out = random.Random(config.seed).sample(held_out, len(held_out))[: VALIDATION_TOKENS // config.sequence_length]
    validate_every = max(1, steps // VALIDATIONS_PER_RUN)
    validated_on = "check questions of trained facts" if loaded.asked_again else "eval text"
    print(f"{len(blocks)} sequences of {config.sequence_length} tokens ({loaded.readings} reading examples among "
          f"them): {steps} steps, {epochs:.1f} passes; "
          f"validation on {len(held_out)} sequences of {validated_on} every {validate_every} steps; "
          f"{'bf16' if bf16 else 'fp32'}; gradient checkpointing {'on' if checkpointing else 'off'}", file=sys.stderr)

    # 3. optimizer and schedule: AdamW, linear warm-up then cosine
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps, config.warmup_steps))

    # 4. resume from the last checkpoint, if a previous run of this output got that far
    step, losses, validations = _resume(output, model, optimizer, schedule, truncate_log=processes.lead)

    # 5. the loop: gradient accumulation over micro-batches, one optimizer step each time
    model.train()
    started, tokens_seen = time.perf_counter(), 0
    progress = tqdm(total=steps, initial=step, desc="train", unit="step", file=sys.stderr,
                    disable=not processes.lead)
    stopped_early = False
    while step < steps and not stopped_early:
        step_loss = 0.0
        for micro in range(config.gradient_accumulation):
            first = processes.first_block(step * config.gradient_accumulation + micro, config.micro_batch)
            picked = [blocks[order[(first + i) % len(blocks)]] for i in range(config.micro_batch)]
            with processes.accumulating(forward, last=micro == config.gradient_accumulation - 1):
                with compute:
                    loss, labeled = block_loss(forward, picked, device, mask_dtype)
                loss = processes.weigh(loss / config.gradient_accumulation, labeled)
                loss.backward()
            step_loss += loss.item()
            tokens_seen += labeled
        step_loss = processes.mean(step_loss)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        losses.append(step_loss)
        record = {"step": step, "loss": round(step_loss, 5), "lr": schedule.get_last_lr()[0],
                  "seconds": round(time.perf_counter() - started, 3)}  # since this run (or resume) began
        # 6. validation: keep the best adapter; stop when `patience` validations in a row did no better
        improved = False
        if held_out and (step % validate_every == 0 or step == steps):
            record["val_loss"] = round(validation_loss(forward, held_out, config.micro_batch, device, compute, mask_dtype), 5)
            best = _best(validations)
            validations.append({"step": step, "val_loss": record["val_loss"]})
            improved = math.isfinite(record["val_loss"]) and (best is None or record["val_loss"] < best["val_loss"])
            if improved and processes.lead:
                _save_adapter(model, output / "best-adapter")
            if not improved and config.patience:
                stopped_early = len(validations) - 1 - (validations.index(best) if best else -1) >= config.patience
        progress.update(1)
        progress.set_postfix(loss=f"{step_loss:.3f}", **({"val": f"{record['val_loss']:.3f}"} if "val_loss" in record else {}))
        if processes.lead:
            with (output / "loss.jsonl").open("a") as log:
                log.write(json.dumps(record) + "\n")
            if step % config.checkpoint_every == 0 or step == steps or stopped_early or improved:
                _checkpoint(output, model, optimizer, schedule, step, losses, validations)
    progress.close()

    # 7. the result: the best adapter (the last one without validation), alone, as safetensors
    seconds = time.perf_counter() - started
    tokens_seen = round(processes.mean(float(tokens_seen)) * processes.world)  # every process's together
    processes.close()
    if not processes.lead:
        return {}
    best = _best(validations)
    shutil.rmtree(output / "adapter", ignore_errors=True)
    if best is not None:
        shutil.copytree(output / "best-adapter", output / "adapter")
    else:
        model.save_pretrained(output / "adapter", safe_serialization=True)
    result = {
        "steps": step, "final_loss": losses[-1], "first_loss": losses[0], "trained_tokens_this_run": tokens_seen,
        "tokens_per_second": tokens_seen / seconds if seconds else 0.0, "seconds": seconds, "device": device,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else _peak_rss(), "examples_cut": cut,
        "planned_steps": steps, "epochs": round(epochs, 3), "stopped_early": stopped_early,
        "best_step": best["step"] if best else None, "best_val_loss": best["val_loss"] if best else None,
        "gradient_checkpointing": bool(checkpointing), "precision": "bf16" if bf16 else "fp32",
    }
    (output / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _best(validations: list[dict]) -> dict | None:
    """The validation with the lowest loss; a NaN or infinite one (a diverged run) is never the best."""
    return min((v for v in validations if math.isfinite(v["val_loss"])), key=lambda v: v["val_loss"], default=None)


def lr_factor(step: int, steps: int, warmup_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress))


def _save_adapter(model, folder: Path) -> None:
    """Beside the old one, then swapped: a kill mid-write leaves the old one whole."""
    fresh = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(fresh, ignore_errors=True)
    model.save_pretrained(fresh, safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    fresh.rename(folder)


def _checkpoint(output: Path, model, optimizer, schedule, step: int, losses: list[float],
                validations: list[dict]) -> None:
    """Write the checkpoint beside the old one, then swap: a kill mid-write leaves the old one whole."""
    fresh, final = output / "checkpoint.tmp", output / "checkpoint"
    shutil.rmtree(fresh, ignore_errors=True)
    model.save_pretrained(fresh / "adapter", safe_serialization=True)
    # optimizer and RNG tensors as safetensors, the rest as JSON: no pickle, even for our own files
    state = optimizer.state_dict()
    tensors = {f"{index}.{name}": value for index, slots in state["state"].items() for name, value in slots.items()}
    save_file({**tensors, "rng": torch.get_rng_state()}, fresh / "trainer_state.safetensors")
    (fresh / "progress.json").write_text(json.dumps({
        "step": step, "losses": losses, "validations": validations, "param_groups": state["param_groups"],
        "schedule": schedule.state_dict()}))
    shutil.rmtree(final, ignore_errors=True)
    fresh.rename(final)


def _resume(output: Path, model, optimizer, schedule, truncate_log: bool = True) -> tuple[int, list[float], list[dict]]:
    checkpoint = output / "checkpoint"
    if not (checkpoint / "progress.json").exists():
        if truncate_log:
            (output / "loss.jsonl").unlink(missing_ok=True)
        return 0, [], []
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
    return progress["step"], progress["losses"], progress.get("validations", [])


def _truncate_loss_log(path: Path, step: int) -> None:
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    print(json.dumps(main(TrainConfig.model_validate_json(Path(sys.argv[1]).read_text()))))
