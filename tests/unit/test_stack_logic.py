"""The local stack's pure parts, without starting any server."""

from __future__ import annotations

import base64

import pytest

from control.localstack.kafka import cluster_id
from control.localstack.process import ephemeral_ports, free_port
from control.localstack.servers import sibling_env
from services.settings import Settings


def test_kafka_cluster_ids_are_valid_and_never_look_like_an_option():
    """Kafka's storage tool reads an id starting with '-' as an option: one random id in 64 did."""
    ids = [cluster_id() for _ in range(2000)]  # an unguarded generator starts one with '-' ~31 times
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_sibling_stack_refuses_server_ports_in_the_ephemeral_range(tmp_path):
    """CI once lost a run to a sibling MinIO port that a client's outgoing connection held."""
    low = ephemeral_ports()[0]
    settings = Settings(state_dir=tmp_path / "first")
    env = sibling_env(settings, tmp_path / "second", port_offset=1000)
    assert env["AFINA_S3_ENDPOINT"] == f"127.0.0.1:{settings.s3_port + 1000}"
    with pytest.raises(ValueError, match="ephemeral range"):
        sibling_env(settings, tmp_path / "third", port_offset=low - settings.prefect_port)


def test_free_ports_lie_below_the_ephemeral_range():
    """A free port handed to a service is bound minutes later, by `afina up`: in the ephemeral range
    an outgoing connection may take it first (CI lost a test stack's inference service to that)."""
    low = ephemeral_ports()[0]
    ports = {free_port() for _ in range(50)}
    assert all(low - 2000 <= port < low for port in ports), sorted(ports)
    assert len(ports) > 1  # drawn at random, not the same port for every service


def test_free_port_never_hands_out_a_port_twice():
    """A stack's services get their ports together and bind them later: two services given the same
    port would leave one of them failing to start."""
    ports = [free_port() for _ in range(200)]  # (old code: about ten repeats in 200)
    assert len(set(ports)) == len(ports)
