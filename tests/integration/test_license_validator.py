"""The proxy's validator and usage reporter against the real reference license server code, with an
injected clock: the grace period is walked through in hours of simulated time, not real waiting.

The server app runs in-process behind httpx's ASGI transport, wrapped in a switch that makes it
unreachable on demand (the process-level tests in test_license_processes.py use real sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from license_proxy.clock import ManualClock
from license_proxy.keys import (
    GracePeriodExpired,
    KeyForged,
    KeyRevoked,
    LicenseExpired,
    LicenseMismatch,
    LicenseUnconfirmed,
    TrustPolicy,
)
from license_proxy.metrics import ProxyMetrics
from license_proxy.reporter import UsageReporter
from license_proxy.server.app import build_server_app
from license_proxy.server.store import LicenseServerStore
from license_proxy.spool import UsageSpool
from license_proxy.state_store import ValidationStore
from license_proxy.upstream_client import LicenseServerClient
from license_proxy.usage_schema import UsageEventIn, to_upstream_event
from license_proxy.validator import LicenseValidator
from tests.license_support import dev_key

START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = TrustPolicy.from_config([], production=False)


class SwitchableTransport(httpx.AsyncBaseTransport):
    """The server's ASGI app, or a connection error while ``down``; records what was sent."""

    def __init__(self, app: object) -> None:
        self._inner = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        self.down = False
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused (simulated outage)", request=request)
        await request.aread()
        self.sent.append(request)
        return await self._inner.handle_async_request(request)


@dataclass
class World:
    clock: ManualClock
    store: LicenseServerStore
    transport: SwitchableTransport
    state_dir: Path
    key: str

    def validator(self, metrics: ProxyMetrics | None = None) -> LicenseValidator:
        return LicenseValidator(
            license_key=self.key,
            policy=POLICY,
            store=ValidationStore(self.state_dir, self.key),
            client=LicenseServerClient("http://license-server.test", transport=self.transport),
            clock=self.clock,
            grace=timedelta(hours=24),
            metrics=metrics or ProxyMetrics(),
            retry_initial_s=0.01,
            retry_max_s=0.02,
            startup_timeout_s=0.05,
        )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = ManualClock(START)
    store = LicenseServerStore(tmp_path / "server.db")
    transport = SwitchableTransport(build_server_app(store=store, policy=POLICY, clock=clock))
    yield World(clock, store, transport, tmp_path / "state", dev_key(now=START - timedelta(days=1), days=60))
    store.close()


def test_grace_period_walkthrough(world: World, log_lines: io.StringIO) -> None:
    metrics = ProxyMetrics()
    validator = world.validator(metrics)

    async def scenario() -> None:
        status = await validator.startup()
        assert status.valid and not status.grace_active
        assert validator.check_presented(world.key)[0].license_id == validator.terms.license_id

        world.transport.down = True
        world.clock.advance(timedelta(minutes=30))
        assert await validator.revalidate() is False
        status = validator.status()
        assert status.valid and status.grace_active and status.grace_remaining_hours == 23
        assert metrics.grace_period_active._value.get() == 1
        log = log_lines.getvalue()
        assert "WARNING: Connection to license server failed, using cached validation" in log
        assert "WARNING: Grace period active (23h remaining)" in log
        _, presented_status = validator.check_presented(world.key)  # still served from the cache
        assert presented_status.grace_active

        world.clock.advance(timedelta(hours=22, minutes=45))  # 45 min left
        validator.tick()
        validator.tick()
        assert log_lines.getvalue().count("Grace period expires in 1 hour") == 1

        world.clock.advance(timedelta(minutes=45))
        validator.tick()
        validator.tick()
        log = log_lines.getvalue()
        assert log.count("ERROR: Grace period expired") == 1
        assert log.count("CRITICAL: Service will stop accepting requests") == 1
        with pytest.raises(GracePeriodExpired) as caught:
            validator.check_presented(world.key)
        assert caught.value.to_dict()["code"] == "LICENSE_EXPIRED"
        assert caught.value.expires_at == START + timedelta(hours=24)
        assert metrics.license_valid._value.get() == 0
        assert metrics.grace_period_active._value.get() == 0

        world.transport.down = False  # the server answers again: recovery without restart
        assert await validator.revalidate() is True
        assert validator.status().valid and not validator.status().grace_active
        assert validator.check_presented(world.key)
        assert "Connection to license server restored; license validated" in log_lines.getvalue()
        assert metrics.license_valid._value.get() == 1

    asyncio.run(scenario())


