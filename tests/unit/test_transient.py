"""Which errors the tuning flow retries: a server away or an interrupted step, never bad data."""

from __future__ import annotations

import urllib3
from aiokafka.errors import KafkaConnectionError
from minio.error import S3Error

from services.lifecycle import Interrupted, is_transient
from services.tuning.launch import TrainingFailed


def s3_error(code: str) -> S3Error:
    return S3Error(None, code, "message", "resource", "request", "host")


def test_servers_away_and_interrupted_steps_are_transient():
    assert is_transient(ConnectionRefusedError())
    assert is_transient(urllib3.exceptions.MaxRetryError(None, "/", "refused"))
    assert is_transient(KafkaConnectionError())
    assert is_transient(s3_error("SlowDown"))
    assert is_transient(Interrupted("killed by signal 9"))


def test_bad_data_and_bugs_are_not():
    assert not is_transient(ValueError("qa.jsonl, line 1: expected ..."))
    assert not is_transient(TrainingFailed("exited with status 1"))
    assert not is_transient(s3_error("AccessDenied"))
    assert not is_transient(KeyError("version"))
