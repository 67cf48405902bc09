"""The shared contracts, without any server: settings from the environment, events on the wire."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from services.contracts import (
    EVENT_TOPICS,
    Bucket,
    ChangeKind,
    DocumentDiscovered,
    DocumentRejected,
    InvalidEvent,
    ModelPromoted,
    RejectReason,
    Topic,
    parse_event,
)
from services.settings import Settings

SHA = "0123456789abcdef" * 4


def test_defaults_point_at_the_local_stack(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("AFINA_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert (s.kafka_bootstrap_servers, s.kafka_port, s.kafka_controller_port) == ("127.0.0.1:9092", 9092, 9093)
    assert (s.s3_endpoint, s.s3_port, s.s3_url) == ("127.0.0.1:9000", 9000, "http://127.0.0.1:9000")
    assert (s.prefect_api_url, s.prefect_port) == ("http://127.0.0.1:4200/api", 4200)
    assert s.state_dir == Path.cwd() / ".afina"  # made absolute: servers run in other folders


def test_environment_overrides_with_afina_prefix(monkeypatch):
    monkeypatch.setenv("AFINA_KAFKA_BOOTSTRAP_SERVERS", "k1:29092,k2:29092")
    monkeypatch.setenv("AFINA_S3_SECURE", "true")
    monkeypatch.setenv("AFINA_S3_ENDPOINT", "s3.example:443")
    s = Settings()
    assert s.kafka_port == 29092
    assert s.s3_url == "https://s3.example:443"


def test_each_part_reads_its_own_slice(monkeypatch):
    monkeypatch.setenv("AFINA_TUNING_STEPS", "7")
    monkeypatch.setenv("AFINA_TUNING_CONTINUE", "false")
    monkeypatch.setenv("AFINA_BASE_MODEL", "some/model")
    monkeypatch.setenv("AFINA_GATE_MAX_REGRESSION", "0.2")
    monkeypatch.setenv("AFINA_INFERENCE_ADDRESS", "127.0.0.1:6000")
    monkeypatch.setenv("AFINA_NORMALIZER_REDACT", "email, iban")
    s = Settings()
    assert (s.tuning.steps, s.tuning.continue_training, s.tuning.base_model) == (7, False, "some/model")
    assert (s.gate.max_regression, s.inference.port, s.normalizer.pii_kinds) == (0.2, 6000, ("email", "iban"))
    assert s.connector.workers == 8  # untouched slices keep their defaults


def test_contract_names():
    assert [str(t) for t in EVENT_TOPICS] == [
        "afina.documents.discovered", "afina.documents.normalized",
        "afina.documents.rejected", "afina.models.promoted",
    ]
    assert {str(b) for b in Bucket} == {"inbox", "raw", "datasets", "models", "index"}
    assert Topic.INBOX_NOTIFICATIONS not in EVENT_TOPICS  # MinIO's own JSON, not an afina event


def test_event_json_round_trip_keeps_types():
    event = DocumentDiscovered(source_id="folder:a/b c.pdf", kind=ChangeKind.UPDATED, sha256=SHA, size=10)
    wire = event.model_dump_json()
    assert json.loads(wire)["schema_version"] == 1
    back = parse_event(DocumentDiscovered, wire)
    assert back == event and back.kind is ChangeKind.UPDATED


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (b"not json", "DocumentDiscovered"),
        (b'{"source_id": "x", "kind": "created", "schema_version": 2}', "schema_version"),
        (b'{"source_id": "x", "kind": "moved"}', "kind"),
        (b'{"source_id": "x", "kind": "created", "sha256": "ABC"}', "sha256"),
        (b'{"source_id": "x", "kind": "created", "surprise": 1}', "surprise"),
        (b'{"kind": "created"}', "source_id"),
    ],
)
def test_invalid_records_name_what_is_wrong(record, expected):
    with pytest.raises(InvalidEvent) as err:
        parse_event(DocumentDiscovered, record)
    assert "not a valid DocumentDiscovered" in str(err.value)
    assert expected in str(err.value)


def test_events_are_immutable_and_checked():
    event = ModelPromoted(version=1, snapshot_id="s1", base_model="afina-tiny")
    with pytest.raises(Exception):
        event.version = 2
    with pytest.raises(Exception):
        ModelPromoted(version=-1, snapshot_id="s1", base_model="afina-tiny")
    with pytest.raises(Exception):
        DocumentRejected(source_id="x", reason=RejectReason.CORRUPT, message="", stage="normalizer")


def test_tokenizer_id_names_its_version_and_content():
    from services.contracts import TokenizerId

    one, other = TokenizerId.of(0, b'{"model": 1}'), TokenizerId.of(4, b'{"model": 1}')
    assert (one.version, other.version) == (0, 4) and one.content_hash == other.content_hash
    assert one != other and TokenizerId.of(0, b'{"model": 2}').content_hash != one.content_hash
    assert TokenizerId(str(one)) == one
    with pytest.raises(ValueError, match="not a tokenizer id"):
        TokenizerId("afina-tiny@0")


def test_a_model_card_round_trips_even_a_diverged_candidate():
    from services.registry import GateDecision, ModelCard, TrainingSummary

    card = ModelCard(version=2, kind="adapter", base_model="afina-tiny", base_version=0, status="rejected",
                     parent_version=1, metrics={"eval_perplexity": float("inf"), "eval_bits_per_byte": float("nan")},
                     gate=GateDecision(promote=False, reasons=["fails: domain eval perplexity"]),
                     training=TrainingSummary(steps=20, first_loss=9.1, final_loss=float("nan"), seconds=3.0,
                                              trained_tokens_this_run=5120, tokens_per_second=1706.7, device="cpu",
                                              peak_memory_bytes=1 << 30))
    again = ModelCard.model_validate_json(card.model_dump_json())
    assert again.metrics["eval_perplexity"] == float("inf") and math.isnan(again.metrics["eval_bits_per_byte"])
    assert math.isnan(again.training.final_loss) and again.training.steps == 20 and again.gate == card.gate
    with pytest.raises(ValueError):
        ModelCard(version=3, kind="lora", base_model="x", base_version=0)
