"""The local stack: real Kafka, MinIO and Prefect servers as processes on this machine, no Docker."""

from control.localstack.process import StackError
from control.localstack.servers import PartStatus, down, init, sibling_env, status, up

__all__ = ["StackError", "PartStatus", "up", "down", "status", "init", "sibling_env"]
