"""docker-compose.yml checked by a real Docker Compose (`docker compose config`); no engine needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER_CONFIG = ROOT / ".afina" / "tools" / "docker"  # `make compose` puts the plugin here


def compose(*args: str, file: Path = ROOT / "docker-compose.yml") -> subprocess.CompletedProcess:
    docker = shutil.which("docker")
    plugin = DOCKER_CONFIG / "cli-plugins" / "docker-compose"
    if docker is None or not plugin.exists():
        pytest.fail("docker CLI or the compose plugin is missing: run `make compose` (make test does)")
    return subprocess.run(
        [docker, "compose", "-f", str(file), *args],
        env={**os.environ, "DOCKER_CONFIG": str(DOCKER_CONFIG)},
        capture_output=True, text=True, cwd=ROOT,
    )


def test_compose_file_is_valid_and_complete():
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    services = config["services"]
    assert {"kafka", "minio", "prefect", "afina-init", "afina-base", "connector", "normalizer", "indexer",
            "inference", "tuning-flow", "tuning-trigger"} <= set(services)
    assert services["normalizer"]["deploy"]["replicas"] == 2
    assert [services[name]["command"] for name in ("connector", "normalizer", "indexer", "inference",
                                                    "tuning-flow", "tuning-trigger")] == [
        ["connector"], ["normalizer"], ["indexer"], ["serve"], ["flows", "serve"], ["trigger"]]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["minio"]["image"].startswith("minio/minio:")
    assert services["prefect"]["image"].startswith("prefecthq/prefect:3")
    for name in ("kafka", "minio", "prefect"):
        assert services[name]["healthcheck"]["test"], f"{name} has no health check"
        assert services[name]["volumes"], f"{name} keeps no volume"
    assert services["afina-init"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (ROOT / "deploy" / "Dockerfile").exists()
    assert services["minio"]["environment"]["MINIO_NOTIFY_KAFKA_TOPIC_AFINA"] == "afina.inbox.notifications"
    assert services["afina-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["afina-init"]["environment"]["AFINA_S3_ENDPOINT"] == "minio:9000"


def test_compose_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  kafka:\n    image: apache/kafka:4.3.1\n    healthcheck: {retries: many}\n")
    result = compose("config", file=broken)
    assert result.returncode != 0
    assert "retries" in result.stderr
