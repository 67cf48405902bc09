"""The passage index: one LanceDB table in MinIO (``s3://index/lancedb/<AFINA_RETRIEVAL_TABLE>.lance``), embedded in
each process that uses it, so there is no server to run.

Writers replace whole documents: one ``merge_insert`` per batch inserts the documents' new
passages and deletes every other row of those documents (their old version, or all of them for
a deleted document) in one commit, so a reader sees a document's old rows or its new ones, never
both or neither, and a redelivered batch writes the same rows again (ids are deterministic).
Lance commits a table version with a conditional put, so several writers (indexer replicas) may
commit at once: a conflicting commit is retried on the newer version. Two writers inserting the same
new passage conflict only because ``id`` is the table's primary key (tests/integration/test_retrieval.py).

Search is hybrid: nearest vectors (cosine) and full-text BM25, each ranking ``CANDIDATES``
passages, fused by a convex combination of their min-max-normalized scores (``fuse``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import lancedb
import pyarrow as pa
from lancedb.index import FTS
from lancedb.query import MatchQuery

from services.contracts import Bucket, Stability
from services.retrieval.embed import Embedder
from services.settings import Settings

log = logging.getLogger("afina.retrieval")

# Fusion: score-based convex combination, not reciprocal rank (Bruch et al., "An Analysis of Fusion
# Functions for Hybrid Retrieval", 2023). On benchmarks/retrieval.py's query sets RRF (k=60) lost to
# dense alone on the Python reference (recall@5 0.857 against 0.893); this matches or beats both.
VECTOR_WEIGHT = 0.4  # the vector search's share of the fused score; BM25 has the rest
CANDIDATES = 100  # each search ranks this many passages (at least k) before fusing
EMBEDDER_KEY = b"afina-embedder"
PRIMARY_KEY = b"lance-schema:unenforced-primary-key"


class Mode(enum.StrEnum):
    HYBRID = "hybrid"
    VECTOR = "vector"
    TEXT = "text"  # BM25 alone


def schema(dim: int, embedder: str) -> pa.Schema:
    return pa.schema([
        # <source key>:<chunk>:<passage>: the same passage of a document keeps its id. The key lets Lance
        # see two concurrent inserts of the same new id as a conflict (it retries one, which then
        # updates): without it both commit and the passage is there twice (lance-format/lance#4585).
        pa.field("id", pa.string(), nullable=False, metadata={PRIMARY_KEY: b"true"}),
        ("source_id", pa.string()),
        ("sha256", pa.string()),
        ("chunk", pa.int32()),
        ("passage", pa.int32()),
        ("section", pa.string()),
        ("page", pa.int32()),  # the page its chunk starts on; null for formats without pages
        ("text", pa.string()),
        ("language", pa.string()),
        ("stability", pa.string()),
        ("media_type", pa.string()),
        ("indexed_at", pa.timestamp("us", tz="UTC")),
        ("vector", pa.list_(pa.float32(), dim)),
    ], metadata={EMBEDDER_KEY: embedder.encode()})


@dataclass(frozen=True)
class Filters:
    language: str | None = None
    stability: Stability | None = None
    source_prefix: str | None = None

    def sql(self) -> str | None:
        found = []
        if self.language:
            found.append(f"language = {_quote(self.language)}")
        if self.stability:
            found.append(f"stability = {_quote(self.stability)}")
        if self.source_prefix:
            found.append(f"starts_with(source_id, {_quote(self.source_prefix)})")
        return " AND ".join(found) or None


@dataclass(frozen=True)
class Hit:
    id: str
    source_id: str
    sha256: str
    chunk: int
    passage: int
    section: str
    text: str
    language: str
    stability: str
    score: float
    page: int | None = None  # None too in a table built before pages were indexed


HIT_COLUMNS = tuple(f for f in Hit.__dataclass_fields__ if f != "score")  # what a search reads back, where it exists


@dataclass(frozen=True)
class DocumentPassages:
    """A document's passages to index, with their vectors; no passages: remove the document."""

    source_id: str
    rows: list[dict]


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def storage_options(settings: Settings) -> dict[str, str]:
    return {"endpoint": settings.s3_url, "allow_http": str(not settings.s3_secure).lower(),
            "aws_access_key_id": settings.s3_access_key, "aws_secret_access_key": settings.s3_secret_key,
            "region": "us-east-1"}  # MinIO ignores it; the S3 client needs one


