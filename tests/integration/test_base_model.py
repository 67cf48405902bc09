"""`afina base init` on the real MinIO: afina-tiny becomes version 0, the first champion."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from tokenizers import Tokenizer

from services import registry
from services.contracts import Bucket
from services.storage import minio_client
from tests.integration.harness import AFINA

pytestmark = pytest.mark.integration


def test_base_init_registers_the_champion_once(local_stack):
    env = {**os.environ, "AFINA_STATE_DIR": str(local_stack.state_dir)}
    first = subprocess.run([AFINA, "base", "init"], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert ("registered afina-tiny as version 0, the champion" in first.stdout
            or "already has a champion: version 0" in first.stdout)

    s3 = minio_client(local_stack)
    assert registry.alias_version(s3) == 0
    card = registry.read_card(s3, 0)
    assert card.base_model == "afina-tiny" and card.kind == "base"
    files = {o.object_name.removeprefix(registry.model_prefix(0))
             for o in s3.list_objects(Bucket.MODELS, prefix=registry.model_prefix(0), recursive=True)}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    tokenizer, name = registry.load_tokenizer(s3, 0)
    assert isinstance(tokenizer, Tokenizer) and name.startswith("v0:")
    assert json.loads(s3.get_object(Bucket.MODELS, registry.alias_key("champion")).read())["version"] == 0

    again = subprocess.run([AFINA, "base", "init"], env=env, capture_output=True, text=True, timeout=600)
    assert "already has a champion: version 0" in again.stdout
