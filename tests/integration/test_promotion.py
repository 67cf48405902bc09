"""Promote and roll back on the real MinIO and Kafka: the alias moves, ModelPromoted says so."""

from __future__ import annotations

import os
import subprocess

import pytest

from services import registry
from services.contracts import Bucket, ModelPromoted, Topic
from services.storage import minio_client
from tests.integration.harness import AFINA, EventLog, ensure_champion_tokenizer

pytestmark = pytest.mark.integration


def test_promote_and_rollback_move_the_alias_and_announce_it(local_stack):
    assert ensure_champion_tokenizer(local_stack) == 0
    s3 = minio_client(local_stack)
    candidate = max(registry.versions(s3)) + 1
    registry.register_version(s3, registry.ModelCard(version=candidate, kind="adapter", base_model="afina-tiny",
                                                     base_version=0, snapshot_id="snap-test",
                                                     metrics={"eval_perplexity": 9.5}),
                              registry.tokenizer_json(s3, 0))
    env = {**os.environ, "AFINA_STATE_DIR": str(local_stack.state_dir)}
    events = EventLog(local_stack, [Topic.MODELS_PROMOTED])
    try:
        promoted = subprocess.run([AFINA, "models", "promote", str(candidate)], env=env, capture_output=True, text=True)
        assert promoted.returncode == 0, promoted.stderr
        assert (registry.alias_version(s3), registry.previous_version(s3)) == (candidate, 0)
        listed = subprocess.run([AFINA, "models", "list"], env=env, capture_output=True, text=True).stdout
        assert f"v{candidate:<4} champion" in listed and "v0    previous" in listed

        back = subprocess.run([AFINA, "models", "rollback"], env=env, capture_output=True, text=True)
        assert back.returncode == 0, back.stderr
        assert (registry.alias_version(s3), registry.previous_version(s3)) == (0, candidate)
        events.wait_for(lambda: len(events.events) >= 2)
    finally:
        registry.move_alias(s3, registry.CHAMPION, 0)  # leave the base model as the champion for other tests
        for obj in list(s3.list_objects(Bucket.MODELS, prefix=f"versions/{candidate}/", recursive=True)):
            s3.remove_object(Bucket.MODELS, obj.object_name)
        events.close()
    first, second = events.events[:2]
    assert isinstance(first, ModelPromoted) and (first.version, first.previous_version) == (candidate, 0)
    assert first.snapshot_id == "snap-test" and first.metrics == {"eval_perplexity": 9.5}
    assert (second.version, second.previous_version) == (0, candidate)
    missing = subprocess.run([AFINA, "models", "promote", "999"], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "no model version 999" in missing.stderr
