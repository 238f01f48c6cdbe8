"""Per-license limits, enforced atomically across every API replica that shares one Redis.

A license's terms carry three limits (a missing key, or ``None``, means the default in
:data:`DEFAULT_LIMITS`):

``requests_per_minute``
    Requests admitted in any sliding 60 s window.
``concurrent_requests``
    Requests admitted and not yet released (and whose lease has not expired).
``audio_hours_per_day``
    Audio transcribed per UTC calendar day, as reported by :meth:`LicenseLimiter.record_audio`.

There is no "unlimited": a limit of ``0`` allows nothing (a negative or NaN value is treated as ``0``,
failing closed). Fractional limits are honoured as they compare: ``requests_per_minute=2.5`` admits
three requests per window. Checks run in the order above and the first that fails refuses the
request with :class:`RateLimited`, which carries the ``Retry-After`` in seconds:

* audio: seconds until the next UTC midnight;
* requests per minute: ``ceil(oldest request in the window + 60 - now)``, at least 1;
* concurrency: 1 (a slot may free at any moment).

Key layout (``P`` is the ``prefix``, default ``oyez:limits:``; ``L`` the license id, wrapped in a
``{hash tag}`` so every key of one license lands on the same Redis Cluster slot):

``P{L}:rpm`` (ZSET), TTL 61 s, renewed at each admission
    One member per admitted request (its unique token), scored by the admission time. Members at
    or before ``now - 60`` are trimmed before counting, so the window is ``(now - 60, now]``.
``P{L}:leases`` (ZSET), TTL ``ceil(lease_ttl_s) + 1``, renewed at each admission
    One member per request holding a concurrency slot (the :class:`Lease` token), scored by the
    lease's expiry ``now + lease_ttl_s``. Expired members are trimmed before counting, so leases of
    a replica that crashed without releasing free themselves after ``lease_ttl_s``. Leases are not
    renewed: ``lease_ttl_s`` must exceed the longest request the server lets run.
``P{L}:audio:YYYY-MM-DD`` (STRING, float seconds), TTL 2 days
    Audio seconds recorded on that UTC day (``INCRBYFLOAT``).

:meth:`LicenseLimiter.admit` trims, checks and (only when every check passes) records the request
and its lease in one Lua script call, so two replicas can never both take the last slot and a
refused request consumes no quota. "Now" is the caller's ``clock()`` passed into the script (never
Redis ``TIME``), so tests control time; replicas are expected to run NTP-synchronised clocks, and a
skew of a few seconds only shifts when a slot frees by that much.

Redis failures (:class:`redis.exceptions.RedisError`, including its ``ConnectionError`` and
``TimeoutError``, and :class:`OSError`) propagate from every method unchanged: whether to fail open
(serve without limits) or closed (refuse) while Redis is down is the caller's decision.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import redis.asyncio as redis

from oyez.errors import OyezError

REQUESTS_PER_MINUTE: Final = "requests_per_minute"
CONCURRENT_REQUESTS: Final = "concurrent_requests"
AUDIO_HOURS_PER_DAY: Final = "audio_hours_per_day"

DEFAULT_LIMITS: Final[Mapping[str, float]] = {
    REQUESTS_PER_MINUTE: 60,
    CONCURRENT_REQUESTS: 10,
    AUDIO_HOURS_PER_DAY: 100,
}

WINDOW_S: Final = 60
"""Length of the sliding requests-per-minute window, in seconds."""
_WINDOW_KEY_TTL_S: Final = WINDOW_S + 1
_AUDIO_KEY_TTL_S: Final = 2 * 86_400
_SECONDS_PER_DAY: Final = 86_400

# Runs atomically inside Redis: nothing else touches these keys between the checks and the writes.
# Returns a two-element array {verdict, detail}: verdict "ok" when admitted, else the name of the
# limit that refused; detail is, for requests_per_minute, the score (admission time) of the oldest
# request still in the window, from which the caller computes Retry-After; otherwise "".
_ADMIT_LUA: Final = """
-- KEYS[1]  window ZSET   member: request token, score: admission time (s)
-- KEYS[2]  leases ZSET   member: lease token,   score: lease expiry time (s)
-- KEYS[3]  today's audio seconds (STRING written by INCRBYFLOAT); only read here
-- ARGV[1]  now (s, the caller's clock)      ARGV[2]  this request's token
-- ARGV[3]  requests per window limit        ARGV[4]  concurrent requests limit
-- ARGV[5]  audio seconds per day limit      ARGV[6]  lease ttl (s)
-- ARGV[7]  window length (s)                ARGV[8]  window key TTL (s, integer)
-- ARGV[9]  leases key TTL (s, integer)
local now = tonumber(ARGV[1])

-- Forget what no longer counts: requests that left the window (now - window, now], and leases
-- whose expiry has passed (a replica that crashed without releasing frees its slots this way).
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[7]))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)

