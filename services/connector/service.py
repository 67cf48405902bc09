"""The connector service: watches the inbox folder and the inbox bucket, stores each new
document version's bytes in MinIO ``raw/<sha256>`` (claim check) and publishes
``DocumentDiscovered``; deletions publish too, and what changed while it was down is
found at start-up against the durable index.

Order per document: bytes durable in ``raw`` → event on Kafka → index entry. A crash in
between repeats the event on restart (at-least-once; consumers are idempotent), never
loses it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from faststream.kafka import KafkaMessage
from minio.commonconfig import CopySource
from prometheus_client import Counter, Gauge, start_http_server
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from services import media
from services.connector import index
from services.connector.bucket import keys_in
from services.connector.digest import CHUNK, HashingReader, sha256_of
from services.connector.inbox import (
    Unreadable,
    claim_problem,
    folder_id,
    is_ignored,
    mark,
    open_document,
    relative,
    source_id,
    walk,
)
from services.connector.scheduler import Scheduler
from services.contracts import (
    Bucket,
    ChangeKind,
    DocumentDiscovered,
    DocumentRejected,
    InboxClaim,
    IndexEntry,
    RejectReason,
    Topic,
)
from services.lifecycle import retry_forever, run_until_stopped
from services.messaging import kafka_broker, publish_event
from services.settings import Settings
from services.storage import minio_client, stat_object

log = logging.getLogger("afina.connector")

FILES_SEEN = Counter("afina_connector_files_seen_total", "Document versions read and hashed", ["source"])
BYTES_READ = Counter("afina_connector_bytes_read_total", "Bytes read from watched storage", ["source"])
EVENTS = Counter("afina_connector_events_published_total", "Events published", ["kind"])
ERRORS = Counter("afina_connector_errors_total", "Failed runs, retried with backoff", ["source"])
SKIPPED = Counter("afina_connector_skipped_total", "Paths never read (links out, FIFOs, ...)", ["reason"])
REFUSED = Gauge("afina_connector_inbox_refused", "1 while the inbox folder is refused (see the log): nothing deleted")

CLAIM_RETRY_S = 5  # how often a refused inbox folder is looked at again
CLOSED_DELAY_S = 0.05  # a closed or renamed-in file is complete: read it almost at once
PART_SIZE = 8 * 1024 * 1024  # multipart upload part: bounds memory per upload
BUCKET_PREFIX = f"bucket:{Bucket.INBOX}/"


class ChangedWhileReading(Exception):
    """The document changed between hashing and storing it; the run is retried."""


@dataclass(frozen=True)
class Observed:
    """A document version as found in storage."""

    size: int
    version: str  # mtime_ns of a file, ETag of an object
    modified_at: datetime
    sha256: str | None = None  # None: too large, not read
    media_type: str | None = None


UNCHANGED = object()  # the document is what the index says: nothing to read


class Connector:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.inbox_dir
        self.folder_prefix = f"{settings.inbox_name}:"
        self.s3 = minio_client(settings)
        self.broker = kafka_broker(settings, "afina-connector")
        self.index: dict[str, IndexEntry] = {}
        self.folder_id: str | None = None  # the inbox folder's marker id, once it is known to be ours
        self.io = ThreadPoolExecutor(settings.connector.workers, thread_name_prefix="connector-io")
        self.files: Scheduler[str] = Scheduler(
            self.sync_file, settings.connector.workers, log, on_error=lambda *_: ERRORS.labels("folder").inc()
        )
        self.objects: Scheduler[str] = Scheduler(
            self.sync_object, settings.connector.workers, log, on_error=lambda *_: ERRORS.labels("bucket").inc()
        )
        if settings.connector.watch_bucket:
            self.broker.subscriber(
                Topic.INBOX_NOTIFICATIONS, group_id="afina-connector", auto_offset_reset="latest"
            )(self.on_notification)

    # ---- the folder ---------------------------------------------------------------------

    async def sync_file(self, rel: str) -> None:
        sid = source_id(self.settings.inbox_name, rel)
        previous = self.index.get(sid)
        try:
            observed = await self._in_thread(self._read_file, rel, previous)
        except FileNotFoundError:
            observed = None
        except Unreadable as exc:
            SKIPPED.labels(str(exc)).inc()
            log.info("not a document; skipped", extra={"source_id": sid, "reason": str(exc)})
            observed = None  # what was a document here is one no longer: forget it
        if observed is not UNCHANGED:
            await self._apply(sid, previous, observed)

    def _read_file(self, rel: str, previous: IndexEntry | None) -> Observed | object:
        file, stat = open_document(self.root, rel)
        with file:
            version = str(stat.st_mtime_ns)
            if _same_version(previous, version, stat.st_size):
                return UNCHANGED
            modified = datetime.fromtimestamp(stat.st_mtime, UTC)
            if stat.st_size > self.settings.connector.max_file_bytes:
                return Observed(stat.st_size, version, modified)
            sha, size, head = sha256_of(file, media.HEAD_BYTES)
            FILES_SEEN.labels("folder").inc()
            BYTES_READ.labels("folder").inc(size)
            media_type = media.sniff(head, rel, whole=file)
            file.seek(0)
            self._store_raw(file, sha, size, media_type)
            return Observed(size, version, modified, sha, media_type)

    def _store_raw(self, file: BinaryIO, sha: str, size: int, media_type: str) -> None:
        if self._raw_exists(sha):
            return
        reader = HashingReader(file)
        self.s3.put_object(Bucket.RAW, sha, reader, length=size, part_size=PART_SIZE, content_type=media_type)
        if reader.hexdigest() != sha:
            self.s3.remove_object(Bucket.RAW, sha)
            raise ChangedWhileReading(f"content changed while it was uploaded (expected sha256 {sha})")

    def _raw_exists(self, sha: str) -> bool:
        return stat_object(self.s3, Bucket.RAW, sha) is not None

    def on_fs_event(self, event: FileSystemEvent) -> None:
        """From the observer's thread: turn a file-system event into scheduled runs (on the loop)."""
        kind = event.event_type
        if kind in ("opened", "closed_no_write", "attrib"):
            return
        paths = [(event.src_path, kind)]
        if kind == "moved":
            paths = [(event.src_path, "deleted"), (event.dest_path, "moved_in")]
        for path, what in paths:
            rel = relative(self.root, os.fsdecode(path))
            if rel is None or is_ignored(rel):
                continue
            if event.is_directory:
                self._loop.call_soon_threadsafe(self._touch_folder, rel, what)
            else:
                self.files.touch_threadsafe(rel, self._quiet_period(what, path))

    def _quiet_period(self, what: str, path: str) -> float:
        """How long a path must stay quiet before it is read.

        A close or a rename into place means the writer is done. A file created with
        bytes already in it was moved in from elsewhere (a move sends no close). Anything
        else may still be being written: wait for the settle time.
        """
        if what in ("closed", "moved_in", "deleted"):
            return CLOSED_DELAY_S
        if what == "created":
            try:
                if os.lstat(path).st_size > 0:
                    return CLOSED_DELAY_S
            except OSError:
                return CLOSED_DELAY_S
        return self.settings.connector.settle_s

    def _touch_folder(self, rel_dir: str, what: str) -> None:
        """A folder appeared or went away: files inside it may send no events of their own."""
        if what in ("deleted", "moved"):
            inside = f"{self.folder_prefix}{rel_dir}/"
            for sid, entry in self.index.items():
                if sid.startswith(inside) and not entry.deleted:
                    self.files.touch(sid.removeprefix(self.folder_prefix), 0)
        if what in ("created", "moved_in"):
            for rel in walk(self.root / rel_dir):
                self.files.touch(f"{rel_dir}/{rel}", self.settings.connector.settle_s)

    # ---- the bucket ---------------------------------------------------------------------

    async def on_notification(self, msg: KafkaMessage) -> None:
        try:
            keys = keys_in(msg.body, Bucket.INBOX)
        except ValueError as exc:
            log.warning("ignored a record on the notifications topic", extra={"error": str(exc)})
            return
        for key in keys:
            if not is_ignored(key):
                self.objects.touch(key, 0)

    async def sync_object(self, key: str) -> None:
        sid = BUCKET_PREFIX + key
        previous = self.index.get(sid)
        observed = await self._in_thread(self._read_object, key, previous)
        if observed is not UNCHANGED:
            await self._apply(sid, previous, observed)

    def _read_object(self, key: str, previous: IndexEntry | None) -> Observed | object | None:
        stat = stat_object(self.s3, Bucket.INBOX, key)
        if stat is None:
            return None
        etag = stat.etag.strip('"')
        if _same_version(previous, etag, stat.size):
            return UNCHANGED
        modified = stat.last_modified or datetime.now(UTC)
        if stat.size > self.settings.connector.max_file_bytes:
            return Observed(stat.size, etag, modified)
        # Spool while hashing: a ZIP container's type is read from its end. Bounded memory.
        with tempfile.SpooledTemporaryFile(max_size=PART_SIZE) as spool:
            response = self.s3.get_object(Bucket.INBOX, key, request_headers={"If-Match": f'"{etag}"'})
            try:
                for chunk in response.stream(CHUNK):
                    spool.write(chunk)
            finally:
                response.close()
                response.release_conn()
            spool.seek(0)
            sha, size, head = sha256_of(spool, media.HEAD_BYTES)
            media_type = media.sniff(head, key, whole=spool)
        FILES_SEEN.labels("bucket").inc()
        BYTES_READ.labels("bucket").inc(size)
        if not self._raw_exists(sha):
            # server-side copy of exactly the version we hashed (fails if it changed since)
            self.s3.copy_object(Bucket.RAW, sha, CopySource(Bucket.INBOX, key, match_etag=etag))
        return Observed(size, etag, modified, sha, media_type)

    # ---- both ---------------------------------------------------------------------------

    async def _apply(self, sid: str, previous: IndexEntry | None, observed: Observed | None) -> None:
        """Publish what a document's current state calls for, then record it in the index."""
        if observed is None:  # gone
            if previous is None or previous.deleted:
                return
            entry = IndexEntry(deleted=True)
            kind = index.decide(previous, None)
        elif observed.sha256 is None:  # too large to read
            entry = IndexEntry(size=observed.size, version=observed.version, rejected=True)
            if previous == entry:
                return
            limit = self.settings.connector.max_file_bytes
            await publish_event(self.broker, DocumentRejected(
                source_id=sid, reason=RejectReason.TOO_LARGE, stage="connector",
                message=f"the file has {observed.size} bytes, over the limit of {limit} bytes "
                        f"(setting AFINA_CONNECTOR_MAX_FILE_BYTES)",
            ), key=sid)
            EVENTS.labels("rejected").inc()
            # the newest version wins, even an unusable one: the text of the one before leaves the dataset
            kind = index.decide(previous, None)
        else:
            entry = IndexEntry(sha256=observed.sha256, size=observed.size, version=observed.version)
            kind = index.decide(previous, observed.sha256)
        if kind is not None:
            there = observed is not None and kind is not ChangeKind.DELETED
            await publish_event(self.broker, DocumentDiscovered(
                source_id=sid, kind=kind,
                sha256=observed.sha256 if there else None,
                size=observed.size if there else None,
                media_type=observed.media_type if there else None,
                modified_at=observed.modified_at if there else None,
            ), key=sid)
            EVENTS.labels(kind).inc()
            log.info("published", extra={"source_id": sid, "kind": str(kind), "sha256": entry.sha256})
        await index.record(self.broker, sid, entry)
        self.index[sid] = entry

    async def reconcile(self) -> None:
        """Compare storage with the index and schedule every difference (start-up and periodically).

        A storage that looks gone (the folder lost its marker, most documents missing) deletes nothing.
        """
        files = await self._in_thread(walk, self.root)
        if folder_id(self.root) != self.folder_id:
            self._refuse(f"the inbox folder {self.root} is missing or lost its marker file: "
                                   "a drive unmounted? Nothing is read or deleted until it is back")
        else:
            present = {source_id(self.settings.inbox_name, rel): rel for rel in files}
            for rel in present.values():
                self.files.touch(rel, 0)
            gone = self._gone(present.keys())
            for sid in gone:
                self.files.touch(sid.removeprefix(self.folder_prefix), 0)
        if not self.settings.connector.watch_bucket:
            return
        objects = await self._in_thread(
            lambda: {o.object_name: o for o in self.s3.list_objects(Bucket.INBOX, recursive=True)}
        )
        for key, obj in objects.items():
            if not is_ignored(key) and not _same_version(self.index.get(BUCKET_PREFIX + key), obj.etag.strip('"'), obj.size):
                self.objects.touch(key, 0)
        # a bucket is never unmounted: objects gone from it were deleted
        for sid in self._known(BUCKET_PREFIX) - {BUCKET_PREFIX + key for key in objects}:
            self.objects.touch(sid.removeprefix(BUCKET_PREFIX), 0)

    def _gone(self, present) -> set[str]:
        """The folder's indexed documents no longer present, unless so many are that the folder must
        be at fault (a sync tool that emptied it, a wrong mount)."""
        known = self._known(self.folder_prefix)
        gone = known - present
        share = self.settings.connector.max_delete_share
        if len(gone) > share * len(known):
            self._refuse(f"{len(gone)} of the {len(known)} documents indexed from {self.root} are gone, more "
                         f"than AFINA_CONNECTOR_MAX_DELETE_SHARE={share}; none is deleted. If they were removed "
                         "on purpose, raise that setting for one run")
            return set()
        REFUSED.set(0)
        return gone

    def _refuse(self, reason: str) -> None:
        REFUSED.set(1)
        log.error("inbox folder refused", extra={"reason": reason})

    async def _claim_inbox(self, claimed: InboxClaim | None) -> None:
        """Wait until the inbox folder is the one this inbox name's documents came from, then claim it."""
        while not self.settings.connector.take_over_inbox:
            problem = claim_problem(self.root, self.settings.inbox_name, claimed, len(self._known(self.folder_prefix)))
            if problem is None:
                break
            self._refuse(problem)
            await asyncio.sleep(CLAIM_RETRY_S)
        REFUSED.set(0)
        self.folder_id = folder_id(self.root) or mark(self.root)
        if claimed is None or claimed.folder_id != self.folder_id:
            await index.claim(self.broker, self.settings.inbox_name,
                              InboxClaim(folder_id=self.folder_id, folder=str(self.root)))

    def _known(self, prefix: str) -> set[str]:
        return {sid for sid, entry in self.index.items() if sid.startswith(prefix) and not entry.deleted}

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    # ---- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.settings.connector.metrics_port:
            start_http_server(self.settings.connector.metrics_port, addr="127.0.0.1")
        await retry_forever(self.broker.start, "connecting to Kafka", log, cleanup=self.broker.stop)
        prefixes = (self.folder_prefix, BUCKET_PREFIX) if self.settings.connector.watch_bucket else (self.folder_prefix,)
        self.index, claimed = await index.load_when_available(self.settings, prefixes, log)
        await self._claim_inbox(claimed)
        workers = await self.files.start() + await self.objects.start()
        observer = Observer()
        observer.schedule(_Forward(self.on_fs_event), str(self.root), recursive=True)
        observer.start()
        try:
            await self.reconcile()
            log.info("connector ready", extra={"inbox": str(self.root), "indexed": len(self.index),
                                               "bucket": self.settings.connector.watch_bucket})
            while True:
                await asyncio.sleep(self.settings.connector.rescan_s)
                await self.reconcile()
        finally:
            observer.stop()
            for worker in workers:
                worker.cancel()
            await self.broker.stop()
            self.io.shutdown(wait=False, cancel_futures=True)

class _Forward(FileSystemEventHandler):
    def __init__(self, handle) -> None:
        self.handle = handle

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.handle(event)


def _same_version(previous: IndexEntry | None, version: str, size: int) -> bool:
    return previous is not None and not previous.deleted and previous.version == version and previous.size == size


def run(settings: Settings) -> None:
    """Run the connector until SIGTERM or SIGINT."""
    run_until_stopped(Connector(settings).run, "connector", log)
