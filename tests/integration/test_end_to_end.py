"""The main job end to end, on a system of its own (`afina up` on other ports), checking every hop:
drop → discovered → normalized part → snapshot → trained → gated → promoted → served over gRPC,
then a second round with more documents, served without restarting anything."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from control import localstack, supervisor
from control.demo import SAMPLES, ask, wait_normalized
from services import registry
from services.connector.inbox import source_id
from services.contracts import (
    DocumentDiscovered,
    DocumentNormalized,
    ModelPromoted,
    Topic,
)
from services.datasets import snapshots
from services.settings import Settings
from services.storage import minio_client
from tests.integration.harness import AFINA, EventLog, afina_up

pytestmark = pytest.mark.integration

# A smaller demo: one document of each format, in both languages.
FIRST_ROUND = ["manual_empleado_es.pdf", "expenses_policy_en.docx", "product_faq_en.html", "teletrabajo_es.md",
               "shop_opening_closing_checklist_en.txt", "customer_care_chats_en.jsonl", "returns_en.html",
               "politica_devoluciones_es.docx"]


@pytest.fixture(scope="module")
def afina_system(local_stack, tmp_path_factory):
    env = {**os.environ, **localstack.sibling_env(local_stack, tmp_path_factory.mktemp("e2e"), port_offset=14000),
           # 40 steps; and a learning rate that suits continuing v1's adapter in round two (the
           # tiny recipe's 1e-2 overshoots it: that candidate scored 1.2% worse than v1)
           "AFINA_TUNING_STEPS": "40", "AFINA_TUNING_LEARNING_RATE": "3e-3"}
    with afina_up(env) as settings:
        yield env, settings


def one_round(env: dict, settings: Settings, files: list[Path], expected_version: int) -> None:
    events = EventLog(settings, [Topic.DOCUMENTS_DISCOVERED, Topic.DOCUMENTS_NORMALIZED, Topic.MODELS_PROMOTED])
    try:
        dropped = subprocess.run([AFINA, "drop", *map(str, files)], env=env, capture_output=True, text=True)
        assert dropped.returncode == 0, dropped.stderr
        ids = {source_id(settings.inbox_name, f.name) for f in files}
        # drop → discovered → normalized (a part per document)
        events.wait_for(lambda: {e.source_id for e in events.events if isinstance(e, DocumentNormalized)} >= ids,
                        timeout_s=300, what="every document normalized")
        assert {e.source_id for e in events.events if isinstance(e, DocumentDiscovered)} >= ids
        assert wait_normalized(settings, files, echo=lambda line: None, timeout_s=30) == len(files)

        # snapshot → trained → gated → promoted
        tuned = subprocess.run([AFINA, "tune"], env=env, capture_output=True, text=True, timeout=900)
        assert tuned.returncode == 0, tuned.stdout + tuned.stderr
        assert tuned.stdout.startswith("promoted"), tuned.stdout
        events.wait_for(lambda: any(isinstance(e, ModelPromoted) for e in events.events), timeout_s=30,
                        what="ModelPromoted")
    finally:
        events.close()
    s3 = minio_client(settings)
    assert registry.alias_version(s3) == expected_version
    card = registry.read_card(s3, expected_version)
    frozen = snapshots.load(s3, card.snapshot_id)
    normalized = {e.source_id: e for e in events.events if isinstance(e, DocumentNormalized)}
    assert {normalized[i].part_key for i in ids} <= {p.key for p in frozen.parts}  # this round's parts are in it
    assert card.training.steps == 40 and card.gate.promote is True
    promoted = next(e for e in events.events if isinstance(e, ModelPromoted))
    assert promoted.version == expected_version and promoted.snapshot_id == frozen.id

    # served over gRPC: the inference service swapped to the new version by itself
    answer = ask(settings, "¿Cuántos días tiene un cliente para devolver un producto?", expected_version, timeout_s=90)
    assert answer.model_version == expected_version and answer.usage.completion_tokens > 0


def test_drop_to_served_model_twice_without_restarting_anything(afina_system):
    env, settings = afina_system
    services_before = {s.name: s.pid for s in supervisor.status(settings)}
    assert all(services_before.values())

    one_round(env, settings, [SAMPLES / "inbox" / name for name in FIRST_ROUND], expected_version=1)
    one_round(env, settings, sorted((SAMPLES / "more").iterdir()), expected_version=2)

    after = supervisor.status(settings)
    assert {s.name: s.pid for s in after} == services_before  # nothing restarted
    assert all(s.state == "running" and s.restarts == 0 for s in after), after
    shown = subprocess.run([AFINA, "status"], env=env, capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.count(" running ") == 3 + len(after), shown.stdout
    assert re.search(r"^index\s+[1-9]\d* passages", shown.stdout, re.MULTILINE), shown.stdout  # the indexer ran
    lineage = json.loads(subprocess.run([AFINA, "models", "show", "2"], env=env, capture_output=True,
                                        text=True).stdout)
    assert lineage["parent_version"] == 1 and lineage["continued_from"] == 1


def test_a_crashed_service_is_restarted(afina_system):
    env, settings = afina_system
    before = next(s for s in supervisor.status(settings) if s.name == "connector")
    os.kill(before.pid, 9)
    import time

    deadline = time.monotonic() + 60
    while True:
        now = next(s for s in supervisor.status(settings) if s.name == "connector")
        if now.pid not in (None, before.pid) and now.state == "running":
            break
        assert time.monotonic() < deadline, f"the connector was not restarted: {now}"
        time.sleep(0.5)
    assert now.restarts == before.restarts + 1
    log = Path(now.log).read_text()
    assert "exited with status -9; restarting" in log


def test_the_served_deployment_has_the_schedule_and_runs_what_is_asked(afina_system):
    import time

    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    env, settings = afina_system
    # Prefect's own client: it retries the 503 a busy server answers for a retryable database error
    # (a raw POST got that body and failed on its missing 'id')
    with SyncPrefectClient(settings.prefect_api_url) as prefect:
        deployments = prefect.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["scheduled"])))
        assert len(deployments) == 1
        deployment = deployments[0]
        assert [s.schedule.cron for s in deployment.schedules] == [settings.tuning.schedule]
        # a run asked for now (as the UI's "Quick run" does) is picked up by the served deployment
        run = prefect.create_flow_run_from_deployment(deployment.id)
        deadline = time.monotonic() + 300
        while (state := getattr(prefect.read_flow_run(run.id).state_type, "value", None)) != "COMPLETED":
            assert state not in ("FAILED", "CRASHED", "CANCELLED") and time.monotonic() < deadline, state
            time.sleep(1)
