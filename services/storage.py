"""The MinIO/S3 client every service uses, built from the shared settings."""

from __future__ import annotations

from minio import Minio
from minio.error import S3Error

from services.contracts import Settings


def minio_client(settings: Settings) -> Minio:
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
    )


def create_if_absent(client: Minio, bucket: str, key: str, data: bytes) -> bool:
    """Write an object only if no object has that key (S3 conditional write); False when one has.

    Atomic on the server, so replicas racing for the same key agree on one winner.
    minio-py has no public argument for If-None-Match, hence its request method.
    """
    try:
        client._execute("PUT", bucket, key, body=data, headers={"If-None-Match": "*"})
    except S3Error as exc:
        if exc.code == "PreconditionFailed":
            return False
        raise
    return True


def read_object(client: Minio, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when there is none."""
    try:
        response = client.get_object(bucket, key)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject"):
            return None
        raise
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()
