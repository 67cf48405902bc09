"""The MinIO/S3 client every service uses, built from the shared settings."""

from __future__ import annotations

from minio import Minio
from minio.error import S3Error

from services.settings import Settings


def minio_client(settings: Settings) -> Minio:
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
    )


def _missing(exc: S3Error) -> bool:
    return exc.code in ("NoSuchKey", "NoSuchObject")


def stat_object(client: Minio, bucket: str, key: str):
    """The object's stat (size, ETag, metadata), or None when there is none."""
    try:
        return client.stat_object(bucket, key)
    except S3Error as exc:
        if _missing(exc):
            return None
        raise


def read_object(client: Minio, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when there is none."""
    try:
        response = client.get_object(bucket, key)
    except S3Error as exc:
        if _missing(exc):
            return None
        raise
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()
