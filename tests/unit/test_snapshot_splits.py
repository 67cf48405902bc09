"""Train/eval sides of documents: by key, sticky once in eval, never an empty eval side."""

from __future__ import annotations

import hashlib

from services.datasets.snapshots import assign_splits


def keys(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


def test_sides_follow_the_key_and_eval_is_sticky():
    found = keys(200)
    sides = assign_splits(found, 10, set())
    share = sum(side == "eval" for side in sides.values()) / len(found)
    assert 0.04 < share < 0.2
    assert assign_splits(found, 10, set()) == sides  # deterministic
    train_key = next(k for k, side in sides.items() if side == "train")
    again = assign_splits(found, 10, {train_key})
    assert again[train_key] == "eval"  # once evaluated on, never trained on
    assert all(again[k] == "eval" for k, side in sides.items() if side == "eval")


def test_a_small_dataset_still_gets_one_eval_document():
    few = [k for k in keys(100) if int(k[:8], 16) % 100 >= 10][:3]
    sides = assign_splits(few, 10, set())
    assert sorted(sides.values()) == ["eval", "train", "train"]
    assert assign_splits(few[:1], 10, set()) == {few[0]: "train"}