def _preempted(exc: RuntimeError) -> bool:
    """Lance's error for a commit that another writer's commit of the same kind made void."""
    return "commit conflict" in str(exc).lower()


def has_primary_key(table_schema: pa.Schema) -> bool:
    return (table_schema.field("id").metadata or {}).get(PRIMARY_KEY) == b"true"


def fuse(searches: Iterable[tuple[dict[str, float], float]]) -> list[tuple[str, float]]:
    """Convex combination: each search's scores (higher is better) are min-max normalized over its
    candidates, weighted (the weights taken as shares of their sum), and summed; an id a search did
    not return scores 0 there. So a fused score is in [0, 1], one search alone included."""
    searches = list(searches)
    total = sum(weight for _, weight in searches)
    fused: dict[str, float] = {}
    for scores, weight in searches:
        if not scores:
            continue
        low, high = min(scores.values()), max(scores.values())
        for item, score in scores.items():
            normalized = (score - low) / (high - low) if high > low else 1.0
            fused[item] = fused.get(item, 0.0) + weight / total * normalized
    return sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))


class NotIndexedYet(LookupError):
    """The table does not exist yet: nothing was indexed."""


class IncompatibleIndex(RuntimeError):
    """The table was built by another embedding model: its vectors cannot be compared with ours."""


