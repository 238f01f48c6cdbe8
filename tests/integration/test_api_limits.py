"""Per-license limits (api_server.limits) against a real redis-server.

Each test drives time with a fake clock (except where two clients race on the real one) and uses a
license id of its own, so tests share the session's Redis without interfering.
"""

from __future__ import annotations

import asyncio
import math
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from api_server.limits import DEFAULT_LIMITS, Lease, LicenseLimiter, RateLimited
from oyez.errors import OyezError

T = TypeVar("T")

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z: far enough from a UTC midnight for minute-scale tests
HIGH = 1_000_000  # a limit the test never reaches


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_license() -> str:
    return f"lic-{uuid.uuid4().hex}"


def run_with_client(url: str, body: Callable[[redis.Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        client = redis.Redis.from_url(url, decode_responses=True)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


async def refusal(limiter: LicenseLimiter, license_id: str, limits: Mapping[str, float]) -> RateLimited:
    with pytest.raises(RateLimited) as info:
        await limiter.admit(license_id, limits)
    return info.value


def test_requests_per_minute_boundary_and_retry_after(redis_server: str) -> None:
    async def body(client: redis.Redis) -> None:
        clock = FakeClock()
        limiter = LicenseLimiter(client, clock=clock)
        lic = new_license()
        limits = {"requests_per_minute": 60, "concurrent_requests": HIGH, "audio_hours_per_day": HIGH}
        for i in range(60):  # t0, t0+0.5, ..., t0+29.5
            clock.now = T0 + i * 0.5
            await limiter.release(await limiter.admit(lic, limits))
        clock.now = T0 + 42.3
        refused = await refusal(limiter, lic, limits)
        # The oldest request (t0) leaves the window at t0+60: ceil(17.7) s from now.
        assert refused.limit == "requests_per_minute"
        assert refused.retry_after == 18
        assert 1 <= refused.retry_after <= 60
        assert refused.message == (
            "Rate limit exceeded: 60 requests per minute for this license; retry in 18 s"
        )
        assert (await limiter.usage(lic))["requests_last_minute"] == 60

    run_with_client(redis_server, body)


def test_sliding_window_frees_after_sixty_seconds(redis_server: str) -> None:
    async def body(client: redis.Redis) -> None:
        clock = FakeClock()
        limiter = LicenseLimiter(client, clock=clock)
        lic = new_license()
        limits = {"requests_per_minute": 60, "concurrent_requests": HIGH}
        for _ in range(30):
            await limiter.release(await limiter.admit(lic, limits))
        clock.now = T0 + 30
        for _ in range(30):
            await limiter.release(await limiter.admit(lic, limits))

        clock.now = T0 + 59.999
        assert (await refusal(limiter, lic, limits)).retry_after == 1

        clock.now = T0 + 60  # the first 30 leave the window (it is (now-60, now]); the rest stay
        for _ in range(30):
            await limiter.release(await limiter.admit(lic, limits))
        refused = await refusal(limiter, lic, limits)
        assert refused.retry_after == 30  # the batch admitted at t0+30 leaves at t0+90
        assert (await limiter.usage(lic))["requests_last_minute"] == 60

    run_with_client(redis_server, body)


def test_refused_requests_do_not_consume_quota(redis_server: str) -> None:
    async def body(client: redis.Redis) -> None:
        clock = FakeClock()
        limiter = LicenseLimiter(client, clock=clock)
        lic = new_license()
        limits = {"requests_per_minute": 3, "concurrent_requests": HIGH}
        for _ in range(3):
            await limiter.admit(lic, limits)
        for second in range(1, 60):
            clock.now = T0 + second
            await refusal(limiter, lic, limits)
            await refusal(limiter, lic, limits)
        assert (await limiter.usage(lic))["requests_last_minute"] == 3
        # Had the 118 refusals counted, the window would still be full at t0+60.
        clock.now = T0 + 60
        leases = [await limiter.admit(lic, limits) for _ in range(3)]
        assert len({lease.token for lease in leases}) == 3
        assert (await refusal(limiter, lic, limits)).retry_after == 60

    run_with_client(redis_server, body)


def test_concurrency_limit_and_release(redis_server: str) -> None:
    async def body(client: redis.Redis) -> None:
        limiter = LicenseLimiter(client, clock=FakeClock())
        lic = new_license()
        limits = {"requests_per_minute": HIGH, "concurrent_requests": 2}
        first = await limiter.admit(lic, limits)
        second = await limiter.admit(lic, limits)
        assert first.license_id == lic
        assert first.token != second.token
        refused = await refusal(limiter, lic, limits)
        assert refused.limit == "concurrent_requests"
        assert refused.retry_after == 1
        assert refused.message == (
            "Concurrency limit exceeded: 2 concurrent requests for this license; retry in 1 s"
        )
        assert (await limiter.usage(lic))["concurrent"] == 2

        await limiter.release(first)
        assert (await limiter.usage(lic))["concurrent"] == 1
        third = await limiter.admit(lic, limits)
        assert isinstance(third, Lease)
        assert (await refusal(limiter, lic, limits)).limit == "concurrent_requests"

    run_with_client(redis_server, body)


def test_release_is_idempotent(redis_server: str) -> None:
    async def body(client: redis.Redis) -> None:
        limiter = LicenseLimiter(client, clock=FakeClock())
        lic = new_license()
        limits = {"requests_per_minute": HIGH, "concurrent_requests": 2}
        first = await limiter.admit(lic, limits)
        await limiter.admit(lic, limits)
        for _ in range(3):  # releasing again must not free the other holder's slot
            await limiter.release(first)
        assert (await limiter.usage(lic))["concurrent"] == 1
        await limiter.admit(lic, limits)
        assert (await refusal(limiter, lic, limits)).limit == "concurrent_requests"
        await limiter.release(Lease(license_id=new_license(), token="never-admitted"))

    run_with_client(redis_server, body)


def test_expired_lease_frees_the_slot_of_a_crashed_holder(redis_server: str) -> None:
    async def body(client: redis.Redis) -> None:
        clock = FakeClock()
        limiter = LicenseLimiter(client, clock=clock, lease_ttl_s=30)
        lic = new_license()
        limits = {"requests_per_minute": HIGH, "concurrent_requests": 1}
        await limiter.admit(lic, limits)  # its replica "crashes": never released
        clock.now = T0 + 29.9
        assert (await refusal(limiter, lic, limits)).limit == "concurrent_requests"
        assert (await limiter.usage(lic))["concurrent"] == 1
        clock.now = T0 + 30.001
        assert (await limiter.usage(lic))["concurrent"] == 0
        lease = await limiter.admit(lic, limits)
        assert (await limiter.usage(lic))["concurrent"] == 1
        await limiter.release(lease)
        assert (await limiter.usage(lic))["concurrent"] == 0

    run_with_client(redis_server, body)


def test_audio_hours_per_day(redis_server: str) -> None:
    async def body(client: redis.Redis) -> None:
        late_evening = datetime(2024, 3, 10, 23, 0, tzinfo=UTC).timestamp()
        clock = FakeClock(late_evening)
        limiter = LicenseLimiter(client, clock=clock)
        lic = new_license()
        limits = {"requests_per_minute": HIGH, "concurrent_requests": HIGH, "audio_hours_per_day": 1}
        await limiter.record_audio(lic, 1800.25)
        await limiter.admit(lic, limits)
        await limiter.record_audio(lic, 1799.75)
        await limiter.record_audio(lic, 0)  # ignored
        await limiter.record_audio(lic, -5)  # ignored
        assert (await limiter.usage(lic))["audio_seconds_today"] == pytest.approx(3600)

        refused = await refusal(limiter, lic, limits)
        assert refused.limit == "audio_hours_per_day"
        assert refused.retry_after == 3600  # to 2024-03-11T00:00:00Z
        assert refused.message == (
            "Audio limit exceeded: 1 audio hours per day for this license; retry in 3600 s"
        )
        clock.now = late_evening + 1234.5
        assert (await refusal(limiter, lic, limits)).retry_after == math.ceil(3600 - 1234.5)

        clock.now = datetime(2024, 3, 11, 0, 0, tzinfo=UTC).timestamp()  # a new UTC day
        assert (await limiter.usage(lic))["audio_seconds_today"] == 0
        assert isinstance(await limiter.admit(lic, limits), Lease)

    run_with_client(redis_server, body)


def test_defaults_apply_when_limit_keys_are_missing(redis_server: str) -> None:
    assert dict(DEFAULT_LIMITS) == {
        "requests_per_minute": 60,
        "concurrent_requests": 10,
        "audio_hours_per_day": 100,
    }

    async def body(client: redis.Redis) -> None:
        limiter = LicenseLimiter(client, clock=FakeClock())
        lic = new_license()
        leases = [await limiter.admit(lic, {}) for _ in range(10)]
        assert (await refusal(limiter, lic, {})).limit == "concurrent_requests"
        for lease in leases:
            await limiter.release(lease)
        for _ in range(50):  # 10 + 50 = 60 requests in the window
            await limiter.release(await limiter.admit(lic, {}))
        refused = await refusal(limiter, lic, {"concurrent_requests": 10})
        assert refused.limit == "requests_per_minute"
        assert "60 requests per minute" in refused.message

        other = new_license()
        await limiter.record_audio(other, 100 * 3600 - 1)
        await limiter.release(await limiter.admit(other, {}))
        await limiter.record_audio(other, 1)
        assert (await refusal(limiter, other, {})).limit == "audio_hours_per_day"

    run_with_client(redis_server, body)


def test_zero_allows_nothing_and_negative_does_not_crash(redis_server: str) -> None:
    async def body(client: redis.Redis) -> None:
        limiter = LicenseLimiter(client, clock=FakeClock())
        refused = await refusal(limiter, new_license(), {"requests_per_minute": 0})
        assert (refused.limit, refused.retry_after) == ("requests_per_minute", 60)
        refused = await refusal(limiter, new_license(), {"concurrent_requests": 0})
        assert refused.limit == "concurrent_requests"
        refused = await refusal(limiter, new_license(), {"audio_hours_per_day": 0})
        assert refused.limit == "audio_hours_per_day"
        refused = await refusal(limiter, new_license(), {"concurrent_requests": -3})
        assert refused.limit == "concurrent_requests"
        # A fractional limit compares as a number: 2.5 per minute admits three.
        lic = new_license()
        for _ in range(3):
            await limiter.admit(lic, {"requests_per_minute": 2.5})
        assert (await refusal(limiter, lic, {"requests_per_minute": 2.5})).limit == "requests_per_minute"

    run_with_client(redis_server, body)


def test_two_clients_racing_never_overshoot(redis_server: str) -> None:
    async def main() -> None:
        clients = [redis.Redis.from_url(redis_server, decode_responses=True) for _ in range(2)]
        try:
            limiters = [LicenseLimiter(client) for client in clients]  # real clock, like replicas

            async def race(license_id: str, limits: Mapping[str, float]) -> list[Lease | BaseException]:
                return await asyncio.gather(
                    *(limiters[i % 2].admit(license_id, limits) for i in range(50)),
                    return_exceptions=True,
                )

            lic = new_license()
            outcomes = await race(lic, {"requests_per_minute": HIGH, "concurrent_requests": 5})
            admitted = [o for o in outcomes if isinstance(o, Lease)]
            refused = [o for o in outcomes if isinstance(o, RateLimited)]
            assert len(admitted) == 5
            assert len(refused) == 45
            assert {r.limit for r in refused} == {"concurrent_requests"}
            assert (await limiters[0].usage(lic))["concurrent"] == 5

            lic = new_license()
            outcomes = await race(lic, {"requests_per_minute": 7, "concurrent_requests": HIGH})
            assert sum(isinstance(o, Lease) for o in outcomes) == 7
            assert sum(isinstance(o, RateLimited) for o in outcomes) == 43
            assert (await limiters[1].usage(lic))["requests_last_minute"] == 7
        finally:
            for client in clients:
                await client.aclose()

    asyncio.run(main())


def test_every_key_has_a_ttl(redis_server: str) -> None:
    async def body(client: redis.Redis) -> None:
        clock = FakeClock()
        limiter = LicenseLimiter(client, clock=clock, lease_ttl_s=330)
        lic = new_license()
        limits = {"requests_per_minute": 1, "concurrent_requests": 5}
        await limiter.admit(lic, limits)
        await refusal(limiter, lic, limits)
        await limiter.record_audio(lic, 12.5)

        keys = sorted([key async for key in client.scan_iter(match=f"oyez:limits:*{lic}*")])
        assert keys == [
            f"oyez:limits:{{{lic}}}:audio:2023-11-14",
            f"oyez:limits:{{{lic}}}:leases",
            f"oyez:limits:{{{lic}}}:rpm",
        ]
        audio_key, leases_key, window_key = keys
        ttls = {
            "audio": await client.ttl(audio_key),
            "leases": await client.ttl(leases_key),
            "rpm": await client.ttl(window_key),
        }
        assert all(ttl > 0 for ttl in ttls.values()), ttls
        assert 0 < ttls["rpm"] <= 61
        assert 0 < ttls["leases"] <= 331
        assert 2 * 86_400 - 10 < ttls["audio"] <= 2 * 86_400

    run_with_client(redis_server, body)


def test_rate_limited_to_dict_shape() -> None:
    error = RateLimited(
        "Rate limit exceeded: 1 requests per minute", retry_after=12, limit="requests_per_minute"
    )
    assert isinstance(error, OyezError)
    assert error.to_dict() == {
        "error": "Rate limit exceeded: 1 requests per minute",
        "code": "RATE_LIMIT_EXCEEDED",
        "retry_after": 12,
    }
    assert (error.retry_after, error.limit, str(error)) == (12, "requests_per_minute", error.message)
    assert RateLimited("x", retry_after=0).to_dict()["retry_after"] == 1


def test_redis_errors_propagate() -> None:
    with socket.socket() as sock:  # a port that nothing listens on once the socket closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def main() -> None:
        client = redis.Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        limiter = LicenseLimiter(client)
        try:
            with pytest.raises(RedisConnectionError):
                await limiter.admit(new_license(), {})
            with pytest.raises(RedisConnectionError):
                await limiter.record_audio(new_license(), 1.0)
        finally:
            await client.aclose()

    asyncio.run(main())
