"""A byte budget for the documents a normalizer holds at once.

A batch's documents run side by side (both worker processes busy), and each holds its raw bytes
and then its finished part until the part is stored. Without a bound, a batch of sixty large
PDFs is sixty PDFs in memory at once. A document waits for room; one larger than the whole
budget goes alone, so nothing is refused for its size here (the connector's size limit does that).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0  # the most held at once, for the metrics
        self._room = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        share = min(size, self.limit)
        async with self._room:
            await self._room.wait_for(lambda: self.held + share <= self.limit)
            self.held += share
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            async with self._room:
                self.held -= share
                self._room.notify_all()