def test_restart_inside_grace_keeps_serving_and_after_grace_refuses(world: World) -> None:
    async def scenario() -> None:
        await world.validator().startup()  # one successful check, persisted
        world.transport.down = True
        world.clock.advance(timedelta(hours=20))
        restarted = world.validator()
        status = await restarted.startup()
        assert status.valid and status.grace_active and status.grace_remaining_hours == 4

        # Past the grace period it still starts (so callers get 403, not connection errors) and
        # recovers by itself once the server answers.
        world.clock.advance(timedelta(hours=5))
        late = world.validator()
        status = await late.startup()
        assert isinstance(status.error, GracePeriodExpired)
        with pytest.raises(GracePeriodExpired):
            late.check_presented(world.key)
        world.transport.down = False
        assert await late.revalidate() is True
        assert late.check_presented(world.key)

    asyncio.run(scenario())


def test_no_cache_and_no_server_refuses_to_start(world: World) -> None:
    world.transport.down = True
    with pytest.raises(LicenseUnconfirmed, match="never confirmed"):
        asyncio.run(world.validator().startup())


def test_a_tampered_cache_does_not_extend_grace(world: World) -> None:
    async def scenario() -> None:
        await world.validator().startup()
        world.transport.down = True
        world.clock.advance(timedelta(hours=30))
        cache = world.state_dir / "validation.json"
        cache.write_text(cache.read_text().replace(START.isoformat()[:10], "2026-11-26"))
        with pytest.raises(LicenseUnconfirmed):
            await world.validator().startup()

    asyncio.run(scenario())


def test_revocation_takes_effect_on_revalidation_and_can_be_lifted(world: World) -> None:
    async def scenario() -> None:
        validator = world.validator()
        await validator.startup()
        world.store.revoke(validator.terms.license_id, "contract ended", world.clock.now())
        assert await validator.revalidate() is True
        with pytest.raises(KeyRevoked, match="contract ended"):
            validator.check_presented(world.key)
        # Revocation is persisted: a restart while the server is down does not forget it.
        world.transport.down = True
        with pytest.raises(KeyRevoked):
            await world.validator().startup()
        world.transport.down = False
        world.store.reinstate(validator.terms.license_id)
        assert await validator.revalidate() is True
        assert validator.check_presented(world.key)

    asyncio.run(scenario())


def test_revoked_at_startup_refuses_to_start(world: World) -> None:
    validator = world.validator()
    from license_proxy.keys import verify_key

    license_id = verify_key(world.key, POLICY, START).license_id
    world.store.revoke(license_id, "fraud", START)
    with pytest.raises(KeyRevoked, match="fraud"):
        asyncio.run(validator.startup())


def test_presented_keys_must_be_genuine_current_and_of_this_license(world: World) -> None:
    validator = world.validator()
    asyncio.run(validator.startup())
    license_id = validator.terms.license_id
    calls_before = len(world.transport.sent)
    for _ in range(50):
        validator.check_presented(world.key)
    assert len(world.transport.sent) == calls_before  # answered from the cache, no upstream call
    # Another key of the same license (a re-issue with other limits) is accepted with its own terms.
    reissued = dev_key(now=START, license_id=license_id, limits={"requests_per_minute": 5})
    assert validator.check_presented(reissued)[0].limits["requests_per_minute"] == 5
    with pytest.raises(LicenseMismatch, match=license_id):
        validator.check_presented(dev_key(now=START))
    with pytest.raises(KeyForged):
        validator.check_presented(world.key[:-5] + ("AAAAA" if world.key[-5:] != "AAAAA" else "BBBBB"))
    short_lived = dev_key(now=START - timedelta(days=2), days=1, license_id=license_id)
    with pytest.raises(LicenseExpired):
        validator.check_presented(short_lived)


def _events(n: int, offset: int = 0) -> list[UsageEventIn]:
    return [
        UsageEventIn(
            request_id=f"req_{offset + i}",
            timestamp=START,
            audio_seconds=2.0,
            features=("batch", "timestamps"),
            response_code=200,
            component="api_server",
        )
        for i in range(n)
    ]


