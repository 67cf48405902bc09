"""The MinIO/S3 client every service uses, built from the shared settings."""

from __future__ import annotations

import io

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
    found = read_object_etag(client, bucket, key)
    return None if found is None else found[0]


def read_object_etag(client: Minio, bucket: str, key: str) -> tuple[bytes, str] | None:
    """The object's bytes and the ETag they had (for a later `put_if`), or None when there is none."""
    try:
        response = client.get_object(bucket, key)
    except S3Error as exc:
        if _missing(exc):
            return None
        raise
    try:
        return response.read(), response.headers.get("etag", "").strip('"')
    finally:
        response.close()
        response.release_conn()


def put_bytes(client: Minio, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)


class WriteConflict(Exception):
    """A conditional write lost: the object was created or changed by another writer since it was read."""


def put_if(client: Minio, bucket: str, key: str, data: bytes, *, etag: str | None) -> str:
    """Write the object only if it is still as read: absent (etag None) or at that ETag; its new ETag.

    MinIO does the check in the PUT itself (S3 conditional writes), so two writers racing can never
    both win. minio-py's put_object sends unknown headers as user metadata, hence the lower call.
    """
    headers = {"If-None-Match": "*"} if etag is None else {"If-Match": f'"{etag}"'}
    try:
        response = client._execute("PUT", bucket, key, body=data, headers=headers)  # noqa: SLF001
    except S3Error as exc:
        if exc.code in ("PreconditionFailed", "NoSuchKey"):  # NoSuchKey: If-Match on an object since deleted
            raise WriteConflict(f"{bucket}/{key} was changed by another writer") from exc
        raise
    return response.headers.get("etag", "").strip('"')
