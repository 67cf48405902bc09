"""The pure pipeline (bytes to Parquet part) in worker processes, with a time and a memory
limit per document.

A zip bomb, a pathological PDF or a 100,000-deep HTML page costs one rejection: the
worker that hangs is killed at the time limit, one that allocates too much gets a
MemoryError (RLIMIT_AS), one that crashes is replaced; the service goes on.
"""

from __future__ import annotations

import asyncio
import os
import resource
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime

from pebble import ProcessExpired, ProcessPool

from services import media
from services.contracts import RejectReason
from services.normalizer import language
from services.normalizer.extract import Rejection
from services.normalizer.pipeline import (
    Origin,
    Prepared,
    Tokenization,
    normalize,
    prepare,
)

_WARM_UP_TEXT = ("Warm-up: the parsers and the language model are loaded once per worker.\n\n"
                 "Calentamiento: los lectores y el modelo de idioma se cargan una sola vez por proceso.")


def _warm_up() -> None:
    """Import the parsers (imported lazily by extract) and load the language model, so the first
    document a new worker gets does not pay over a second for them."""
    from services.normalizer.extract import chat, docx, html, pdf, text  # noqa: F401

    language.detect(_WARM_UP_TEXT)  # its model is read (about 0.6 s) on the first call
    try:
        if _tokenization is None:
            normalize(_WARM_UP_TEXT.encode(), media.TEXT, "warm-up.txt")
        else:  # the tokenizer and the Parquet writer too
            origin = Origin("warm-up.txt", "0" * 64, media.TEXT, datetime.now(UTC))
            prepare(_WARM_UP_TEXT.encode(), origin, (), _tokenization)
    except Rejection:
        pass  # only the loading mattered


_tokenization: Tokenization | None = None  # this worker's tokenizer, set when it starts


def _prepare(data: bytes, origin: Origin, pii_kinds: tuple[str, ...]) -> Prepared:
    assert _tokenization is not None, "the pool was started without a tokenizer"
    return prepare(data, origin, pii_kinds, _tokenization)


def _start_worker(extra_bytes: int, tokenization: Tokenization | None) -> None:
    global _tokenization
    _tokenization = tokenization  # inherited by fork, or pickled: loaded once per worker either way
    # One worker per core already: the tokenizer's own thread pool in each worker only fought the
    # other workers for the cores (about 8% more CPU per document, measured with benchmarks/ingest.py).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        _warm_up()  # before the limit: what is loaded once is not what one document may take
    except Exception:  # noqa: BLE001 - a failed warm-up only leaves the loading to the first document
        pass
    _limit_memory(extra_bytes)


def _ready() -> None:
    """A task that does nothing: scheduling it starts the workers."""


def _limit_memory(extra_bytes: int) -> None:
    """Cap the worker's address space at what it has now (inherited from its parent by fork,
    which varies) plus what one document may take."""
    with open("/proc/self/status") as status:
        size_kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    limit = size_kib * 1024 + extra_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class WorkerPool:
    def __init__(self, workers: int, timeout_s: float, memory_bytes: int,
                 tokenization: Tokenization | None = None, job=_prepare) -> None:
        """``memory_bytes``: the address space a worker may add to prepare one document.
        ``job`` runs in the workers: by default ``prepare`` with ``tokenization``'s tokenizer
        (tests put ``normalize`` or hostile stand-ins here)."""
        self.timeout_s = timeout_s
        self._workers = workers
        self._job = job
        self._pool = ProcessPool(max_workers=workers, max_tasks=500,
                                 initializer=_start_worker, initargs=(memory_bytes, tokenization))

    async def start(self) -> None:
        """Start the workers now (they warm up in their initializer) rather than on the first document."""
        await asyncio.gather(*(asyncio.wrap_future(self._pool.schedule(_ready)) for _ in range(self._workers)))

    async def run(self, *args):
        """The job's result for these arguments (by default a ``Prepared`` document), or a
        Rejection saying why not."""
        future = self._pool.schedule(self._job, args=args, timeout=self.timeout_s)
        try:
            return await asyncio.wrap_future(future)
        except Rejection:
            raise
        except FutureTimeout:
            raise Rejection(
                RejectReason.TIMEOUT, f"reading and tokenizing the document took longer than {self.timeout_s:.0f} s"
            ) from None
        except (MemoryError, RecursionError) as exc:
            raise Rejection(RejectReason.BOMB, f"the document exhausted the worker's limits ({type(exc).__name__})") from None
        except ProcessExpired as exc:
            raise Rejection(RejectReason.BOMB, f"the worker process died on the document (exit {exc.exitcode})") from None
        except Exception as exc:  # any other failure of a third-party parser on this input
            raise Rejection(RejectReason.CORRUPT, f"the document could not be read ({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        self._pool.stop()
        self._pool.join(timeout=10)