-- 1. Audio hours per day (GET answers false for a missing key: nothing recorded today).
local audio_used = tonumber(redis.call('GET', KEYS[3]) or '0')
if audio_used >= tonumber(ARGV[5]) then
  return {'audio_hours_per_day', ''}
end

-- 2. Requests per minute. The oldest score tells the caller when the next slot frees; an empty
-- window (only possible with a limit <= 0) answers "now", i.e. a full window from now.
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {'requests_per_minute', oldest[2] or ARGV[1]}
end

-- 3. Concurrent requests.
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return {'concurrent_requests', ''}
end

-- Every check passed: count the request in the window, take a slot, and let idle licenses'
-- keys expire on their own (each EXPIRE outlives every member the key now holds).
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('EXPIRE', KEYS[2], ARGV[9])
return {'ok', ''}
"""


class RateLimited(OyezError):
    """A per-license limit refuses the request; ``retry_after`` says when to try again (seconds).

    ``limit`` names the limit that refused: ``requests_per_minute``, ``concurrent_requests`` or
    ``audio_hours_per_day``. :meth:`to_dict` gives ``{"error", "code", "retry_after"}``.
    """

    code = "RATE_LIMIT_EXCEEDED"

    def __init__(self, message: str, *, retry_after: int, limit: str | None = None) -> None:
        retry_after = max(1, math.ceil(retry_after))
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after
        self.limit = limit


@dataclass(frozen=True)
class Lease:
    """Proof of one admitted request; hand it back to :meth:`LicenseLimiter.release` when done."""

    license_id: str
    token: str


class LicenseLimiter:
    """Admits requests against a license's limits, shared by every replica on the same Redis.

    Every method lets Redis failures (``redis.exceptions.RedisError`` and ``OSError``) propagate:
    the caller chooses to fail open or closed.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "oyez:limits:",
        lease_ttl_s: float = 330.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (math.isfinite(lease_ttl_s) and lease_ttl_s > 0):
            raise ValueError(f"lease_ttl_s must be a positive number of seconds, not {lease_ttl_s!r}")
        self._client = client
        self._prefix = prefix
        self._lease_ttl_s = float(lease_ttl_s)
        self._leases_key_ttl_s = math.ceil(lease_ttl_s) + 1
        self._clock = clock
        self._admit_script = client.register_script(_ADMIT_LUA)

    async def admit(self, license_id: str, limits: Mapping[str, float]) -> Lease:
        """Admit one request for ``license_id`` or raise :class:`RateLimited`.

        Checks today's audio, the requests-per-minute window and the concurrency slots, and only if
        all pass records the request and takes a slot, all in one atomic script call. Release the
        returned lease with :meth:`release` when the request ends (or it expires after
        ``lease_ttl_s``). Redis errors propagate.
        """
        now = self._clock()
        token = uuid.uuid4().hex
        rpm = limit_value(limits, REQUESTS_PER_MINUTE)
        concurrent = limit_value(limits, CONCURRENT_REQUESTS)
        audio_hours = limit_value(limits, AUDIO_HOURS_PER_DAY)
        day, next_midnight = utc_day(now)
        reply = await self._admit_script(
            keys=[
                self._window_key(license_id),
                self._leases_key(license_id),
                self._audio_key(license_id, day),
            ],
            args=[
                now,
                token,
                rpm,
                concurrent,
                audio_hours * 3600.0,
                self._lease_ttl_s,
                WINDOW_S,
                _WINDOW_KEY_TTL_S,
                self._leases_key_ttl_s,
            ],
        )
        verdict, detail = (_as_text(part) for part in reply)
        if verdict == "ok":
            return Lease(license_id=license_id, token=token)
        if verdict == AUDIO_HOURS_PER_DAY:
            raise rate_limited(verdict, audio_hours, math.ceil(next_midnight - now))
        if verdict == REQUESTS_PER_MINUTE:
            raise rate_limited(verdict, rpm, math.ceil(float(detail) + WINDOW_S - now))
        if verdict == CONCURRENT_REQUESTS:
            raise rate_limited(verdict, concurrent, 1)
        raise RuntimeError(f"Unexpected verdict from the admit script: {verdict!r}")  # pragma: no cover

    async def release(self, lease: Lease) -> None:
        """Give the lease's concurrency slot back. Idempotent; Redis errors propagate."""
        await self._client.zrem(self._leases_key(lease.license_id), lease.token)

    async def record_audio(self, license_id: str, seconds: float) -> None:
        """Add ``seconds`` of transcribed audio to the license's total for today (UTC, by ``clock``).

        Counted on the day it is recorded (a request that spans midnight counts for the day it
        ends). Zero, negative and non-finite amounts are ignored. Redis errors propagate.
        """
        if not (math.isfinite(seconds) and seconds > 0):
            return
        day, _ = utc_day(self._clock())
        key = self._audio_key(license_id, day)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incrbyfloat(key, float(seconds))
            pipe.expire(key, _AUDIO_KEY_TTL_S)
            await pipe.execute()

    async def usage(self, license_id: str) -> dict[str, float]:
        """What the license is using now: requests in the window, live leases, today's audio seconds.

        Read-only (expired entries are excluded, not removed). Redis errors propagate.
        """
        now = self._clock()
        day, _ = utc_day(now)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zcount(self._window_key(license_id), f"({now - WINDOW_S!r}", "+inf")
            pipe.zcount(self._leases_key(license_id), f"({now!r}", "+inf")
            pipe.get(self._audio_key(license_id, day))
            in_window, live_leases, audio = await pipe.execute()
        return {
            "requests_last_minute": float(in_window),
            "concurrent": float(live_leases),
            "audio_seconds_today": float(_as_text(audio)) if audio is not None else 0.0,
        }

    def _license_prefix(self, license_id: str) -> str:
        return f"{self._prefix}{{{license_id}}}"

    def _window_key(self, license_id: str) -> str:
        return f"{self._license_prefix(license_id)}:rpm"

    def _leases_key(self, license_id: str) -> str:
        return f"{self._license_prefix(license_id)}:leases"

    def _audio_key(self, license_id: str, day: str) -> str:
        return f"{self._license_prefix(license_id)}:audio:{day}"


