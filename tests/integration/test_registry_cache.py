"""The local cache of model versions against the real MinIO: a version is downloaded once, and a
registry made again from nothing (its numbers start over) is never served from the old one's files."""

from __future__ import annotations

import pytest

from services import registry
from services.contracts import Bucket
from services.storage import minio_client
from tests.integration.harness import register_adapter

pytestmark = pytest.mark.integration


def _adapter_bytes(local: registry.LocalVersion) -> bytes:
    return (local.adapter / "adapter_model.safetensors").read_bytes()


def test_a_version_number_taken_again_is_not_served_from_the_old_versions_cache(local_stack, tmp_path):
    s3 = minio_client(local_stack)
    version = register_adapter(local_stack, seed=1, status="rejected")
    old = registry.fetch(s3, version, tmp_path)
    assert registry.fetch(s3, version, tmp_path).adapter == old.adapter  # downloaded once
    old_weights = _adapter_bytes(old)

    # the registry made again: the version's objects gone, its number free, then taken by new weights
    assert registry.next_version(s3) == version + 1
    for obj in list(s3.list_objects(Bucket.MODELS, prefix=f"versions/{version}/", recursive=True)):
        s3.remove_object(Bucket.MODELS, obj.object_name)
    assert register_adapter(local_stack, seed=2, status="rejected") == version

    new = registry.fetch(s3, version, tmp_path)
    stored = s3.get_object(Bucket.MODELS, registry.adapter_prefix(version) + "adapter_model.safetensors").read()
    assert _adapter_bytes(new) == stored != old_weights