class PassageIndex:
    def __init__(self, settings: Settings, embedder: Embedder, read_consistency_s: float | None = None,
                 writer: bool = False) -> None:
        """``read_consistency_s``: how stale a read may be (0: every read checks for a newer table
        version; None: the version first opened, which a writer keeps up to date itself). Only a
        ``writer`` creates the table; a reader before the first write gets NotIndexedYet."""
        self.embedder = embedder
        self.writer = writer
        self._text_index = False
        self._connect = lambda: lancedb.connect(  # on first use: connecting lists the bucket, and a service
            f"s3://{Bucket.INDEX}/lancedb", storage_options=storage_options(settings),  # must start without MinIO
            read_consistency_interval=None if read_consistency_s is None else timedelta(seconds=read_consistency_s))
        self._db = None
        self.name = settings.retrieval.table
        self._table = None

    @property
    def table(self):
        """The table, created on first use; refused when another embedder built it."""
        if self._table is None:
            if self._db is None:
                self._db = self._connect()
            if self.writer:
                table = self._db.create_table(self.name, schema=schema(self.embedder.dim, self.embedder.name),
                                              exist_ok=True)
            else:
                try:
                    table = self._db.open_table(self.name)
                except ValueError as exc:  # LanceDB's "Table ... was not found"
                    raise NotIndexedYet(f"no passages are indexed yet (table {self.name!r}): is the indexer "
                                        "running?") from exc
            built_by = (table.schema.metadata or {}).get(EMBEDDER_KEY, b"").decode()
            if built_by != self.embedder.name:  # refused every time, not only the first
                raise IncompatibleIndex(
                    f"the passage index {self.name!r} was built with {built_by!r}, not {self.embedder.name!r}: "
                    "set AFINA_RETRIEVAL_TABLE to a new table, which the indexer fills from the first document")
            if self.writer and not has_primary_key(table.schema):
                log.warning(f"the passage index {self.name!r} was made without a primary key: two indexer replicas "
                            "may write a new passage twice; set AFINA_RETRIEVAL_TABLE to a new table to rebuild it")
            self._table = table
        return self._table

    def rows(self, source_id: str, source_key: str, sha256: str, language: str, stability: Stability,
             media_type: str | None, passages) -> list[dict]:
        """Index rows of one document version's passages, embedded."""
        vectors = self.embedder.passages([p.text for p in passages])
        now = datetime.now(UTC)
        return [{"id": f"{source_key}:{p.chunk}:{p.number}", "source_id": source_id, "sha256": sha256,
                 "chunk": p.chunk, "passage": p.number, "section": p.section, "page": p.page, "text": p.text,
                 "language": language, "stability": str(stability), "media_type": media_type,
                 "indexed_at": now, "vector": vector} for p, vector in zip(passages, vectors, strict=True)]

    def replace(self, documents: list[DocumentPassages]) -> None:
        """Make each document's rows exactly the given ones (none: it is gone), in one commit."""
        if not documents:
            return
        rows = [row for doc in documents for row in doc.rows]
        sources = ", ".join(_quote(doc.source_id) for doc in documents)
        data = pa.Table.from_pylist(rows, schema=self.table.schema)
        (self.table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
         .when_not_matched_by_source_delete(f"source_id IN ({sources})").execute(data))
        if rows and not self._has_text_index():
            # BM25 over the text; rows written after it are searched unindexed until `optimize`
            try:
                self.table.create_index("text", config=FTS(with_position=False, ascii_folding=True), replace=True)
            except RuntimeError as exc:  # another replica built it at the same moment: the rows are committed
                if not _preempted(exc):
                    raise

    def optimize(self) -> bool:
        """Fold new rows into the indexes and compact small fragments (each commit writes one).
        False when another replica's commit got there first: its next turn folds them."""
        try:
            self.table.optimize()
        except RuntimeError as exc:
            if not _preempted(exc):
                raise
            return False
        return True

    def count(self, source_id: str | None = None) -> int:
        return self.table.count_rows(f"source_id = {_quote(source_id)}" if source_id else None)

    def ranked(self, query: str, k: int, filters: Filters = Filters(), mode: Mode = Mode.HYBRID) -> list[Hit]:
        """The ``k`` passages that best answer ``query``."""
        # each search with the score column it ranks by (selected: Lance warns when it is left out), how to
        # make that column "higher is better", and its weight
        searches = []
        if mode in (Mode.HYBRID, Mode.VECTOR):
            searches.append((self.table.search(self.embedder.query(query), vector_column_name="vector")
                             .distance_type("cosine"), "_distance", lambda distance: 1.0 - distance, VECTOR_WEIGHT))
        if mode in (Mode.HYBRID, Mode.TEXT) and self._has_text_index():
            searches.append((self.table.search(MatchQuery(query, "text"), query_type="fts"), "_score",
                             lambda score: score, 1.0 - VECTOR_WEIGHT))
        where = filters.sql()
        found: dict[str, dict] = {}
        scored = []
        columns = [c for c in HIT_COLUMNS if c in self.table.schema.names]
        for search, column, similarity, weight in searches:
            rows = (search.where(where, prefilter=True) if where else search).select([*columns, column]).limit(
                max(k, CANDIDATES)).to_list()
            scored.append(({row["id"]: similarity(row[column]) for row in rows}, weight))
            found.update((row["id"], row) for row in rows)
        return [Hit(**{c: found[i][c] for c in columns}, score=score) for i, score in fuse(scored)[:k]]

    def _has_text_index(self) -> bool:
        if not self._text_index:  # once built it stays: ask storage only until then
            self._text_index = any(i.index_type == "FTS" for i in self.table.list_indices())
        return self._text_index

    def stats(self) -> dict:
        found = self.table.stats()
        return {"rows": found["num_rows"], "bytes": found["total_bytes"], "indices": found["num_indices"],
                "fragments": found["fragment_stats"]["num_fragments"], "embedder": self.embedder.name}
