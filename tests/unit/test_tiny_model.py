"""afina-tiny is built here from nothing: a tokenizer with a chat template and a model that learns."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.tuning import tiny


def test_build_saves_a_loadable_model_that_learned(tmp_path):
    summary = tiny.build(tmp_path, tiny.TinyRecipe(steps=40))
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in tmp_path.iterdir()}
    assert not list(tmp_path.glob("*.bin"))  # safetensors only
    assert summary["final_loss"] < summary["first_loss"] * 0.7

    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "¿Cuántos días de vacaciones tengo?"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|user|>\n¿Cuántos días de vacaciones tengo?<|eos|>\n<|assistant|>\n"
    ids = tokenizer(chat, return_tensors="pt")["input_ids"]
    assert tokenizer.decode(ids[0]) == chat  # byte-level: nothing lost, accents included
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > ids.shape[1]
