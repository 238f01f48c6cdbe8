"""Admission control: ``capacity`` concurrent jobs, ``max_queue`` waiting, the rest refused at once.

Batch requests and streams share the capacity; the gate counts each kind separately so the metrics
can report active requests, active streams and both queue depths. Slots are handed over in arrival
order. Changes happen on one event loop, so plain integers are enough; other threads only read.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum

from oyez.errors import CapacityExceeded


class JobKind(StrEnum):
    BATCH = "batch"
    STREAM = "stream"


class AdmissionGate:
    """A FIFO counting semaphore with a bounded waiting line."""

    def __init__(self, capacity: int, max_queue: int) -> None:
        if capacity < 1 or max_queue < 0:
            raise ValueError("capacity must be >= 1 and max_queue >= 0")
        self.capacity = capacity
        self.max_queue = max_queue
        # Every kind present from the start: the HTTP thread iterates these while the loop updates them.
        self._active: Counter[JobKind] = Counter(dict.fromkeys(JobKind, 0))
        self._waiting: Counter[JobKind] = Counter(dict.fromkeys(JobKind, 0))
        self._line: deque[tuple[asyncio.Future[None], JobKind]] = deque()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """Jobs holding a slot."""
        return self._active.total()

    @property
    def queued(self) -> int:
        """Jobs waiting for a slot."""
        return self._waiting.total()

    def active(self, kind: JobKind) -> int:
        return self._active[kind]

    def waiting(self, kind: JobKind) -> int:
        return self._waiting[kind]

    @asynccontextmanager
    async def slot(self, kind: JobKind) -> AsyncIterator[None]:
        """Hold one slot for the ``async with`` body; raises ``CapacityExceeded`` when the line is full."""
        await self._acquire(kind)
        try:
            yield
        finally:
            self._release(kind)

    async def wait_idle(self) -> None:
        """Return once no job holds a slot or waits for one."""
        await self._idle.wait()

    async def _acquire(self, kind: JobKind) -> None:
        if self.in_flight < self.capacity and not self._line:
            self._active[kind] += 1
            self._idle.clear()
            return
        if len(self._line) >= self.max_queue:
            raise CapacityExceeded(
                f"worker at capacity ({self.capacity} in flight, {len(self._line)} queued)",
                capacity=self.capacity,
            )
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (turn, kind)
        self._line.append(entry)
        self._waiting[kind] += 1
        self._idle.clear()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                # The slot was handed over just as we were cancelled: pass it on.
                self._release(kind)
            else:
                self._line.remove(entry)
                self._waiting[kind] -= 1
                self._update_idle()
            raise

    def _release(self, kind: JobKind) -> None:
        """Free a slot of ``kind``; the first waiter (if any) gets it, already counted as active."""
        self._active[kind] -= 1
        if self._line:
            turn, waiter_kind = self._line.popleft()
            self._waiting[waiter_kind] -= 1
            self._active[waiter_kind] += 1
            turn.set_result(None)
            return
        self._update_idle()

    def _update_idle(self) -> None:
        if self.in_flight == 0 and self.queued == 0:
            self._idle.set()
