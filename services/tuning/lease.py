"""One tuning run at a time: a lease in MinIO that `afina tune` and the served deployment both take.

    models/leases/tuning.json    `LeaseRecord`: who holds it, and until when

Prefect's deployment limit covers only the deployment's own runs; the CLI runs the flow in its
own process, so the lease lives where both look. It is taken by a conditional write (created
where there is none, or written over an expired one's ETag, so two takers never both win), kept
alive by a thread that renews it, and given back at the end by writing it expired. A run killed
outright leaves it to expire after TTL_S.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import UTC, datetime, timedelta

from minio import Minio
from pydantic import BaseModel

from services.contracts import Bucket
from services.storage import WriteConflict, put_if, read_object_etag

KEY = "leases/tuning.json"
TTL_S = 120.0  # a run killed outright blocks the next for at most this long
RENEW_EVERY_S = TTL_S / 4


class LeaseRecord(BaseModel):
    holder: str
    taken_at: datetime
    expires_at: datetime


class LeaseHeld(Exception):
    """Another tuning run holds the lease."""


def holder_name(run: str | None = None) -> str:
    return f"{run or 'afina tune'} on {socket.gethostname()} (pid {os.getpid()})"


class TuningLease:
    """The lease while held: `lost` turns true if a renewal found it taken over (the run stalled past TTL)."""

    def __init__(self, client: Minio, key: str, record: LeaseRecord, etag: str, ttl_s: float) -> None:
        self.client, self.key, self.record, self.etag, self.ttl_s = client, key, record, etag, ttl_s
        self.lost = False
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="tuning-lease", daemon=True)

    @classmethod
    def take(cls, client: Minio, holder: str, ttl_s: float = TTL_S, key: str = KEY) -> TuningLease:
        """The lease, or LeaseHeld naming who has it and until when."""
        found = read_object_etag(client, Bucket.MODELS, key)
        now = datetime.now(UTC)
        if found is not None:
            current = LeaseRecord.model_validate_json(found[0])
            if current.expires_at > now:
                raise LeaseHeld(f"another tuning run holds the lease: {current.holder}, since "
                                f"{current.taken_at:%H:%M:%S} UTC (it expires unless renewed at "
                                f"{current.expires_at:%H:%M:%S})")
        record = LeaseRecord(holder=holder, taken_at=now, expires_at=now + timedelta(seconds=ttl_s))
        try:
            etag = put_if(client, Bucket.MODELS, key, record.model_dump_json().encode(),
                          etag=None if found is None else found[1])
        except WriteConflict as exc:
            raise LeaseHeld("another tuning run holds the lease (it took it at the same moment)") from exc
        lease = cls(client, key, record, etag, ttl_s)
        lease._renewer.start()
        return lease

    def _renew(self) -> None:
        while not self._stop.wait(min(RENEW_EVERY_S, self.ttl_s / 4)):
            self._write(datetime.now(UTC) + timedelta(seconds=self.ttl_s))
            if self.lost:
                return

    def _write(self, expires_at: datetime) -> None:
        record = self.record.model_copy(update={"expires_at": expires_at})
        try:
            self.etag = put_if(self.client, Bucket.MODELS, self.key, record.model_dump_json().encode(), etag=self.etag)
            self.record = record
        except WriteConflict:
            self.lost = True
        except Exception:  # noqa: BLE001 - MinIO away for a moment: the next renewal tries again
            pass

    def release(self) -> None:
        self._stop.set()
        self._renewer.join()
        if not self.lost:
            self._write(datetime.now(UTC))  # expired now: the next run takes it at once

    def __enter__(self) -> TuningLease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
