"""The tuning flow as a person runs it (`afina tune`), on a stack of its own: real Kafka, MinIO
and Prefect server, the tiny base model on CPU.

In order, on one registry: a better candidate is promoted with its lineage, artifacts and a
ModelPromoted event; nothing changed → skipped; a deliberately worse candidate is rejected and
kept; a failing step leaves the champion alone; a training process killed mid-run resumes from
its checkpoint; rollback gives the champion back.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from kafka import KafkaProducer
from transformers import PreTrainedTokenizerFast

from control import localstack
from services import registry
from services.contracts import DocumentNormalized, ModelPromoted, Topic
from services.storage import minio_client
from services.tuning import arrivals
from tests.integration.harness import AFINA, EventLog, afina_service, put_text_part, settings_from_env

pytestmark = pytest.mark.integration

PLACES = ["Bilbao", "Sevilla", "Valencia", "Zaragoza", "Granada", "Oviedo"]
ITEMS = ["la tienda de campaña Cumbre", "la mochila Sendero 40", "el saco Nevada", "la linterna Faro",
         "las botas Roca", "el hornillo Brasa"]
FACTS = [
    "El almacén de {place} envía {item} en dos días laborables.",
    "Los clientes de {place} pueden devolver {item} durante treinta días.",
    "La garantía de {item} cubre tres años en la tienda de {place}.",
    "El equipo de soporte de {place} responde sobre {item} de lunes a viernes.",
    "En {place} {item} se recoge en la tienda sin coste de envío.",
]


def company_document(rng: random.Random) -> str:
    """A short fictional company document: the domain the candidate has to learn."""
    return " ".join(rng.choice(FACTS).format(place=rng.choice(PLACES), item=rng.choice(ITEMS)) for _ in range(6))


@pytest.fixture(scope="module")
def tuning(local_stack, tmp_path_factory):
    """A stack of its own (a registry and datasets no other test writes to), with afina-tiny as v0."""
    state = tmp_path_factory.mktemp("tuning-stack")
    env = {**os.environ, **localstack.sibling_env(local_stack, state, port_offset=12000)}
    try:
        up = subprocess.run([AFINA, "stack", "up"], env=env, capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stderr
        base = subprocess.run([AFINA, "base", "init"], env=env, capture_output=True, text=True, timeout=600)
        assert base.returncode == 0, base.stderr
        yield Tuning(env)
    finally:
        subprocess.run([AFINA, "stack", "down"], env=env, capture_output=True, timeout=120)


class Tuning:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.settings = settings_from_env(env)
        self.s3 = minio_client(self.settings)
        folder = registry.fetch(self.s3, 0, self.settings.state_dir / "cache" / "models").base
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
        self.tokenizer_name = registry.load_tokenizer(self.s3, 0)[1]
        self.rng = random.Random(7)
        self.documents = 0

    def add_documents(self, count: int) -> None:
        when = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(minutes=self.documents)
        for _ in range(count):
            text = company_document(self.rng)
            put_text_part(self.s3, f"tuning:doc-{self.documents}.md", when, [text],
                          [self.tokenizer(text)["input_ids"]], self.tokenizer_name)
            self.documents += 1

    def tune(self, *args: str, **settings: str) -> subprocess.CompletedProcess:
        env = {**self.env, **{f"AFINA_{k.upper()}": v for k, v in settings.items()}}
        return subprocess.run([AFINA, "tune", *args], env=env, capture_output=True, text=True, timeout=900)

    def flow_runs(self) -> list[dict]:
        api = self.settings.prefect_api_url
        found = httpx.post(f"{api}/flow_runs/filter", json={"flows": {"name": {"any_": ["afina-tuning"]}},
                                                            "sort": "EXPECTED_START_TIME_DESC"}, timeout=10)
        found.raise_for_status()
        return found.json()

    def artifacts(self, flow_run_id: str) -> dict[str, dict]:
        found = httpx.post(f"{self.settings.prefect_api_url}/artifacts/filter",
                           json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}, timeout=10)
        found.raise_for_status()
        return {artifact["key"]: artifact for artifact in found.json()}


def test_a_better_candidate_is_promoted_with_lineage_artifacts_and_an_event(tuning):
    tuning.add_documents(40)
    events = EventLog(tuning.settings, [Topic.MODELS_PROMOTED])
    try:
        run = tuning.tune()
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.startswith("promoted"), run.stdout
        events.wait_for(lambda: len(events.events) >= 1, timeout_s=30, what="ModelPromoted")
    finally:
        events.close()
    assert registry.alias_version(tuning.s3) == 1 and registry.previous_version(tuning.s3) == 0
    event = events.events[0]
    assert isinstance(event, ModelPromoted) and (event.version, event.previous_version) == (1, 0)

    card = registry.read_card(tuning.s3, 1)
    assert card.status == "promoted" and card.kind == "adapter" and card.base_version == 0
    assert event.snapshot_id == card.snapshot_id and event.metrics["eval_perplexity"] == card.metrics["eval_perplexity"]
    # lineage: the snapshot (which names every document and hash), base, hyperparameters, code, timings
    manifest = json.loads(tuning.s3.get_object("datasets", f"snapshots/{card.snapshot_id}/manifest.json").read())
    assert len(manifest["parts"]) == 40 and all(len(p["sha256"]) == 64 for p in manifest["parts"])
    assert card.base_model == "afina-tiny" and card.hyperparameters["steps"] == tuning.settings.tuning.steps
    assert len(card.code_version.removesuffix("-dirty")) == 40
    assert card.training.tokens_per_second > 0 and card.training.peak_memory_bytes > 0
    assert set(card.timings_s) == {"snapshot", "train", "evaluate"}
    assert card.metrics["eval_perplexity"] < card.champion_metrics["eval_perplexity"]
    assert card.gate.promote is True and all(r.startswith("passes") for r in card.gate.reasons)
    stored = {o.object_name for o in tuning.s3.list_objects("models", prefix="versions/1/", recursive=True)}
    assert "versions/1/adapter/adapter_model.safetensors" in stored

    flow_run = next(r for r in tuning.flow_runs() if r["id"] == card.flow_run_id)
    assert flow_run["state_type"] == "COMPLETED"
    artifacts = tuning.artifacts(flow_run["id"])
    assert set(artifacts) == {"snapshot", "loss-curve", "eval", "gate"}
    assert artifacts["loss-curve"]["data"].startswith("data:image/png;base64,")
    eval_rows = json.loads(artifacts["eval"]["data"])
    assert {row["metric"] for row in eval_rows} >= {"eval_perplexity", "regression_perplexity"}
    assert "Promoted" in artifacts["gate"]["data"] and card.snapshot_id in artifacts["snapshot"]["data"]

    again = tuning.tune()
    assert again.returncode == 0 and again.stdout.startswith("skipped"), again.stdout + again.stderr
    assert "nothing changed" in again.stdout and registry.alias_version(tuning.s3) == 1


def test_a_worse_candidate_is_rejected_kept_and_the_champion_stays(tuning):
    tuning.add_documents(6)
    run = tuning.tune("--steps", "20", tuning_learning_rate="3.0", tuning_continue="false")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("rejected") and "fails: domain eval perplexity" in run.stdout, run.stdout
    assert registry.alias_version(tuning.s3) == 1
    card = registry.read_card(tuning.s3, 2)
    assert card.status == "rejected" and card.gate.promote is False and card.parent_version == 1
    assert card.continued_from is None and card.hyperparameters["learning_rate"] == 3.0
    listed = subprocess.run([AFINA, "models", "list"], env=tuning.env, capture_output=True, text=True).stdout
    assert "v2    rejected" in listed and "v1    champion" in listed

    same = tuning.tune()  # the same snapshot against the same champion: not tried twice
    assert same.stdout.startswith("skipped") and "already trained" in same.stdout, same.stdout


def test_a_failing_step_leaves_the_champion_untouched(tuning, tmp_path):
    tuning.add_documents(3)
    broken = tmp_path / "qa.jsonl"
    broken.write_text('{"prompt": "¿Cuántos días para devolver?"}\n')  # no "expected"
    versions = registry.versions(tuning.s3)
    run = tuning.tune(tuning_qa_file=str(broken))
    assert run.returncode != 0
    assert "qa.jsonl, line 1" in run.stdout + run.stderr
    assert registry.alias_version(tuning.s3) == 1 and registry.versions(tuning.s3) == versions
    assert tuning.flow_runs()[0]["state_type"] == "FAILED"


def test_a_training_process_killed_mid_run_resumes_from_its_checkpoint(tuning):
    tuning.add_documents(3)
    env = {**tuning.env, "AFINA_TUNING_STEPS": "40", "AFINA_TUNING_CHECKPOINT_EVERY": "10"}
    runs = Path(tuning.settings.state_dir) / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    flow = subprocess.Popen([AFINA, "tune"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            fresh = [run for run in runs.glob("*") if run not in before] if runs.exists() else []
            if fresh and (fresh[0] / "checkpoint" / "progress.json").exists() and (fresh[0] / "train.pid").exists():
                break
            assert time.monotonic() < deadline and flow.poll() is None, "no checkpoint appeared"
            time.sleep(0.2)
        run = fresh[0]
        os.kill(int((run / "train.pid").read_text()), signal.SIGKILL)
        output, _ = flow.communicate(timeout=600)
    finally:
        flow.kill()
    assert flow.returncode == 0, output
    steps = [json.loads(line)["step"] for line in (run / "loss.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))  # resumed: every step once, none repeated
    result = json.loads((run / "result.json").read_text())
    tokens_per_step = tuning.settings.tuning.micro_batch * tuning.settings.tuning.gradient_accumulation * 128
    assert result["steps"] == 40 and result["trained_tokens_this_run"] < 40 * tokens_per_step  # not from step 0
    assert "killed by signal 9" in output


def test_two_tuning_runs_at_once_take_turns_through_the_lease(tuning):
    """`afina tune` beside another run (the served deployment's, here a second CLI): one trains and
    registers, the other is skipped and says who holds the lease; no version is written twice."""
    tuning.add_documents(3)
    champion, versions = registry.alias_version(tuning.s3), registry.versions(tuning.s3)
    runs = [subprocess.Popen([AFINA, "tune"], env=tuning.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=900)[0] for run in runs]  # the outcome is on stdout, the logs on stderr
    assert [run.returncode for run in runs] == [0, 0], outputs
    skipped = [out for out in outputs if out.startswith("skipped")]
    assert len(skipped) == 1 and "another tuning run holds the lease" in skipped[0], outputs
    trained = next(out for out in outputs if out not in skipped)
    assert trained.startswith(("promoted", "rejected")), trained
    new = [v for v in registry.versions(tuning.s3) if v not in versions]
    assert len(new) == 1 and registry.read_card(tuning.s3, new[0]).parent_version == champion
    after = tuning.tune()  # the lease was given back: the next run is not refused
    assert "holds the lease" not in after.stdout, after.stdout


def test_rollback_gives_the_champion_back(tuning):
    champion = registry.alias_version(tuning.s3)
    events = EventLog(tuning.settings, [Topic.MODELS_PROMOTED])
    try:
        back = subprocess.run([AFINA, "models", "rollback"], env=tuning.env, capture_output=True, text=True)
        assert back.returncode == 0, back.stderr
        events.wait_for(lambda: len(events.events) >= 1, timeout_s=30, what="ModelPromoted")
    finally:
        events.close()
    previous = events.events[0].version
    assert registry.alias_version(tuning.s3) == previous != champion
    assert events.events[0].previous_version == champion


def test_enough_new_master_data_starts_one_run_through_the_prefect_trigger(tuning, tmp_path):
    """`afina trigger` beside the served deployment (`afina flows serve`): below the threshold no run
    starts; at it, the Prefect automation starts one run that says why, trains and registers; a
    document more on the new state starts none; the deployment's runs never overlap."""
    threshold = arrivals.measure(tuning.s3, tuning.settings).documents + 3
    env = {**tuning.env, "AFINA_TUNING_TRIGGER_DOCUMENTS": str(threshold), "AFINA_TUNING_TRIGGER_TOKENS": "0",
           "AFINA_TUNING_STEPS": "4"}
    champion, versions = registry.alias_version(tuning.s3), registry.versions(tuning.s3)
    producer = KafkaProducer(bootstrap_servers=tuning.settings.kafka_bootstrap_servers)

    def arrive(count: int) -> None:  # documents stored and announced, as the normalizer does
        tuning.add_documents(count)
        for n in range(tuning.documents - count, tuning.documents):
            event = DocumentNormalized(source_id=f"tuning:doc-{n}.md", sha256=None, part_key="-")
            producer.send(Topic.DOCUMENTS_NORMALIZED, event.model_dump_json().encode(), key=event.source_id.encode())
        producer.flush()

    def triggered() -> list[dict]:
        return [run for run in tuning.flow_runs() if (run.get("created_by") or {}).get("type") == "AUTOMATION"]

    try:
        with afina_service(["flows", "serve"], env, tmp_path / "flows.log", ready="is being served", timeout_s=120), \
                afina_service(["trigger"], env, tmp_path / "trigger.log", ready="tuning trigger ready"):
            time.sleep(5)  # the trigger's consumer joins its group; the server loads the new automation
            arrive(2)
            time.sleep(8)
            assert triggered() == [], "a run started below the threshold"
            arrive(1)
            deadline = time.monotonic() + 300
            while not [r for r in triggered() if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED")]:
                assert time.monotonic() < deadline, (tmp_path / "trigger.log").read_text()[-3000:]
                time.sleep(2)
            run = triggered()[0]
            assert run["state"]["type"] == "COMPLETED", run["state"]
            assert run["created_by"]["display_value"] == "enough new master data"
            assert run["parameters"]["why"].startswith(f"{threshold} new or changed master documents"), run["parameters"]
            new = [v for v in registry.versions(tuning.s3) if v not in versions]
            assert len(new) == 1 and registry.read_card(tuning.s3, new[0]).parent_version == champion
            arrive(1)  # measured against the new version's snapshot: 1 is below the threshold
            time.sleep(8)
            assert len(triggered()) == 1
    finally:
        producer.close()
    served = sorted((r for r in tuning.flow_runs() if r["deployment_id"] and r["start_time"] and r["end_time"]),
                    key=lambda r: r["start_time"])
    assert all(a["end_time"] <= b["start_time"] for a, b in zip(served, served[1:])), "two runs overlapped"
