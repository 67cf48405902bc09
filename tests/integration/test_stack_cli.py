"""`afina stack up | status | down` as a person runs them, on a second stack with its own folder and ports."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from control import localstack
from tests.integration.harness import AFINA, settings_from_env

pytestmark = pytest.mark.integration


def afina(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AFINA, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


@pytest.fixture
def other_stack_env(tmp_path, local_stack):
    env = localstack.sibling_env(local_stack, tmp_path / "state", port_offset=10000)
    yield env
    afina(env, "stack", "down")


def test_up_twice_status_down(other_stack_env):
    first = afina(other_stack_env, "stack", "up")
    assert first.returncode == 0, first.stderr
    lines = {line.split()[0]: line.split()[1] for line in first.stdout.splitlines() if line[:1].isalpha()}
    assert {k: lines[k] for k in ("kafka", "minio", "prefect")} == {
        "kafka": "started", "minio": "started", "prefect": "started"}
    other = settings_from_env(other_stack_env)
    assert f"kafka://127.0.0.1:{other.kafka_port}" in first.stdout
    assert f"http://127.0.0.1:{other.prefect_port}" in first.stdout

    second = afina(other_stack_env, "stack", "up")
    assert second.returncode == 0, second.stderr
    assert [line.split()[1] for line in second.stdout.splitlines() if line[:1].isalpha()
            and line.split()[0] in ("kafka", "minio", "prefect")] == ["reused"] * 3

    status = afina(other_stack_env, "stack", "status")
    assert status.returncode == 0
    assert status.stdout.count(" running ") == 3

    down = afina(other_stack_env, "stack", "down")
    assert down.stdout.strip() == "stopped: minio, prefect, kafka"
    for port in (other.kafka_port, other.s3_port, other.prefect_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after down"

    after = afina(other_stack_env, "stack", "status")
    assert after.returncode == 1
    assert after.stdout.count(" stopped ") == 3
    assert afina(other_stack_env, "stack", "down").stdout.strip() == "nothing to stop"


def test_busy_port_gives_a_clear_message(other_stack_env):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {**other_stack_env, "AFINA_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
        result = afina(env, "stack", "up")
    assert result.returncode == 1
    assert f"kafka: port {port} on 127.0.0.1 is already in use by another program" in result.stderr
    assert "Traceback" not in result.stderr


def test_down_leaves_servers_it_did_not_start_alone(other_stack_env, local_stack):
    # The session's stack runs from another state folder: this `down` must not touch it.
    assert afina(other_stack_env, "stack", "down").stdout.strip() == "nothing to stop"
    status = afina({"AFINA_STATE_DIR": str(local_stack.state_dir.resolve())}, "stack", "status")
    assert status.returncode == 0, status.stdout


def test_missing_java_or_go_is_named(other_stack_env, tmp_path):
    bare = tmp_path / "bare-bin"  # a PATH with nothing on it
    bare.mkdir()
    no_java = afina({**other_stack_env, "PATH": str(bare)}, "stack", "up")
    assert no_java.returncode == 1
    assert "'java' was not found on PATH; it is needed to run Kafka (Java 17 or newer)" in no_java.stderr

    # A tools folder without MinIO: it must be built, and there is no Go.
    tools = Path(other_stack_env["AFINA_STATE_DIR"]) / "tools"
    real_tools = tools.resolve()
    tools.unlink()
    tools.mkdir()
    for kafka_dir in real_tools.glob("kafka-*"):
        (tools / kafka_dir.name).symlink_to(kafka_dir)
    java_only = tmp_path / "java-only-bin"
    java_only.mkdir()
    (java_only / "java").symlink_to(subprocess.run(["which", "java"], capture_output=True, text=True).stdout.strip())
    no_go = afina({**other_stack_env, "PATH": str(java_only)}, "stack", "up")
    assert no_go.returncode == 1
    assert "'go' was not found on PATH; it is needed to build MinIO from source" in no_go.stderr
    assert afina(other_stack_env, "stack", "status").stdout.count(" stopped ") == 3  # nothing half-started


def test_failed_up_leaves_nothing_running(other_stack_env):
    # Prefect starts first; Kafka then refuses this configuration: the started Prefect must be stopped.
    other = settings_from_env(other_stack_env)
    env = {**other_stack_env, "AFINA_KAFKA_CONTROLLER_PORT": str(other.kafka_port)}
    result = afina(env, "stack", "up")
    assert result.returncode == 1
    assert "must differ from Kafka's port" in result.stderr
    assert "starting prefect" in result.stdout
    assert afina(env, "stack", "status").stdout.count(" stopped ") == 3
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", other.prefect_port)) != 0, "prefect was left running"
