"""The real MinIO: every contract bucket works, and the inbox bucket notifies Kafka."""

from __future__ import annotations

import io
import json
import time
import uuid
from urllib.parse import unquote_plus

import pytest
from kafka import KafkaConsumer, TopicPartition

from services.contracts import Bucket, Topic
from services.storage import minio_client

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("bucket", list(Bucket))
def test_put_get_list_in_each_bucket(local_stack, bucket):
    client = minio_client(local_stack)
    key = f"tests/{uuid.uuid4().hex}/hola señor.txt"
    body = f"contenido de prueba para {bucket}".encode()
    client.put_object(bucket, key, io.BytesIO(body), len(body), content_type="text/plain")
    try:
        assert client.get_object(bucket, key).read() == body
        listed = [o.object_name for o in client.list_objects(bucket, prefix=key.rsplit("/", 1)[0] + "/")]
        assert listed == [key]
    finally:
        client.remove_object(bucket, key)
    assert list(client.list_objects(bucket, prefix=key)) == []


def test_inbox_put_and_delete_notify_kafka(local_stack):
    consumer = KafkaConsumer(bootstrap_servers=local_stack.kafka_bootstrap_servers, enable_auto_commit=False)
    partitions = [TopicPartition(str(Topic.INBOX_NOTIFICATIONS), p)
                  for p in consumer.partitions_for_topic(str(Topic.INBOX_NOTIFICATIONS))]
    consumer.assign(partitions)
    consumer.seek_to_end()
    for tp in partitions:
        consumer.position(tp)  # resolve "end" now, before the upload

    client = minio_client(local_stack)
    key = f"tests/{uuid.uuid4().hex}/informe anual 2026 (1).pdf"
    client.put_object(Bucket.INBOX, key, io.BytesIO(b"%PDF-1.7 test"), 13)
    client.remove_object(Bucket.INBOX, key)

    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + 60
    try:
        while len(seen) < 2 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    event = json.loads(record.value)
                    object_key = unquote_plus(event["Records"][0]["s3"]["object"]["key"])
                    if object_key == key:
                        seen.append((event["EventName"], object_key))
    finally:
        consumer.close()

    # the key in Records[] is URL-encoded (spaces as "+"); unquote_plus restores it
    assert [name for name, _ in seen] == ["s3:ObjectCreated:Put", "s3:ObjectRemoved:Delete"]
