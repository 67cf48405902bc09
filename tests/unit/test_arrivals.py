"""What counts as new master data for the tuning trigger, and when it is enough."""

from __future__ import annotations

from datetime import UTC, datetime

from services.datasets.snapshots import Snapshot, SnapshotPart
from services.registry import ModelCard
from services.tuning.arrivals import Arrived, due, last_trained, new_parts

SHA = "a" * 64
TOKENIZER = "v0:" + "b" * 12


def part(source: str, sha: str = SHA, tokens: int = 100) -> SnapshotPart:
    return SnapshotPart(key=f"parts/{source}.parquet", source_key=source, sha256=sha, tokens=tokens, chunks=1,
                        language="es", tokenizer=TOKENIZER, split="train")


def snapshot(*parts: SnapshotPart) -> Snapshot:
    return Snapshot(id="snap", created_at=datetime(2026, 1, 1, tzinfo=UTC), eval_percent=10, parts=list(parts),
                    train_tokens=sum(p.tokens for p in parts), eval_tokens=0, tokenizers=[TOKENIZER])


def card(version: int, parent: int | None = None, snapshot_id: str | None = None) -> ModelCard:
    return ModelCard(version=version, kind="base" if parent is None else "adapter", base_model="afina-tiny",
                     base_version=0, parent_version=parent, snapshot_id=snapshot_id,
                     status=None if parent is None else "rejected")


def test_new_and_changed_documents_count_and_unchanged_ones_do_not():
    trained = snapshot(part("a"), part("b"))
    current = [part("a"), part("b", sha="c" * 64, tokens=40), part("new", tokens=7)]
    assert [p.source_key for p in new_parts(current, trained)] == ["b", "new"]
    assert new_parts(current, None) == current  # a base model has seen nothing


def test_enough_is_either_threshold_and_zero_turns_one_off():
    arrived = Arrived(documents=5, tokens=900, since_version=2, since_snapshot="snap")
    assert due(arrived, documents=5, tokens=0) and due(arrived, documents=0, tokens=900)
    assert due(arrived, documents=50, tokens=800) and not due(arrived, documents=6, tokens=901)
    assert not due(arrived, documents=0, tokens=0)
    assert "5 new or changed master documents (900 tokens) since v2's snapshot snap" == arrived.reason()


def test_the_newest_candidate_against_the_champion_is_what_the_tuning_last_trained():
    cards = [card(0), card(1, parent=0, snapshot_id="s1"), card(2, parent=1, snapshot_id="s2"),
             card(3, parent=1, snapshot_id="s3")]
    assert last_trained(cards, champion=1).version == 3  # a later rejected candidate against v1
    assert last_trained(cards, champion=3).version == 3  # the champion itself when none came after
    assert last_trained(cards, champion=0).version == 1  # after a rollback to the base model
