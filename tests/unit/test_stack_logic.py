"""The local stack's pure parts, without starting any server."""

from __future__ import annotations

import base64

from control.localstack.kafka import cluster_id


def test_kafka_cluster_ids_are_valid_and_never_look_like_an_option():
    """Kafka's storage tool reads an id starting with '-' as an option: one random id in 64 did."""
    ids = [cluster_id() for _ in range(2000)]  # an unguarded generator starts one with '-' ~31 times
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
