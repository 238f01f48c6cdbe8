"""Registry records and behaviour when Redis cannot be reached (the real-Redis tests are integration)."""

from __future__ import annotations

import asyncio
import socket

import structlog

from asr_worker.service.registry import WorkerRecord, WorkerRegistry, worker_key

RECORD = WorkerRecord(
    address="asr-0:2233",
    model="whisper-base",
    languages=("en", "de"),
    capacity=128,
    in_flight=3,
    queued=1,
    state="ready",
    started_at=1700000000.0,
)


def test_record_fields_are_the_documented_strings() -> None:
    assert RECORD.to_fields(1700000005.25) == {
        "address": "asr-0:2233",
        "model": "whisper-base",
        "languages": "en,de",
        "capacity": "128",
        "in_flight": "3",
        "queued": "1",
        "state": "ready",
        "started_at": "1700000000.000",
        "heartbeat_at": "1700000005.250",
    }
    assert worker_key("asr-0") == "oyez:worker:asr-0"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_redis_warns_once_and_never_raises() -> None:
    async def scenario() -> None:
        registry = WorkerRegistry.from_url(
            f"redis://127.0.0.1:{_closed_port()}/0", "asr-0", lambda: RECORD, heartbeat_s=0.01, ttl_s=1
        )
        with structlog.testing.capture_logs() as logs:
            await registry.start()
            assert await registry.heartbeat() is False
            assert await registry.heartbeat() is False
            await registry.deregister()
        warnings = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
        assert sum("Redis registry unavailable" in w for w in warnings) == 1
        assert any("Could not deregister" in w for w in warnings)

    asyncio.run(asyncio.wait_for(scenario(), 10))
