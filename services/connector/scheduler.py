"""Run a coroutine per key once the key has been quiet for a while, one run per key at a time.

Watched storage reports a burst of events per change (create, modify, modify, close);
the scheduler turns each burst into one run, never runs the same key twice at once, runs
it again if it changed meanwhile, and retries a failed run with backoff: a document is
never dropped because Kafka or MinIO was briefly away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from services.lifecycle import FIRST_DELAY_S, MAX_DELAY_S

K = TypeVar("K", bound=Hashable)



class Scheduler(Generic[K]):
    def __init__(
        self,
        run: Callable[[K], Awaitable[None]],
        workers: int,
        log: logging.Logger,
        on_error: Callable[[K, BaseException], None] = lambda key, exc: None,
    ) -> None:
        self._run = run
        self._log = log
        self._on_error = on_error
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._queued: set[K] = set()
        self._running: set[K] = set()
        self._again: set[K] = set()  # touched while running: run once more afterwards
        self._failures: dict[K, int] = {}
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers = workers
        self._loop: asyncio.AbstractEventLoop | None = None

    def touch(self, key: K, delay_s: float) -> None:
        """(Re)start the key's quiet period; it runs ``delay_s`` after the last touch."""
        assert self._loop is not None, "start() first"
        self._idle.clear()
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._timers[key] = self._loop.call_later(delay_s, self._due, key)

    def touch_threadsafe(self, key: K, delay_s: float) -> None:
        """touch() from another thread (a file-system observer's)."""
        assert self._loop is not None, "start() first"
        self._loop.call_soon_threadsafe(self.touch, key, delay_s)

    async def start(self) -> list[asyncio.Task]:
        self._loop = asyncio.get_running_loop()
        return [asyncio.create_task(self._worker()) for _ in range(self._workers)]

    async def wait_idle(self) -> None:
        """Until nothing is waiting, queued or running."""
        await self._idle.wait()

    def _due(self, key: K) -> None:
        self._timers.pop(key, None)
        if key in self._running:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._running.add(key)
            try:
                await self._run(key)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                retry_s = min(FIRST_DELAY_S * 2 ** (failures - 1), MAX_DELAY_S)
                self._log.warning(
                    "run failed; will retry",
                    extra={"key": str(key), "error": repr(exc), "attempt": failures, "retry_s": retry_s},
                )
                self._on_error(key, exc)
                self._running.discard(key)
                self.touch(key, retry_s)
                continue
            self._failures.pop(key, None)
            self._running.discard(key)
            if key in self._again:
                self._again.discard(key)
                self._due(key)
            if not (self._timers or self._queued or self._running):
                self._idle.set()
