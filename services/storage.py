"""The MinIO/S3 client every service uses, built from the shared settings."""

from __future__ import annotations

from minio import Minio

from services.contracts import Settings


def minio_client(settings: Settings) -> Minio:
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
    )
