"""MinIO bucket notifications (MinIO's event JSON on Kafka), reduced to the object keys they name."""

from __future__ import annotations

from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Object(_Lenient):
    key: str


class _Bucket(_Lenient):
    name: str


class _S3(_Lenient):
    bucket: _Bucket
    object: _Object


class _Record(_Lenient):
    event_name: str = Field(alias="eventName")
    s3: _S3


class BucketNotification(_Lenient):
    EventName: str
    Records: list[_Record]


def keys_in(notification: bytes, bucket: str) -> list[str]:
    """Object keys of ``bucket`` that a notification says were created or removed.

    Keys in the records are URL-encoded as query strings (a space is '+'): decode them.
    Raises ValueError for a record that is not a MinIO notification.
    """
    try:
        parsed = BucketNotification.model_validate_json(notification)
    except ValidationError as exc:
        raise ValueError(f"not a MinIO bucket notification: {exc.errors()[0]['msg']}") from None
    return [unquote_plus(r.s3.object.key) for r in parsed.Records if r.s3.bucket.name == bucket]
