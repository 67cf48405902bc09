"""The AsyncAPI document of the Kafka topics: complete, from the contracts, and committed up to date."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services import asyncapi
from services.contracts import EVENT_TOPICS, TOPICS, Topic

COMMITTED = Path(__file__).resolve().parents[2] / "proto" / "asyncapi.yaml"


@pytest.fixture(scope="module")
def text() -> str:
    return asyncapi.document_yaml()


@pytest.fixture(scope="module")
def doc(text: str) -> dict:
    return yaml.safe_load(text)


def resolve(doc: dict, ref: str) -> dict:
    node = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def channels_of(doc: dict, topic: Topic) -> dict[str, dict]:
    return {name: channel for name, channel in doc["channels"].items() if channel["address"] == topic}


def test_every_topic_has_a_route_and_a_payload():
    assert set(asyncapi.ROUTES) == set(Topic), "a Topic has no entry in services.asyncapi.ROUTES"
    assert set(TOPICS) == set(Topic)
    for topic, route in asyncapi.ROUTES.items():
        assert route.sends or route.receives, f"{topic}: no afina part publishes or consumes it"
        assert (topic in EVENT_TOPICS) != (route.payload is not None), f"{topic}: one payload, from one table"


def test_the_document_is_asyncapi_3(doc: dict):
    assert doc["asyncapi"].startswith("3.")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["servers"] and doc["operations"]


def test_every_topic_is_a_channel_with_its_partitions_and_compaction(doc: dict):
    assert {channel["address"] for channel in doc["channels"].values()} == {str(t) for t in Topic}
    for topic in Topic:
        found = channels_of(doc, topic)
        route = asyncapi.ROUTES[topic]
        expected = {f"{topic}:send"} if route.sends else set()
        assert set(found) == expected | ({f"{topic}:receive"} if route.receives else set())
        for name, channel in found.items():
            kafka = channel["bindings"]["kafka"]
            assert kafka["topic"] == topic and kafka["partitions"] == TOPICS[topic].partitions
            compacted = kafka.get("topicConfiguration", {}).get("cleanup.policy") == ["compact"]
            assert compacted == TOPICS[topic].compacted, name
            assert doc["operations"][name]["action"] == name.rsplit(":", 1)[1]
            assert "Key:" in channel["description"]


def test_every_event_has_its_schema_with_its_fields(doc: dict):
    schemas = doc["components"]["schemas"]
    for topic, model in EVENT_TOPICS.items():
        schema = schemas[model.__name__]
        assert set(schema["properties"]) == set(model.model_fields), model.__name__
        for channel in channels_of(doc, topic).values():
            for message in channel["messages"].values():
                payload = resolve(doc, message["$ref"])["payload"]
                assert payload == {"$ref": f"#/components/schemas/{model.__name__}"}
                assert resolve(doc, message["$ref"])["bindings"]["kafka"]["key"]["type"] == "string"
    normalized = schemas["DocumentNormalized"]["properties"]
    assert normalized["schema_version"]["enum"] == [1, 2]
    assert normalized["stability"]["$ref"] == "#/components/schemas/Stability"
    assert schemas["Stability"]["enum"] == ["master", "volatile"]


def test_the_other_topics_records_are_described(doc: dict):
    schemas = doc["components"]["schemas"]
    index = schemas[f"{Topic.CONNECTOR_INDEX}:Record"]["anyOf"]
    assert {"$ref": "#/components/schemas/IndexEntry"} in index and {"$ref": "#/components/schemas/InboxClaim"} in index
    assert {"type": "null"} in index  # a tombstone
    assert "minhash" in schemas["Fingerprint"]["properties"]
    assert {"EventName", "Records"} <= set(schemas["BucketNotification"]["properties"])


def test_the_document_is_the_same_every_time(text: str, doc: dict):
    assert asyncapi.document_yaml() == text
    event = doc["components"]["schemas"]["DocumentDiscovered"]["properties"]
    assert "default" not in event["event_id"] and "default" not in event["occurred_at"]  # no generated values
    assert list(doc["channels"]) == sorted(doc["channels"])


def test_the_committed_document_is_up_to_date(text: str):
    assert COMMITTED.read_text() == text, "proto/asyncapi.yaml is out of date: run `afina docs`"