def test_usage_survives_an_outage_and_is_counted_exactly_once(world: World, tmp_path: Path) -> None:
    async def scenario() -> None:
        validator = world.validator()
        await validator.startup()
        spool = UsageSpool(tmp_path / "usage.db")
        metrics = ProxyMetrics()
        reporter = UsageReporter(
            spool=spool,
            client=LicenseServerClient("http://license-server.test", transport=world.transport),
            license_id=validator.terms.license_id,
            key_digest=validator.digest,
            clock=world.clock,
            metrics=metrics,
            batch_max=1000,
            retry_initial_s=0.01,
            retry_max_s=0.02,
        )
        salt = spool.salt()
        spool.add([to_upstream_event(e, salt) for e in _events(2500)])
        world.transport.down = True
        assert await reporter.flush(give_up_after_s=0.1) is False
        assert spool.depth() == 2500 and world.store.usage_totals() == []

        world.transport.down = False
        assert await reporter.flush() is True
        totals = world.store.usage_totals()
        assert len(totals) == 1 and totals[0].events == 2500 and totals[0].batches == 3
        assert totals[0].audio_seconds == pytest.approx(5000.0)
        assert spool.depth() == 0 and metrics.batches_sent._value.get() == 3

        # A re-posted event and a replayed batch are both recognised.
        assert spool.add([to_upstream_event(e, salt) for e in _events(1)]) == (0, 1)
        replay = next(r for r in world.transport.sent if r.url.path == "/v1/usage")
        async with httpx.AsyncClient(transport=world.transport, base_url="http://license-server.test") as c:
            response = await c.post("/v1/usage", content=replay.content, headers=dict(replay.headers))
        assert response.json()["duplicate"] is True
        assert world.store.usage_totals()[0].events == 2500
        spool.close()

    asyncio.run(scenario())


def test_usage_uploads_are_signed_and_carry_no_key(world: World, tmp_path: Path) -> None:
    async def scenario() -> None:
        validator = world.validator()
        await validator.startup()
        spool = UsageSpool(tmp_path / "usage.db")
        reporter = UsageReporter(
            spool=spool,
            client=LicenseServerClient("http://license-server.test", transport=world.transport),
            license_id=validator.terms.license_id,
            key_digest="00" * 32,  # a wrong signing secret: the server must refuse
            clock=world.clock,
            metrics=ProxyMetrics(),
            retry_initial_s=0.01,
        )
        spool.add([to_upstream_event(e, spool.salt()) for e in _events(3)])
        assert await reporter.flush(give_up_after_s=0.1) is False  # 401 is retried, not dropped
        assert spool.depth() == 3 and world.store.usage_totals() == []
        for request in world.transport.sent:
            if request.url.path == "/v1/usage":
                assert world.key.encode() not in request.content
                assert all(world.key not in value for value in request.headers.values())
        spool.close()

    asyncio.run(scenario())


def test_a_full_state_volume_stops_neither_revalidation_nor_the_reporter(
    world: World, tmp_path: Path, log_lines: io.StringIO
) -> None:
    """ENOSPC on the proxy's state volume: the license check still counts (saving it is logged), and
    the reporter loop outlives spool write errors and delivers once the spool is writable again."""

    async def scenario() -> None:
        validator = world.validator()
        await validator.startup()

        def disk_full(_cached: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(validator._store, "save", disk_full)
            assert await validator.revalidate() is True
        assert "Could not save the license check" in log_lines.getvalue()

        spool = UsageSpool(tmp_path / "usage.db")
        reporter = UsageReporter(
            spool=spool,
            client=LicenseServerClient("http://license-server.test", transport=world.transport),
            license_id=validator.terms.license_id,
            key_digest=validator.digest,
            clock=world.clock,
            metrics=ProxyMetrics(),
            flush_interval_s=0.02,
            retry_initial_s=0.01,
            retry_max_s=0.02,
        )
        spool.add([to_upstream_event(e, spool.salt()) for e in _events(3)])
        failures = 0
        real_seal = spool.seal

        def seal_on_a_full_disk(*args: Any, **kwargs: Any) -> str | None:
            nonlocal failures
            if failures < 2:
                failures += 1
                raise sqlite3.OperationalError("database or disk is full")
            return real_seal(*args, **kwargs)

        spool.seal = seal_on_a_full_disk  # type: ignore[method-assign]
        running = asyncio.create_task(reporter.run())
        try:
            for _ in range(500):
                if world.store.usage_totals():
                    break
                await asyncio.sleep(0.01)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        assert failures == 2
        assert world.store.usage_totals()[0].events == 3
        assert "Usage spool not writable; delivery resumes when it is" in log_lines.getvalue()
        spool.close()

    asyncio.run(scenario())
