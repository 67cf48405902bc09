"""Coalescing concurrent requests into batches: a bounded queue and the rule for when a batch starts.

A batch holds requests for one model version (the oldest waiting request's), in arrival order, at
most ``max_batch``. It starts once it has as many requests as were recently in flight together
(so a lone caller never waits), or once its oldest request has waited ``max_wait_s``, whichever
comes first. While it runs, requests for its version may join it (``take``, from the generation
thread) as long as none for another version waited longer. The queue is bounded: a request beyond
``max_size`` is refused (QueueFull), not buffered without limit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    """More requests are waiting than the queue holds."""


class Concurrency:
    """The most requests seen in flight together (waiting or being generated) in the last
    ``window_s``: how many a batch may expect to gather."""

    def __init__(self, window_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._peak = 1
        self._peak_at = float("-inf")

    def observe(self, in_flight: int) -> None:
        now = self.clock()
        if in_flight >= self._peak or now - self._peak_at > self.window_s:
            self._peak, self._peak_at = max(1, in_flight), now

    @property
    def expected(self) -> int:
        return self._peak if self.clock() - self._peak_at <= self.window_s else 1


@dataclass
class _Waiting(Generic[T]):
    item: T
    key: Hashable
    arrived: float = field(default=0.0)


class BatchQueue(Generic[T]):
    def __init__(self, max_size: int, max_batch: int, max_wait_s: float,
                 alive: Callable[[T], bool] = lambda item: True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_size = max_size
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.alive = alive  # False for a request whose caller went away: dropped, never generated
        self.clock = clock
        self.running = 0  # requests in the batch being generated now
        self.concurrency = Concurrency(clock=clock)
        self._waiting: deque[_Waiting[T]] = deque()
        self._changed = asyncio.Event()
        self._lock = threading.Lock()  # take() runs on the generation thread

    def __len__(self) -> int:
        return len(self._waiting)

    def put(self, item: T, key: Hashable) -> None:
        with self._lock:
            self._drop_dead()
            if len(self._waiting) >= self.max_size:
                raise QueueFull(f"{len(self._waiting)} requests are waiting already (AFINA_INFERENCE_MAX_QUEUE)")
            self._waiting.append(_Waiting(item, key, self.clock()))
            self.concurrency.observe(len(self._waiting) + self.running)
        self._changed.set()

    def take(self, key: Hashable, most: int) -> list[T]:
        """Up to ``most`` waiting requests for ``key`` to join the running batch, at once (any
        thread); none while the longest-waiting request is for another key."""
        if most <= 0 or not self._waiting:
            return []
        with self._lock:
            self._drop_dead()
            if not self._waiting or self._waiting[0].key != key:
                return []
            members = [w for w in self._waiting if w.key == key][:most]
            self._remove(members)
        return [w.item for w in members]

    def _remove(self, members: list[_Waiting[T]]) -> None:
        taken = {id(w) for w in members}
        self._waiting = deque(w for w in self._waiting if id(w) not in taken)

    def _drop_dead(self) -> None:
        if any(not self.alive(w.item) for w in self._waiting):
            self._waiting = deque(w for w in self._waiting if self.alive(w.item))

    def _ready(self) -> tuple[Hashable, list[_Waiting[T]]] | None:
        """The batch that would start now (its key and members), if the rule says it may."""
        self._drop_dead()
        if not self._waiting:
            return None
        oldest = self._waiting[0]
        members = [w for w in self._waiting if w.key == oldest.key][: self.max_batch]
        enough = min(self.max_batch, self.concurrency.expected)
        if len(members) >= enough or self.clock() - oldest.arrived >= self.max_wait_s:
            return oldest.key, members
        return None

    def _wait_left(self) -> float | None:
        if not self._waiting:
            return None
        return max(0.0, self._waiting[0].arrived + self.max_wait_s - self.clock())

    async def next_batch(self) -> tuple[Hashable, list[T]]:
        """Wait for the next batch to start and take its requests out of the queue (they count as
        running until the caller sets ``running`` back)."""
        while True:
            with self._lock:
                ready = self._ready()
                if ready is not None:
                    key, members = ready
                    self._remove(members)
                    self.running = len(members)
                    return key, [w.item for w in members]
                wait = self._wait_left()
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), wait)
            except TimeoutError:
                pass
