"""oyez.aio.cancel_and_wait: ends a task even when a cancellation is lost inside it."""

from __future__ import annotations

import asyncio

import pytest

from oyez.aio import cancel_and_wait


async def _loop_that_loses_one_cancellation(beats: list[int]) -> None:
    lost = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True  # as a library cleaning up a connection might
        beats.append(1)


def test_a_task_that_loses_a_cancellation_still_ends() -> None:
    async def scenario() -> None:
        beats: list[int] = []
        task = asyncio.create_task(_loop_that_loses_one_cancellation(beats))
        await asyncio.sleep(0.05)
        await asyncio.wait_for(cancel_and_wait(task), timeout=5)
        assert task.cancelled()
        count = len(beats)
        await asyncio.sleep(0.05)
        assert len(beats) == count

    asyncio.run(scenario())


def test_a_task_that_failed_on_its_own_raises_its_error() -> None:
    async def failing() -> None:
        raise ValueError("broken")

    async def scenario() -> None:
        task = asyncio.create_task(failing())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        with pytest.raises(ValueError, match="broken"):
            await cancel_and_wait(task)

    asyncio.run(scenario())


def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    async def scenario() -> None:
        stubborn = asyncio.create_task(_loop_that_loses_one_cancellation([]))
        waiter = asyncio.create_task(cancel_and_wait(stubborn))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await cancel_and_wait(stubborn)

    asyncio.run(scenario())
