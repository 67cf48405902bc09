"""The normalizer service: a consumer group on ``afina.documents.discovered``.

Per document version: raw bytes from MinIO → extraction, cleaning, redaction, language and
quality (a worker process with limits) → deduplication against the whole dataset →
chunks and tokens → one Parquet part in ``datasets`` → ``DocumentNormalized``. The batch's
Kafka offsets are committed only after all of that is durable. A document that cannot be
used becomes a ``DocumentRejected`` with its reason; the stream keeps moving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from services import media, registry
from services.contracts import (
    Bucket,
    ChangeKind,
    DocumentDiscovered,
    DocumentNormalized,
    DocumentRejected,
    RejectReason,
    Topic,
)
from services.datasets import listing, parts
from services.lifecycle import retry_forever, run_until_stopped
from services.messaging import kafka_broker, publish_event, subscribe_batches
from services.normalizer.budget import ByteBudget
from services.normalizer.dedup import DedupLog, Fingerprint
from services.normalizer.extract import Rejection
from services.normalizer.pipeline import Origin, Prepared, Tokenization
from services.normalizer.stability import StabilityRules
from services.normalizer.worker import WorkerPool
from services.settings import Settings
from services.storage import minio_client, put_bytes, read_object

log = logging.getLogger("afina.normalizer")

DOCUMENTS = Counter("afina_normalizer_documents_total", "Document events handled", ["outcome"])
REJECTED = Counter("afina_normalizer_rejected_total", "Documents rejected", ["reason"])
TOKENS = Counter("afina_normalizer_tokens_total", "Tokens written to parts")
SECONDS = Histogram("afina_normalizer_document_seconds", "Time to normalize one document")
DEDUP_SKIPPED = Gauge("afina_normalizer_dedup_records_skipped", "Records of the dedup log that could not be read")
ATTACHMENTS = Counter("afina_normalizer_attachments_total", "Attachments discovered or deleted as documents",
                      ["kind"])
RECONSIDERED = Counter("afina_normalizer_duplicates_reconsidered_total",
                       "Duplicates normalized again because their original changed or went away")
IN_FLIGHT = Gauge("afina_normalizer_inflight_bytes", "Raw document bytes held now (AFINA_NORMALIZER_MAX_INFLIGHT_MB)")
IN_FLIGHT_PEAK = Gauge("afina_normalizer_inflight_bytes_peak", "Raw document bytes held at once, at most so far")
DEDUP_RESTARTS = Gauge("afina_normalizer_dedup_reader_restarts", "Times the dedup log's reader failed and restarted")

GROUP = "afina-normalizer"
MAX_NESTING = 3  # attachments of attachments of attachments: deeper ones are refused
T = TypeVar("T")


class Normalizer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.s3 = minio_client(settings)
        self.broker = kafka_broker(settings, "afina-normalizer")
        self.dedup = DedupLog(settings, self.broker)
        DEDUP_SKIPPED.set_function(lambda: self.dedup.log.skipped)
        self.budget = ByteBudget(settings.normalizer.max_inflight_mb << 20)
        IN_FLIGHT.set_function(lambda: self.budget.held)
        IN_FLIGHT_PEAK.set_function(lambda: self.budget.peak)
        DEDUP_RESTARTS.set_function(lambda: self.dedup.log.restarts)
        self.pool: WorkerPool | None = None  # started once the tokenizer is known
        self.stability = StabilityRules.parse(settings.normalizer.volatile_prefixes, settings.normalizer.volatile_patterns)
        self._unconfirmed: list[tuple[DocumentNormalized | DocumentRejected, asyncio.Future]] = []
        # A batch may take long (every document up to its time limit): stay in the group meanwhile.
        worst_batch_s = settings.normalizer.batch * settings.normalizer.timeout_s / settings.normalizer.workers
        subscribe_batches(
            self.broker, Topic.DOCUMENTS_DISCOVERED, DocumentDiscovered, self.on_batch, group_id=GROUP,
            max_records=settings.normalizer.batch, auto_offset_reset="earliest",
            max_poll_interval_ms=int(max(300, worst_batch_s + 60) * 1000),
        )

    async def on_batch(self, events: list[DocumentDiscovered]) -> None:
        """A batch of events; when this returns, all of it is durable and the batch is committed."""
        # one document's events in order; different documents at once (both worker processes busy)
        by_source: dict[str, list[DocumentDiscovered]] = defaultdict(list)
        for event in events:
            by_source[event.source_id].append(event)
        self._unconfirmed = []
        await asyncio.gather(*(self._in_order(group) for group in by_source.values()))
        await self._confirm_announcements()

    async def _in_order(self, events: list[DocumentDiscovered]) -> None:
        for event in events:
            started = time.perf_counter()
            await self.handle(event)
            SECONDS.observe(time.perf_counter() - started)

    async def handle(self, event: DocumentDiscovered) -> None:
        if event.kind is ChangeKind.DELETED:
            held = await self._held_by(event.source_id)
            key = parts.tombstone_key(event.source_id, event.occurred_at)
            await self._durably(lambda: asyncio.to_thread(
                parts.store, self.s3, key, parts.tombstone(event.source_id, event.occurred_at)))
            freed = await self._durably(lambda: self.dedup.forget(event.source_id))
            await self._normalize_again(freed, event.source_id)
            await self._announce(DocumentNormalized(source_id=event.source_id, sha256=None, part_key=key, deleted=True))
            await self._discover(held, ChangeKind.DELETED)  # an email's attachments go with it
            DOCUMENTS.labels("deleted").inc()
            return
        if event.sha256 is None:
            await self._announce(DocumentRejected(
                source_id=event.source_id, reason=RejectReason.INVALID_EVENT, stage="normalizer",
                message=f"a '{event.kind}' event without a sha256 cannot be read"))
            return
        key = parts.part_key(event.source_id, event.occurred_at, event.sha256)
        # A version whose fingerprint is not in the dedup index was never claimed, so it has no part
        # yet: only a version claimed before (a redelivery, or the same version discovered again by
        # another connector replica, a moment later) asks storage whether it is the current one.
        current = None
        if self.dedup.claimed(event.source_id, event.sha256):
            current = await self._durably(lambda: asyncio.to_thread(listing.newest, self.s3, event.source_id))
        if current is not None and current.sha256 == event.sha256:  # written already: announce it, write nothing
            await self._discover(await self._held_by(event.source_id, current), ChangeKind.UPDATED)  # if lost
            await self._announce(self._normalized(event, current.key, current.info))
            DOCUMENTS.labels("redelivered").inc()
            return
        try:
            async with self.budget.hold(event.size if event.size is not None else self.budget.limit):
                info = await self._normalize(event, key)
        except Rejection as rejection:
            await self._supersede(event)
            await self._announce(DocumentRejected(
                source_id=event.source_id, sha256=event.sha256, reason=rejection.reason,
                message=rejection.message, stage="normalizer",
            ))
            REJECTED.labels(rejection.reason).inc()
            DOCUMENTS.labels("rejected").inc()
            log.info("rejected", extra={"source_id": event.source_id, "reason": str(rejection.reason),
                                        "why": rejection.message})
            return
        await self._announce(self._normalized(event, key, info))
        DOCUMENTS.labels("normalized").inc()
        log.info("normalized", extra={"source_id": event.source_id, "part": key})

    async def _normalize(self, event: DocumentDiscovered, key: str) -> parts.PartInfo:
        data = await self._durably(lambda: asyncio.to_thread(read_object, self.s3, Bucket.RAW, event.sha256))
        if data is None:
            raise Rejection(RejectReason.CORRUPT, f"the raw bytes raw/{event.sha256} are missing")
        origin = Origin(event.source_id, event.sha256, event.media_type, event.occurred_at,
                        self.stability.of(event.source_id))
        # the worker returns the finished part: tokenized and written out in case it is kept (a
        # duplicate's is dropped), so this process only moves bytes and the workers use both cores
        prepared: Prepared = await self.pool.run(data, origin, self.settings.normalizer.pii_kinds)
        fingerprint = Fingerprint(source_id=event.source_id, sha256=event.sha256, exact=prepared.exact_hash,
                                  minhash=prepared.minhash, media_type=event.media_type, size=event.size)
        claim = await self._durably(lambda: self.dedup.claim(fingerprint))
        await self._normalize_again(claim.freed, event.source_id)
        if (duplicate := claim.duplicate) is not None:
            how = "the same text as" if duplicate.similarity == 1.0 else f"{duplicate.similarity:.0%} similar to"
            raise Rejection(RejectReason.DUPLICATE, f"{how} {duplicate.of}")
        mail = event.media_type in (media.EML, media.MSG)  # a version before may have held attachments
        before = await self._held_by(event.source_id) if prepared.attachments or mail else []
        for attachment, raw in prepared.attachments:  # their bytes first: the part's list points at them
            await self._durably(lambda a=attachment, b=raw: asyncio.to_thread(
                put_bytes, self.s3, Bucket.RAW, a.sha256, b, a.media_type))
        await self._durably(lambda: asyncio.to_thread(parts.store, self.s3, key, prepared.part, prepared.info))
        now = {a.source_id for a, _ in prepared.attachments}
        await self._discover([a for a in before if a.source_id not in now], ChangeKind.DELETED)
        await self._discover([a for a, _ in prepared.attachments], ChangeKind.UPDATED)
        TOKENS.inc(prepared.info.tokens)
        return prepared.info

    async def _supersede(self, event: DocumentDiscovered) -> None:
        """The newest version of a document wins, even an unusable one: the text of the version
        before it leaves the dataset (a tombstone) and stops being anyone's original in dedup."""
        current = await self._durably(lambda: asyncio.to_thread(listing.newest, self.s3, event.source_id))
        if current is not None and not current.tombstone:
            held = await self._held_by(event.source_id, current)
            key = parts.tombstone_key(event.source_id, event.occurred_at)
            await self._durably(lambda: asyncio.to_thread(
                parts.store, self.s3, key, parts.tombstone(event.source_id, event.occurred_at)))
            await self._announce(DocumentNormalized(source_id=event.source_id, sha256=None, part_key=key, deleted=True))
            await self._discover(held, ChangeKind.DELETED)
            log.info("the newest version was rejected; the one before it leaves the dataset",
                     extra={"source_id": event.source_id, "tombstone": key})
        held = self.dedup.index.get(event.source_id)
        if held is not None and held[1].sha256 != event.sha256:  # (a duplicate replaced it already)
            freed = await self._durably(lambda: self.dedup.forget(event.source_id))
            await self._normalize_again(freed, event.source_id)

    async def _held_by(self, source_id: str, current: listing.StoredPart | None = None) -> list[parts.Attachment]:
        """The documents that the current version of a document holds (an email's attachments)."""
        if current is None:
            current = await self._durably(lambda: asyncio.to_thread(listing.newest, self.s3, source_id))
        if current is None or current.tombstone or not current.info.attachments:
            return []
        data = await self._durably(lambda: asyncio.to_thread(read_object, self.s3, Bucket.DATASETS, current.key))
        return parts.attachments_of(data) if data is not None else []

    async def _discover(self, attachments: list[parts.Attachment], kind: ChangeKind) -> None:
        """Attachments discovered (or deleted) as documents of their own, as a connector would."""
        for attachment in attachments:
            if kind is not ChangeKind.DELETED and attachment.source_id.count("#") > MAX_NESTING:
                await self._announce(DocumentRejected(
                    source_id=attachment.source_id, sha256=attachment.sha256, reason=RejectReason.BOMB,
                    stage="normalizer", message=f"an attachment nested more than {MAX_NESTING} deep is not read"))
                continue
            deleted = kind is ChangeKind.DELETED
            found = DocumentDiscovered(source_id=attachment.source_id, kind=kind,
                                       sha256=None if deleted else attachment.sha256,
                                       size=None if deleted else attachment.size,
                                       media_type=None if deleted else attachment.media_type)
            await self._durably(lambda e=found: publish_event(self.broker, e, key=e.source_id))
            ATTACHMENTS.labels(kind).inc()

    async def _normalize_again(self, freed: list[Fingerprint], original: str) -> None:
        """Documents rejected as duplicates of a version that is gone: discovered again, so that a
        replica normalizes them (their text would otherwise be in no live part)."""
        for again in freed:
            log.info("a duplicate's original changed or went away; normalizing it again",
                     extra={"source_id": again.source_id, "original": original})
            await self._durably(lambda f=again: publish_event(self.broker, DocumentDiscovered(
                source_id=f.source_id, kind=ChangeKind.UPDATED, sha256=f.sha256, size=f.size,
                media_type=f.media_type), key=f.source_id))
            RECONSIDERED.inc()

    def _normalized(self, event: DocumentDiscovered, key: str, info: parts.PartInfo) -> DocumentNormalized:
        return DocumentNormalized(
            source_id=event.source_id, sha256=event.sha256, part_key=key, language=info.language,
            media_type=event.media_type, chunks=info.chunks, tokens=info.tokens, tokenizer=info.tokenizer,
            stability=info.stability,
        )

    async def _announce(self, event: DocumentNormalized | DocumentRejected) -> None:
        """Publish without waiting for the broker: the batch confirms them all before it commits."""
        sent = await self._durably(lambda: publish_event(self.broker, event, key=event.source_id, confirm=False))
        self._unconfirmed.append((event, sent))

    async def _confirm_announcements(self) -> None:
        """Wait until the broker has every event announced in this batch. Should one have failed,
        all of them are published again in their order (confirmed one by one): duplicates are
        allowed, a lost or reordered outcome is not."""
        announced, self._unconfirmed = self._unconfirmed, []
        results = await asyncio.gather(*(sent for _, sent in announced), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if not failed:
            return
        log.warning("events were not acknowledged; publishing the batch's outcomes again",
                    extra={"failed": len(failed), "error": repr(failed[0])})
        for event, _ in announced:
            await self._durably(lambda e=event: publish_event(self.broker, e, key=e.source_id))

    async def _durably(self, step: Callable[[], Awaitable[T]]) -> T:
        """A storage or publishing step, retried until it succeeds. The batch is not acknowledged
        meanwhile, so nothing is lost."""
        return await retry_forever(step, "a storage or Kafka step", log)

    async def champion_tokenization(self) -> Tokenization:
        """The champion's tokenizer from the registry; waits until a champion exists."""

        async def champion_tokenizer():
            version = await asyncio.to_thread(registry.alias_version, self.s3)
            if version is None:
                raise LookupError("no champion model in the registry yet (run `afina base init`)")
            return await asyncio.to_thread(registry.load_tokenizer, self.s3, version)

        tokenizer, name = await retry_forever(champion_tokenizer, "loading the tokenizer", log)
        log.info("tokenizer loaded", extra={"tokenizer": name})
        return Tokenization(tokenizer, name, self.settings.normalizer.max_chunk_tokens)

    async def run(self) -> None:
        if self.settings.normalizer.metrics_port:
            start_http_server(self.settings.normalizer.metrics_port, addr="127.0.0.1")
        self.pool = WorkerPool(self.settings.normalizer.workers, self.settings.normalizer.timeout_s,
                               self.settings.normalizer.memory_mb << 20, await self.champion_tokenization())

        async def connect() -> None:
            await self.broker.connect()
            await self.dedup.start()  # the dedup index is read before the first document
            await self.broker.start()

        async def disconnect() -> None:
            await self.dedup.stop()
            await self.broker.stop()

        await self.pool.start()
        await retry_forever(connect, "connecting to Kafka", log, cleanup=disconnect)
        log.info("normalizer ready", extra={"group": GROUP, "workers": self.settings.normalizer.workers})
        try:
            await asyncio.Event().wait()
        finally:
            await self.dedup.stop()
            await self.broker.stop()
            self.pool.close()


def run(settings: Settings) -> None:
    """Run the normalizer until SIGTERM or SIGINT."""
    run_until_stopped(Normalizer(settings).run, "normalizer", log)
