"""Snapshots over the real MinIO: newest version per document, tombstones out, stable splits."""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.contracts import TokenizerId
from services.datasets import parts, snapshots
from services.storage import minio_client
from tests.integration.harness import AFINA, put_text_part

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOKENIZER = TokenizerId.of(0, b"a test tokenizer")


def write_part(client, source_id: str, when: datetime, sha: str, tokens: int) -> str:
    return put_text_part(client, source_id, when, ["hola " * tokens], [list(range(tokens))], TOKENIZER, sha=sha)


def test_freeze_takes_newest_versions_drops_tombstones_and_keeps_splits(local_stack):
    client = minio_client(local_stack)
    tag = uuid.uuid4().hex[:8]
    kept = write_part(client, f"snap{tag}:a.md", T0, "a" * 64, 10)
    write_part(client, f"snap{tag}:b.md", T0, "b" * 64, 20)
    newer = write_part(client, f"snap{tag}:b.md", T0 + timedelta(days=1), "c" * 64, 30)
    write_part(client, f"snap{tag}:gone.md", T0, "d" * 64, 40)
    gone_at = T0 + timedelta(days=2)
    parts.store(client, parts.tombstone_key(f"snap{tag}:gone.md", gone_at), parts.tombstone(f"snap{tag}:gone.md", gone_at))
    ours = {parts.source_key(f"snap{tag}:{name}") for name in ("a.md", "b.md", "gone.md")}

    first = snapshots.freeze(client, eval_percent=50)
    mine = {p.key: p for p in first.parts if p.source_key in ours}
    assert set(mine) == {kept, newer}  # b's newest version; gone.md is gone
    assert mine[newer].tokens == 30 and mine[newer].sha256 == "c" * 64
    assert first.train_tokens + first.eval_tokens == sum(p.tokens for p in first.parts)

    again = snapshots.freeze(client, eval_percent=50)
    assert again == first  # nothing changed: the same immutable snapshot

    added = write_part(client, f"snap{tag}:new.md", T0, "e" * 64, 5)
    second = snapshots.freeze(client, eval_percent=50)
    assert second.id != first.id and added in {p.key for p in second.parts}
    splits = {p.source_key: p.split for p in second.parts}
    assert all(splits[p.source_key] == p.split for p in first.parts)  # a document never changes side

    env = {**os.environ, "AFINA_STATE_DIR": str(local_stack.state_dir)}
    listed = subprocess.run([AFINA, "datasets", "list"], env=env, capture_output=True, text=True)
    assert first.id in listed.stdout and second.id in listed.stdout
    shown = subprocess.run([AFINA, "datasets", "show", second.id], env=env, capture_output=True, text=True)
    assert shown.returncode == 0 and added in shown.stdout and '"documents"' in shown.stdout
    missing = subprocess.run([AFINA, "datasets", "show", "nope"], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "no snapshot nope" in missing.stderr
