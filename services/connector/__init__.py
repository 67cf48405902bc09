"""Connector: watched storage (an inbox folder, the MinIO inbox bucket) → raw bytes in MinIO + events on Kafka."""
