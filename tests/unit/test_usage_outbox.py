"""Usage events from the API: the memory buffer, the Redis outbox (a real redis-server) and the orphan
sweep. The license proxy is an httpx mock here (the edge); tests/integration/test_usage_durability.py
runs the real one with kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as redis

from api_server.metrics import ApiMetrics
from api_server.usage import UsageSender, usage_event
from api_server.usage_outbox import OUTBOX_KEY, UsageOutbox
from tests.service_process import free_port


@pytest.fixture
def outbox_url(redis_server: str) -> str:
    return redis_server.rsplit("/", 1)[0] + "/7"


class Proxy:
    """Records the events posted to ``/v1/usage``; answers ``status`` (or fails to connect)."""

    def __init__(self) -> None:
        self.status = 202
        self.reachable = True
        self.received: list[dict[str, Any]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        if not self.reachable:
            raise httpx.ConnectError("connection refused", request=request)
        if self.status == 202:
            self.received += json.loads(request.content)["events"]
        return httpx.Response(self.status, json={})

    def ids(self) -> list[str]:
        return [e["request_id"] for e in self.received]


def _sender(proxy: Proxy, client: redis.Redis | None, **options: Any) -> UsageSender:
    return UsageSender(
        "http://proxy.test",
        "key",
        ApiMetrics(),
        flush_s=0.05,
        timeout_s=2.0,
        outbox=UsageOutbox(client) if client is not None else None,
        transport=httpx.MockTransport(proxy.handler),
        **options,
    )


def _event(n: int) -> dict[str, Any]:
    return usage_event(f"req_{n}", audio_seconds=1.5, features=["punctuation"], response_code=200)


def _run(url: str, scenario: Callable[[redis.Redis], Any]) -> None:
    async def main() -> None:
        client = redis.Redis.from_url(url, socket_timeout=10)
        await client.flushdb()
        try:
            await asyncio.wait_for(scenario(client), 60)  # a hang fails here, with its stack
        finally:
            await client.aclose()

    asyncio.run(main())


def test_recorded_events_are_in_the_outbox_until_the_proxy_has_them(outbox_url: str) -> None:
    proxy = Proxy()

    async def scenario(client: redis.Redis) -> None:
        sender = _sender(proxy, client)
        for n in range(3):
            await sender.record(_event(n))
        assert await client.xlen(OUTBOX_KEY) == 3
        stored = await client.xrange(OUTBOX_KEY)
        assert json.loads(stored[0][1][b"event"])["request_id"] == "req_0"
        proxy.reachable = False
        assert await sender.flush() is False
        assert sender.pending == 3 and await client.xlen(OUTBOX_KEY) == 3
        proxy.reachable = True
        assert await sender.flush() is True
        assert proxy.ids() == ["req_0", "req_1", "req_2"]
        assert sender.pending == 0 and await client.xlen(OUTBOX_KEY) == 0
        await sender.close()

    _run(outbox_url, scenario)


def test_events_a_dead_replica_left_are_sent_by_another_once_old_enough(outbox_url: str) -> None:
    proxy = Proxy()

    async def scenario(client: redis.Redis) -> None:
        dead = _sender(proxy, client)  # records, then "dies" before any flush
        for n in range(5):
            await dead.record(_event(n))
        survivor = _sender(proxy, client, orphan_age_s=0.3)
        await survivor.record(_event(99))
        assert await survivor.sweep_orphans() is True
        assert proxy.received == []  # too young: their replica may still deliver them
        await asyncio.sleep(0.35)
        proxy.reachable = False
        assert await survivor.sweep_orphans() is False  # the proxy is down: they stay
        assert await client.xlen(OUTBOX_KEY) == 6
        proxy.reachable = True
        assert await survivor.sweep_orphans() is True
        # The survivor's own event was old enough too; the proxy dedupes on the request id, so the
        # copy its flush sends later counts once upstream.
        assert sorted(proxy.ids()) == sorted([f"req_{n}" for n in range(5)] + ["req_99"])
        assert await client.xlen(OUTBOX_KEY) == 0
        assert await survivor.flush() is True
        assert await client.xlen(OUTBOX_KEY) == 0

    _run(outbox_url, scenario)


def test_a_running_sender_delivers_and_sweeps_on_its_own(outbox_url: str) -> None:
    proxy = Proxy()

    async def scenario(client: redis.Redis) -> None:
        dead = _sender(proxy, client)
        await dead.record(_event(1))
        sender = _sender(proxy, client, orphan_age_s=0.1)
        sender.start()
        await sender.record(_event(2))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (await client.xlen(OUTBOX_KEY) or len(set(proxy.ids())) < 2):
            await asyncio.sleep(0.05)
        assert set(proxy.ids()) == {"req_1", "req_2"}
        assert await client.xlen(OUTBOX_KEY) == 0
        await sender.close()

    _run(outbox_url, scenario)


def test_redis_down_keeps_events_in_memory_and_is_tried_once() -> None:
    proxy = Proxy()

    async def scenario() -> None:
        nobody = redis.Redis(port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
        sender = _sender(proxy, nobody)
        attempts = 0
        real_add = UsageOutbox.add

        async def counting_add(self: UsageOutbox, event: dict[str, Any]) -> str:
            nonlocal attempts
            attempts += 1
            return await real_add(self, event)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(UsageOutbox, "add", counting_add)
            for n in range(20):
                await sender.record(_event(n))
        # One failed write opens the circuit; the other 19 go to memory without trying Redis.
        assert attempts == 1
        assert sender.pending == 20
        assert await sender.sweep_orphans() is True  # nothing to sweep while Redis is down
        assert await sender.flush() is True
        assert proxy.ids() == [f"req_{n}" for n in range(20)]
        await sender.close()
        await nobody.aclose()

    asyncio.run(scenario())


def test_refused_batch_is_dropped_and_unreadable_outbox_entries_deleted(outbox_url: str) -> None:
    proxy = Proxy()

    async def scenario(client: redis.Redis) -> None:
        await client.xadd(OUTBOX_KEY, {"event": b"not json"})
        await client.xadd(OUTBOX_KEY, {"other": b"{}"})
        sender = _sender(proxy, client, orphan_age_s=0.01)
        await sender.record(_event(1))
        proxy.status = 400  # the proxy refuses the batch for good: it must not block later ones
        assert await sender.flush() is True
        assert sender.pending == 0
        proxy.status = 202
        await asyncio.sleep(0.05)
        assert await sender.sweep_orphans() is True
        assert await client.xlen(OUTBOX_KEY) == 0
        assert proxy.received == []

    _run(outbox_url, scenario)


def test_without_redis_events_stay_in_memory_until_delivered() -> None:
    proxy = Proxy()

    async def scenario() -> None:
        sender = _sender(proxy, None)
        await sender.record(_event(1))
        proxy.status = 503
        assert await sender.flush() is False and sender.pending == 1
        proxy.status = 202
        assert await sender.sweep_orphans() is True
        assert await sender.flush() is True and proxy.ids() == ["req_1"]

    asyncio.run(scenario())


def test_a_stream_mark_is_refreshed_replaced_and_swept_only_when_orphaned(outbox_url: str) -> None:
    proxy = Proxy()

    async def scenario(client: redis.Redis) -> None:
        sender = _sender(proxy, client, orphan_age_s=0.3)
        mark = sender.stream_mark("req_stream", ["streaming"])
        assert mark is not None and mark.refresh_s == pytest.approx(0.1)
        await mark.refresh(1.0)
        await mark.refresh(2.5)
        [(_, fields)] = await client.xrange(OUTBOX_KEY)
        assert json.loads(fields[b"event"])["audio_seconds"] == 2.5, "one entry: the latest"

        # A live stream: kept fresh, so a sweep never takes it.
        seconds = iter(range(3, 100))
        keeper = asyncio.create_task(mark.keep(lambda: float(next(seconds))))
        await asyncio.sleep(0.5)
        assert await sender.sweep_orphans() is True and proxy.received == []
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        # The stream ends normally: the real event is recorded, the mark dropped.
        await sender.record(
            usage_event("req_stream", audio_seconds=9.0, features=["streaming"], response_code=101)
        )
        await mark.drop()
        assert await client.xlen(OUTBOX_KEY) == 1
        assert await sender.flush() is True and await client.xlen(OUTBOX_KEY) == 0

        # Its replica dies mid-stream: the last mark is swept and bills the audio so far as 499.
        orphan = sender.stream_mark("req_cut", ["streaming"])
        assert orphan is not None
        await orphan.refresh(4.0)
        await asyncio.sleep(0.35)
        assert await sender.sweep_orphans() is True
        cut = [e for e in proxy.received if e["request_id"] == "req_cut"]
        assert [(e["audio_seconds"], e["response_code"]) for e in cut] == [(4.0, 499)]
        assert _sender(proxy, None).stream_mark("req_x", []) is None, "no Redis, no mark"

    _run(outbox_url, scenario)


def test_close_returns_even_if_a_cancellation_is_swallowed() -> None:
    """Python 3.11's asyncio.wait_for can turn a cancellation into a TimeoutError, which the sender
    ignores as a Redis failure; close() and StreamUsageMark.stop() must still end the loops."""
    proxy = Proxy()

    class Swallowing(UsageSender):
        async def flush(self) -> bool:
            with contextlib.suppress(asyncio.CancelledError):  # lost, as wait_for can lose it
                await asyncio.sleep(0.2)
            return True

    async def scenario() -> None:
        sender = Swallowing(
            "http://proxy.test",
            "key",
            ApiMetrics(),
            flush_s=0.01,
            timeout_s=2.0,
            transport=httpx.MockTransport(proxy.handler),
        )
        sender.start()
        await asyncio.sleep(0.05)
        await asyncio.wait_for(sender.close(), 10)
        assert sender._task is not None and sender._task.done()

    asyncio.run(scenario())