_LIMIT_WORDING: Final[Mapping[str, tuple[str, str]]] = {
    AUDIO_HOURS_PER_DAY: ("Audio limit exceeded", "audio hours per day"),
    REQUESTS_PER_MINUTE: ("Rate limit exceeded", "requests per minute"),
    CONCURRENT_REQUESTS: ("Concurrency limit exceeded", "concurrent requests"),
}


def rate_limited(limit: str, value: float, retry_after: int) -> RateLimited:
    """The refusal for ``limit`` (its configured ``value``), retry after ``retry_after`` s (>= 1)."""
    headline, unit = _LIMIT_WORDING[limit]
    wait = max(1, retry_after)
    return RateLimited(
        f"{headline}: {_fmt(value)} {unit} for this license; retry in {wait} s", retry_after=wait, limit=limit
    )


def limit_value(limits: Mapping[str, float], name: str) -> float:
    """The limit as a float: the default when absent; 0 (nothing allowed) when negative or NaN."""
    raw = limits.get(name)
    value = float(DEFAULT_LIMITS[name] if raw is None else raw)
    if math.isnan(value) or value < 0:
        return 0.0
    return value


def utc_day(now: float) -> tuple[str, float]:
    """The UTC date of ``now`` (``YYYY-MM-DD``) and the Unix time of the following UTC midnight."""
    day_start = math.floor(now / _SECONDS_PER_DAY) * _SECONDS_PER_DAY
    date = datetime.fromtimestamp(day_start, tz=UTC).strftime("%Y-%m-%d")
    return date, float(day_start + _SECONDS_PER_DAY)


def _as_text(value: object) -> str:
    """Replies are ``str`` with ``decode_responses=True`` and ``bytes`` without; accept both."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _fmt(value: float) -> str:
    """A limit for a message: ``60`` rather than ``60.0``, ``2.5`` as is."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
