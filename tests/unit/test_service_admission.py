"""AdmissionGate: capacity, bounded FIFO waiting line, per-kind counts, cancellation, idleness."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from asr_worker.service.admission import AdmissionGate, JobKind
from oyez.errors import CapacityExceeded


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))


async def settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


class Job:
    """Holds a slot until released; records when it got in."""

    def __init__(self, gate: AdmissionGate, kind: JobKind, log: list[str], name: str) -> None:
        self.admitted = asyncio.Event()
        self.done = asyncio.Event()
        self.task = asyncio.create_task(self._run(gate, kind, log, name))

    async def _run(self, gate: AdmissionGate, kind: JobKind, log: list[str], name: str) -> None:
        async with gate.slot(kind):
            log.append(name)
            self.admitted.set()
            await self.done.wait()


def test_capacity_then_queue_then_refusal() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(capacity=2, max_queue=1)
        log: list[str] = []
        a = Job(gate, JobKind.BATCH, log, "a")
        b = Job(gate, JobKind.STREAM, log, "b")
        c = Job(gate, JobKind.BATCH, log, "c")
        await settle()
        assert log == ["a", "b"]
        assert (gate.in_flight, gate.queued) == (2, 1)
        assert (gate.active(JobKind.BATCH), gate.active(JobKind.STREAM), gate.waiting(JobKind.BATCH)) == (
            1,
            1,
            1,
        )
        with pytest.raises(CapacityExceeded):
            async with gate.slot(JobKind.BATCH):
                pass
        a.done.set()
        await c.admitted.wait()
        assert log == ["a", "b", "c"]
        assert (gate.in_flight, gate.queued) == (2, 0)
        b.done.set()
        c.done.set()
        await asyncio.gather(a.task, b.task, c.task)
        assert (gate.in_flight, gate.queued) == (0, 0)

    run(scenario())


def test_waiters_are_served_in_arrival_order_and_newcomers_do_not_jump_the_line() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(capacity=1, max_queue=5)
        log: list[str] = []
        first = Job(gate, JobKind.BATCH, log, "first")
        await first.admitted.wait()
        waiting = [Job(gate, JobKind.BATCH, log, f"w{i}") for i in range(3)]
        await settle()
        first.done.set()
        await waiting[0].admitted.wait()
        late = Job(gate, JobKind.BATCH, log, "late")
        for job in [*waiting, late]:
            job.done.set()
        await asyncio.gather(first.task, late.task, *(job.task for job in waiting))
        assert log == ["first", "w0", "w1", "w2", "late"]
        assert gate.in_flight == 0

    run(scenario())


def test_a_cancelled_waiter_leaves_the_line_without_leaking_a_slot() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(capacity=1, max_queue=2)
        log: list[str] = []
        holder = Job(gate, JobKind.BATCH, log, "holder")
        quitter = Job(gate, JobKind.STREAM, log, "quitter")
        stayer = Job(gate, JobKind.BATCH, log, "stayer")
        await settle()
        assert gate.queued == 2
        quitter.task.cancel()
        await settle()
        assert (gate.queued, gate.waiting(JobKind.STREAM)) == (1, 0)
        holder.done.set()
        await stayer.admitted.wait()
        stayer.done.set()
        await asyncio.gather(holder.task, stayer.task)
        assert log == ["holder", "stayer"]
        assert (gate.in_flight, gate.queued) == (0, 0)

    run(scenario())


def test_a_waiter_cancelled_just_after_being_handed_a_slot_passes_it_on() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(capacity=1, max_queue=2)
        log: list[str] = []
        holder = gate.slot(JobKind.BATCH)
        await holder.__aenter__()
        unlucky = Job(gate, JobKind.BATCH, log, "unlucky")
        next_in_line = Job(gate, JobKind.BATCH, log, "next")
        await settle()
        await holder.__aexit__(None, None, None)  # hands the slot to "unlucky" without yielding
        unlucky.task.cancel()  # ... which is cancelled before it could run
        await next_in_line.admitted.wait()
        next_in_line.done.set()
        await next_in_line.task
        assert log == ["next"]
        assert unlucky.task.cancelled()
        assert (gate.in_flight, gate.queued) == (0, 0)

    run(scenario())


def test_wait_idle_returns_once_every_job_is_done() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(capacity=1, max_queue=1)
        await asyncio.wait_for(gate.wait_idle(), 1)  # idle from the start
        log: list[str] = []
        running = Job(gate, JobKind.BATCH, log, "running")
        queued = Job(gate, JobKind.BATCH, log, "queued")
        await settle()
        idle = asyncio.create_task(gate.wait_idle())
        running.done.set()
        await queued.admitted.wait()
        assert not idle.done()
        queued.done.set()
        await asyncio.wait_for(idle, 1)

    run(scenario())


def test_invalid_sizes_are_rejected() -> None:
    with pytest.raises(ValueError):
        AdmissionGate(capacity=0, max_queue=1)
    with pytest.raises(ValueError):
        AdmissionGate(capacity=1, max_queue=-1)
