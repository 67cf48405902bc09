"""Any causal LM architecture trains and serves: models built here from their configs (random
weights, nothing downloaded) of six families, each trained a few steps and served with its adapter."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PhiConfig,
    Qwen2Config,
)

from services.datasets.parts import to_parquet
from services.inference.engine import Engine
from services.inference.generation import Collected, Job
from services.inference.sampling import SamplingParams
from services.settings import TuningSettings
from services.tuning import tiny
from services.tuning.batches import additive, chat_example, chat_start, model_inputs, pack, pack_examples
from services.tuning.train import TrainConfig, main

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
             max_position_embeddings=256)
FAMILIES = {
    "llama": lambda vocab: LlamaConfig(vocab_size=vocab, **SMALL),
    "qwen2": lambda vocab: Qwen2Config(vocab_size=vocab, num_key_value_heads=2, **SMALL),
    "gemma": lambda vocab: GemmaConfig(vocab_size=vocab, num_key_value_heads=1, head_dim=16, **SMALL),
    "phi": lambda vocab: PhiConfig(vocab_size=vocab, **SMALL),
    "gpt_neox": lambda vocab: GPTNeoXConfig(vocab_size=vocab, **SMALL),
    "gpt2": lambda vocab: GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=256),
}


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    tiny.build_tokenizer(tiny.sample_text(), tiny.TinyRecipe()).save_pretrained(folder)
    return folder




@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_model_of_each_family_trains_a_lora_adapter_and_serves_it(family, tokenizer_folder, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    base = tmp_path / "base"
    config = FAMILIES[family](len(tokenizer))
    config.update({"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id})
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(base, safe_serialization=True)
    tokenizer.save_pretrained(base)

    # packing keeps attention inside each document in this architecture too
    first, second = tokenizer("Hola a todos.")["input_ids"], tokenizer("La garantía es de veinticinco años.")["input_ids"]
    (block,) = pack([first, second], length=len(first) + len(second) + 2, eos_id=tokenizer.eos_token_id)
    with torch.no_grad():
        packed = model(input_ids=torch.tensor([block.ids]), position_ids=torch.tensor([block.positions]),
                       use_cache=False).logits[0]
        alone = model(input_ids=torch.tensor([second]), use_cache=False).logits[0]
    assert torch.allclose(packed[len(first) + 1 : len(first) + 1 + len(second)], alone, atol=1e-4)
    # and two chat examples share their template's start, each seeing it and itself alone
    chats = [[{"role": "user", "content": question}, {"role": "assistant", "content": "Cinco años."}]
             for question in ("¿Cuántos años de garantía tienen las tiendas de campaña?", "¿Garantía?")]
    long, short = (chat_example(tokenizer, chat)[0] for chat in chats)
    start = chat_start(tokenizer)
    (block,), _ = pack_examples([(long, long), (short, short)], length=len(long) + len(short), pad_id=0, start=start)
    assert block.shared == len(start) > 0 and block.ids[len(long) : len(long) + len(short) - len(start)] == short[len(start):]
    with torch.no_grad():
        packed = model(**model_inputs([block], "cpu", additive(model)), use_cache=False).logits[0]
        alone = model(input_ids=torch.tensor([short]), use_cache=False).logits[0]
    assert torch.allclose(packed[len(long) : len(long) + len(short) - len(start)], alone[len(start):], atol=1e-4)

    now = datetime.now(UTC)
    rows = [{"source_id": "t:x", "sha256": "a" * 64, "chunk_index": i, "kind": "text", "text": line, "messages": None,
             "token_ids": (ids := tokenizer(line)["input_ids"]), "n_tokens": len(ids), "language": "es",
             "media_type": "text/plain", "tokenizer": "v0:000000000000", "discovered_at": now, "normalized_at": now}
            for i, line in enumerate(tiny.sample_text().splitlines()[:40])]
    rows += [{**rows[0], "chunk_index": 40 + i, "kind": "chat", "text": "", "messages": json.dumps(chat), "token_ids": [],
              "n_tokens": 0} for i, chat in enumerate(chats * 4)]  # their blocks share the start in training too
    part = tmp_path / "part.parquet"
    part.write_bytes(to_parquet(rows))
    run = tmp_path / "run"
    result = main(TrainConfig.of(TuningSettings(), base_model=str(base), parts=[str(part)], output=str(run),
                                 steps=3, micro_batch=2, gradient_accumulation=1, sequence_length=32))
    assert result["steps"] == 3 and result["trained_tokens_this_run"] > 0
    adapted = set(json.loads((run / "adapter" / "adapter_config.json").read_text())["target_modules"])
    assert len(adapted) >= 3, adapted  # attention and MLP layers, by this architecture's own names

    async def serve() -> list[Collected]:
        engine = Engine(str(base), 0, capacity=1, max_queue=4, max_batch=2, batch_wait_s=0, threads=1)
        await engine.start()
        try:
            await engine.add_adapter(1, run / "adapter")
            sinks = [Collected(), Collected()]
            prompts = [tokenizer("Hola")["input_ids"], tokenizer("La garantía de los paneles es de")["input_ids"]]
            jobs = [Job(ids, 5, SamplingParams(temperature=0), sink, ignore_eos=True) for ids, sink in zip(prompts, sinks)]
            await asyncio.to_thread(engine.generate, 1, jobs)  # two prompts of other lengths: left padding
            return sinks
        finally:
            await engine.close()

    sinks = asyncio.run(serve())
    assert all(sink.result is not None and sink.result.completion_tokens == 5 for sink in sinks)
