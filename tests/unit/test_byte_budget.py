"""The normalizer's byte budget: documents wait for room, a larger one goes alone, none is refused."""

from __future__ import annotations

import asyncio

from services.normalizer.budget import ByteBudget


async def test_documents_wait_for_room_and_a_large_one_goes_alone():
    budget = ByteBudget(100)
    held_together: list[int] = []

    async def document(size: int) -> None:
        async with budget.hold(size):
            held_together.append(budget.held)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(document(size) for size in [60, 60, 30, 500, 10, 40]))
    assert budget.peak <= 100 and max(held_together) <= 100
    assert budget.held == 0  # all given back
    assert 100 in held_together  # the 500-byte document held the whole budget, alone


async def test_a_failing_document_gives_its_share_back():
    budget = ByteBudget(10)
    try:
        async with budget.hold(10):
            raise ValueError("extraction failed")
    except ValueError:
        pass
    async with budget.hold(10):  # would wait forever if the share were kept
        assert budget.held == 10
