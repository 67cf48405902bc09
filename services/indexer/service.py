"""The indexer service: a consumer group on ``afina.documents.normalized``.

Per batch: the last event of each document wins (a document's events are in order on its
partition); a document version's part is read from MinIO, cut into passages (passages.py),
embedded and, with the batch's other documents, replaces that document's rows in the passage
index in one commit (index.py); a tombstone, or a part that is gone (``afina forget``), removes
the document's rows. Offsets are committed only after that commit: a crash means the batch is
read again, and writing it again gives the same rows. Replicas may share the group: each passage
id is the table's key, so two replicas writing it at once leave it once (see index.py), and a
replica losing partitions in a rebalance first finishes the batch it holds (messaging.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from services.contracts import Bucket, DocumentNormalized, DocumentRejected, RejectReason, Topic
from services.datasets import parts
from services.lifecycle import retry_forever, run_until_stopped
from services.messaging import kafka_broker, publish_event, subscribe_batches
from services.retrieval import embed, passages
from services.retrieval.index import DocumentPassages, PassageIndex
from services.settings import Settings
from services.storage import minio_client, read_object

log = logging.getLogger("afina.indexer")

DOCUMENTS = Counter("afina_indexer_documents_total", "Documents written to the passage index", ["outcome"])
PASSAGES = Counter("afina_indexer_passages_total", "Passages embedded and written")
BATCH_SECONDS = Histogram("afina_indexer_batch_seconds", "Time to index one batch of events")
ROWS = Gauge("afina_indexer_index_rows", "Rows in the passage index after this replica's last write")


def group(settings: Settings) -> str:
    """The consumer group that fills a table: a new table starts from the first normalized event."""
    return f"afina-indexer-{settings.retrieval.table}"


class Indexer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.s3 = minio_client(settings)
        self.broker = kafka_broker(settings, "afina-indexer")
        self.index = PassageIndex(settings, embed.load(settings.retrieval.embedding_model), writer=True)
        self._optimized_at = time.monotonic()
        self.group = group(settings)
        subscribe_batches(self.broker, Topic.DOCUMENTS_NORMALIZED, DocumentNormalized, self.on_batch, group_id=self.group,
                          max_records=settings.retrieval.batch, auto_offset_reset="earliest")

    async def on_batch(self, events: list[DocumentNormalized]) -> None:
        started = time.perf_counter()
        newest = {event.source_id: event for event in events}  # in order: the last of each document wins
        documents = [doc for event in newest.values() if (doc := await self.passages_of(event)) is not None]
        await asyncio.to_thread(self.index.replace, documents)
        ROWS.set(await asyncio.to_thread(self.index.count))
        for doc in documents:
            DOCUMENTS.labels("indexed" if doc.rows else "removed").inc()
            PASSAGES.inc(len(doc.rows))
        BATCH_SECONDS.observe(time.perf_counter() - started)
        log.info("indexed", extra={"documents": len(documents), "passages": sum(len(d.rows) for d in documents)})
        if time.monotonic() - self._optimized_at > self.settings.retrieval.optimize_s:
            if not await asyncio.to_thread(self.index.optimize):
                log.info("another replica optimized the index at the same moment; this one goes on")
            self._optimized_at = time.monotonic()

    async def passages_of(self, event: DocumentNormalized) -> DocumentPassages | None:
        """The document's rows to index; no rows when it is deleted or its part is gone; None
        (nothing to change) when its part cannot be read, which is dead-lettered."""
        if event.deleted:
            return DocumentPassages(event.source_id, [])
        data = await asyncio.to_thread(read_object, self.s3, Bucket.DATASETS, event.part_key)
        if data is None:  # forgotten since: the document is in no part
            return DocumentPassages(event.source_id, [])
        try:
            table = parts.read_parquet(data)
            columns = [c for c in ("chunk_index", "kind", "text", "messages", "page") if c in table.column_names]
            found = passages.from_rows(table.select(columns).to_pylist())  # parts before pages have no page
        except Exception as exc:  # noqa: BLE001 (one unreadable part must not stop the index)
            await publish_event(self.broker, DocumentRejected(
                source_id=event.source_id, sha256=event.sha256, reason=RejectReason.CORRUPT, stage="consumer",
                message=f"the indexer could not read the part {event.part_key}: {exc}"), key=event.source_id)
            DOCUMENTS.labels("unreadable").inc()
            return None
        rows = await asyncio.to_thread(
            self.index.rows, event.source_id, parts.source_key(event.source_id), event.sha256 or "",
            event.language or "und", event.stability, event.media_type, found)
        return DocumentPassages(event.source_id, rows)

    async def run(self) -> None:
        if self.settings.retrieval.metrics_port:
            start_http_server(self.settings.retrieval.metrics_port, addr="127.0.0.1")
        await retry_forever(lambda: asyncio.to_thread(lambda: self.index.table), "opening the passage index", log)
        await retry_forever(self.broker.start, "connecting to Kafka", log, cleanup=self.broker.stop)
        log.info("indexer ready", extra={"group": self.group, "table": self.index.name,
                                         "embedder": self.index.embedder.name})
        try:
            await asyncio.Event().wait()
        finally:
            await self.broker.stop()


def run(settings: Settings) -> None:
    """Run the indexer until SIGTERM or SIGINT."""
    run_until_stopped(Indexer(settings).run, "indexer", log)
