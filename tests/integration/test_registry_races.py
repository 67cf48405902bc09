"""Writers racing on the registry in the real MinIO (#18 point 7): version numbers, cards, the
champion alias and the tuning lease are written conditionally, so a loser is told, never silently
overwritten. Each test uses names of its own, so the shared registry's champion is not touched."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from services import registry
from services.contracts import Bucket
from services.registry import ChampionMoved, ModelCard
from services.storage import WriteConflict, minio_client, read_object
from services.tuning import lease, lineage
from services.tuning.lease import LeaseHeld, TuningLease

pytestmark = pytest.mark.integration


@pytest.fixture
def s3(local_stack):
    return minio_client(local_stack)


def test_version_numbers_taken_at_once_are_all_different(s3):
    with ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(lambda _: registry.reserve_version(s3), range(8)))
    try:
        assert len(set(taken)) == 8 and registry.next_version(s3) == max(taken) + 1
    finally:
        for version in taken:
            s3.remove_object(Bucket.MODELS, f"versions/{version}/reserved")


def test_a_card_is_written_once(s3):
    version = registry.reserve_version(s3)
    card = ModelCard(version=version, kind="adapter", base_model="afina-tiny", base_version=0, status="rejected")
    try:
        registry.register_version(s3, card, b"{}")
        with pytest.raises(WriteConflict, match="already registered"):
            registry.register_version(s3, card.model_copy(update={"status": "promoted"}), b"{}")
        assert registry.read_card(s3, version).status == "rejected"
    finally:
        for obj in list(s3.list_objects(Bucket.MODELS, prefix=f"versions/{version}/", recursive=True)):
            s3.remove_object(Bucket.MODELS, obj.object_name)


def test_the_alias_moves_only_from_where_the_writer_read_it_and_keeps_its_history(s3):
    alias = f"race-{uuid.uuid4().hex[:8]}"
    try:
        registry.move_alias(s3, alias, 0, expected=None)
        with pytest.raises(ChampionMoved, match="not unset"):
            registry.move_alias(s3, alias, 7, expected=None)  # a second `base init`
        registry.move_alias(s3, alias, 1, expected=0)
        with pytest.raises(ChampionMoved, match="is v1, not v0"):
            registry.move_alias(s3, alias, 2, expected=0)  # a run that was measured against v0

        # eight writers that all read v1 at once: exactly one moves it, the others are told
        def move(version: int) -> bool:
            try:
                registry.move_alias(s3, alias, version, expected=1)
                return True
            except ChampionMoved:
                return False

        with ThreadPoolExecutor(8) as pool:
            won = list(pool.map(move, range(10, 18)))
        assert won.count(True) == 1
        record, _ = registry.read_alias(s3, alias)
        assert record.version == 10 + won.index(True) and record.previous == 1
        assert [move.version for move in record.history] == [0, 1, record.version]
        assert record.ever(0) and not record.ever(2)
    finally:
        s3.remove_object(Bucket.MODELS, registry.alias_key(alias))


def test_the_tuning_lease_is_held_by_one_renewed_and_given_back(s3, monkeypatch):
    key = f"leases/race-{uuid.uuid4().hex[:8]}.json"
    monkeypatch.setattr(lease, "RENEW_EVERY_S", 0.2)
    first = TuningLease.take(s3, "run one", ttl_s=2, key=key)
    try:
        with pytest.raises(LeaseHeld, match="run one"):
            TuningLease.take(s3, "run two", ttl_s=2, key=key)
        time.sleep(3)  # past the first TTL: the renewals kept it
        with pytest.raises(LeaseHeld, match="run one"):
            TuningLease.take(s3, "run two", ttl_s=2, key=key)
    finally:
        first.release()
    second = TuningLease.take(s3, "run two", ttl_s=60, key=key)  # given back: taken at once
    second._stop.set()  # noqa: SLF001 - a run that stalls: no more renewals
    second._renewer.join()  # noqa: SLF001
    try:
        stalled = second.record
        s3.remove_object(Bucket.MODELS, key)  # as if it had expired and another run had taken it
        third = TuningLease.take(s3, "run three", ttl_s=60, key=key)
        second._write(stalled.expires_at)  # noqa: SLF001 - the stalled run's late renewal
        assert second.lost and b"run three" in read_object(s3, Bucket.MODELS, key)
        third.release()
    finally:
        s3.remove_object(Bucket.MODELS, key)


def test_a_promotion_cut_short_is_finished_by_the_next_run_not_called_tried(s3, monkeypatch):
    """The card says "promoted" but the alias write never happened: the snapshot is not "already
    tried" forever; the next run is told to finish that promotion."""
    alias = f"race-{uuid.uuid4().hex[:8]}"
    read_alias = registry.read_alias  # the champion alias of this test alone
    monkeypatch.setattr(registry, "CHAMPION", alias)
    monkeypatch.setattr(registry, "read_alias", lambda client, name=alias: read_alias(client, name))
    version = registry.reserve_version(s3)
    snapshot = f"snap-{uuid.uuid4().hex[:8]}"
    try:
        registry.move_alias(s3, alias, 9999, expected=None)  # a champion apart from the card
        registry.register_version(s3, ModelCard(version=version, kind="adapter", base_model="afina-tiny",
                                                base_version=0, status="promoted", parent_version=9999,
                                                snapshot_id=snapshot), b"{}")
        assert lineage.unfinished_promotion(s3, snapshot, 9999) == version
        assert lineage.nothing_new(s3, snapshot, 9999) is None
        registry.promote(s3, version, expected=9999)
        assert lineage.unfinished_promotion(s3, snapshot, 9999) is None  # it was champion: done
        assert f"v{version} was already trained" in lineage.nothing_new(s3, snapshot, 9999)
    finally:
        s3.remove_object(Bucket.MODELS, registry.alias_key(alias))
        for obj in list(s3.list_objects(Bucket.MODELS, prefix=f"versions/{version}/", recursive=True)):
            s3.remove_object(Bucket.MODELS, obj.object_name)
