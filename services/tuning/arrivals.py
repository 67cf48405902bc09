"""How much master data has arrived since the tuning last trained, and whether that calls for a
run. The tuning trigger (services/trigger) asks this on every normalized document and, when it is
due, emits the Prefect event on which the tuning deployment's trigger starts a run (flows/tuning.py).

"Since the tuning last trained" is since the snapshot of the newest version trained against the
current champion: the champion's own snapshot, or that of a later candidate the gate rejected (so
that, after a rejection, a run waits for enough data beyond what the rejected one saw, instead of
starting again on every new document). A base-model champion has seen no documents.
"""

from __future__ import annotations

from dataclasses import dataclass

from minio import Minio

from services import registry
from services.datasets import snapshots
from services.datasets.snapshots import Snapshot, SnapshotPart
from services.registry import ModelCard
from services.settings import Settings

EVENT = "afina.dataset.master-arrived"  # the Prefect event the tuning deployment is triggered by
RESOURCE = "afina.dataset.master"  # the Prefect resource it is about


@dataclass(frozen=True)
class Arrived:
    documents: int  # new or changed master documents
    tokens: int
    since_version: int  # the version whose snapshot they are measured against
    since_snapshot: str | None  # None: a base model, which has seen no documents

    def reason(self) -> str:
        seen = f"v{self.since_version}'s snapshot {self.since_snapshot}" if self.since_snapshot else \
            f"v{self.since_version} (a base model, trained on none)"
        return f"{self.documents} new or changed master documents ({self.tokens} tokens) since {seen}"


def new_parts(current: list[SnapshotPart], trained: Snapshot | None) -> list[SnapshotPart]:
    """The current parts that the trained snapshot did not hold (a document new, or changed)."""
    seen = {(part.source_key, part.sha256) for part in trained.parts} if trained else set()
    return [part for part in current if (part.source_key, part.sha256) not in seen]


def due(arrived: Arrived, documents: int, tokens: int) -> bool:
    """Whether enough arrived: at least ``documents`` documents or ``tokens`` tokens (0: that
    threshold is off)."""
    return bool((documents and arrived.documents >= documents) or (tokens and arrived.tokens >= tokens))


def last_trained(cards: list[ModelCard], champion: int) -> ModelCard | None:
    """The newest version trained against the champion, or the champion itself."""
    tried = [card for card in cards if card.parent_version == champion and card.version > champion]
    return max(tried, key=lambda card: card.version, default=None) or next(
        (card for card in cards if card.version == champion), None)


def measure(client: Minio, settings: Settings) -> Arrived | None:
    """What arrived since the tuning last trained; None while the registry has no champion."""
    champion = registry.alias_version(client)
    if champion is None:
        return None
    card = last_trained(registry.cards(client), champion)
    trained = snapshots.load(client, card.snapshot_id) if card is not None and card.snapshot_id else None
    current = snapshots.current_parts(client, settings.tuning.eval_percent, include_volatile=settings.tuning.train_volatile)
    arrived = new_parts(current, trained)
    return Arrived(len(arrived), sum(part.tokens for part in arrived),
                   card.version if card is not None else champion, trained.id if trained else None)
