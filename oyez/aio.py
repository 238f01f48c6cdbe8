"""Small asyncio helpers shared by the services."""

from __future__ import annotations

import asyncio
from typing import Any

_RECANCEL_EVERY_S = 0.1


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again while it runs on.

    A cancellation can be lost: a library call that catches it (a Redis client cleaning up a
    connection, say) and returns normally leaves a ``while True`` loop running, and a plain
    ``task.cancel(); await task`` then waits forever. Re-cancelling until the task is done ends it
    at its next await. The caller's own cancellation is not swallowed."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_RECANCEL_EVERY_S)
    if not task.cancelled() and (error := task.exception()) is not None:
        raise error  # it failed on its own before the cancellation arrived: as `await task` would
