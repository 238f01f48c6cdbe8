"""WorkerLifecycle: loading -> ready -> draining, and what each phase lets through."""

from __future__ import annotations

import pytest

from asr_worker.service.lifecycle import Phase, WorkerLifecycle
from oyez.errors import ServiceUnavailable
from tests.fake_engine import FakeEngine


def test_only_the_ready_phase_hands_out_the_engine() -> None:
    lifecycle = WorkerLifecycle()
    with pytest.raises(ServiceUnavailable, match="worker is loading"):
        lifecycle.require_engine()
    engine = FakeEngine()
    lifecycle.mark_ready(engine)
    assert lifecycle.is_ready and lifecycle.require_engine() is engine
    lifecycle.mark_draining()
    assert lifecycle.phase is Phase.DRAINING and not lifecycle.is_ready
    with pytest.raises(ServiceUnavailable, match="worker is draining") as caught:
        lifecycle.require_engine()
    assert caught.value.code == "SERVICE_UNAVAILABLE"


def test_cannot_become_ready_twice_or_after_draining() -> None:
    lifecycle = WorkerLifecycle()
    lifecycle.mark_ready(FakeEngine())
    with pytest.raises(RuntimeError):
        lifecycle.mark_ready(FakeEngine())
    draining = WorkerLifecycle()
    draining.mark_draining()
    with pytest.raises(RuntimeError):
        draining.mark_ready(FakeEngine())


def test_failed_stays_failed() -> None:
    lifecycle = WorkerLifecycle()
    lifecycle.mark_failed()
    lifecycle.mark_draining()
    assert lifecycle.phase is Phase.FAILED
    with pytest.raises(ServiceUnavailable, match="worker is failed"):
        lifecycle.require_engine()
