"""afina-tiny: the built-in base model, made on this machine because no model can be downloaded.

A byte-level BPE tokenizer with a chat template and a small Llama-architecture causal LM,
briefly pretrained on CPU on the bundled sample text, so that fine-tuning has something to
adapt. Read top to bottom: tokenizer, model, the pretraining loop, saving.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

NAME = "afina-tiny"
SPECIAL = {"pad": "<|pad|>", "bos": "<|bos|>", "eos": "<|eos|>", "unk": "<|unk|>"}
ROLES = ["<|system|>", "<|user|>", "<|assistant|>"]
# Each message ends with eos; the assistant's turn starts with its role token (for generation).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|eos|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class TinyRecipe:
    vocab_size: int = 2048
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    context: int = 512
    sequence: int = 128  # tokens per pretraining sequence
    batch: int = 16
    steps: int = 300
    learning_rate: float = 3e-3
    seed: int = 0


def sample_text() -> str:
    return resources.files("services.tuning").joinpath("sample_text.txt").read_text(encoding="utf-8")


def build_tokenizer(text: str, recipe: TinyRecipe) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL["unk"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        special_tokens=[*SPECIAL.values(), *ROLES],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(text.splitlines(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=SPECIAL["bos"], eos_token=SPECIAL["eos"], pad_token=SPECIAL["pad"], unk_token=SPECIAL["unk"],
        additional_special_tokens=ROLES, chat_template=CHAT_TEMPLATE, model_max_length=recipe.context,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, recipe: TinyRecipe) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.hidden_size * 8 // 3,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.heads,
        max_position_embeddings=recipe.context,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(recipe.seed)
    return LlamaForCausalLM(config)


def pretrain(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, text: str, recipe: TinyRecipe) -> list[float]:
    """Next-token prediction on random windows of the sample text; returns the loss per step."""
    ids = tokenizer(text.replace("\n", tokenizer.eos_token + "\n"))["input_ids"]
    stream = torch.tensor(ids, dtype=torch.long)
    rng = random.Random(recipe.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / recipe.steps))
    )
    model.train()
    losses = []
    for _ in range(recipe.steps):
        starts = [rng.randrange(0, max(1, len(stream) - recipe.sequence - 1)) for _ in range(recipe.batch)]
        batch = torch.stack([stream[s : s + recipe.sequence] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def build(folder: Path, recipe: TinyRecipe = TinyRecipe()) -> dict:
    """Build afina-tiny into ``folder`` (safetensors + tokenizer files); returns a summary."""
    started = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    text = sample_text()
    tokenizer = build_tokenizer(text, recipe)
    model = build_model(tokenizer, recipe)
    losses = pretrain(model, tokenizer, text, recipe)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "pretrain_steps": recipe.steps,
        "first_loss": round(losses[0], 4),
        "final_loss": round(sum(losses[-10:]) / 10, 4),
        "seconds": round(time.perf_counter() - started, 1),
    }
