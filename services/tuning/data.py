"""A tuning run's data: the snapshot's train and eval parts and the frozen regression set, as
local Parquet files, each tokenized with the champion's base tokenizer.

Parts another tokenizer made (a snapshot taken across a change of base model) cannot be trained
or scored on this base: they are left out and listed, so the run's report says so.
"""

from __future__ import annotations

from pathlib import Path

from minio import Minio
from pydantic import BaseModel

from services.contracts import TokenizerId
from services.datasets import snapshots
from services.datasets.snapshots import SnapshotPart


class Chosen(BaseModel):
    """The snapshot's parts this base model can use, and the keys of those it cannot."""

    train: list[SnapshotPart]
    eval: list[SnapshotPart]
    excluded: list[str]


class RunData(BaseModel):
    train: list[Path]
    eval: list[Path]
    regression: list[Path]


def choose(snapshot: snapshots.Snapshot, tokenizer: TokenizerId) -> Chosen:
    train, other_train = snapshots.split_parts(snapshot, "train", tokenizer)
    held_out, other_eval = snapshots.split_parts(snapshot, "eval", tokenizer)
    return Chosen(train=train, eval=held_out, excluded=[part.key for part in other_train + other_eval])


def download(client: Minio, snapshot: snapshots.Snapshot, chosen: Chosen, tokenizer: TokenizerId,
             folder: Path) -> RunData:
    """The chosen parts and the regression set as local files. The regression set is frozen on the
    first snapshot that gets this far, so a snapshot that cannot be trained on never freezes it."""
    if not chosen.train or not chosen.eval:
        raise ValueError(f"snapshot {snapshot.id} has {len(chosen.train)} train and {len(chosen.eval)} eval parts "
                         "usable: both are needed (drop more documents)")
    regression, _ = snapshots.split_parts(snapshots.regression_set(client, snapshot), "eval", tokenizer)
    return RunData(train=snapshots.download(client, chosen.train, folder),
                   eval=snapshots.download(client, chosen.eval, folder),
                   regression=snapshots.download(client, regression, folder))
