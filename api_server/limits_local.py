"""The same license limits as :mod:`api_server.limits`, held in this process (no Redis configured).

With one API replica this is exact; with several, each enforces the limits on its own share, which
is why a multi-replica deployment must configure Redis (the server logs a warning without it).
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping

from api_server.limits import (
    AUDIO_HOURS_PER_DAY,
    CONCURRENT_REQUESTS,
    REQUESTS_PER_MINUTE,
    WINDOW_S,
    Lease,
    RateLimited,
    limit_value,
    rate_limited,
    utc_day,
)


class LocalLimiter:
    def __init__(self, *, lease_ttl_s: float = 330.0, clock: Callable[[], float] = time.time) -> None:
        self._lease_ttl_s = lease_ttl_s
        self._clock = clock
        self._windows: dict[str, deque[float]] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._audio: dict[tuple[str, str], float] = {}

    async def admit(self, license_id: str, limits: Mapping[str, float]) -> Lease:
        now = self._clock()
        window = self._windows.setdefault(license_id, deque())
        while window and window[0] <= now - WINDOW_S:
            window.popleft()
        leases = self._leases.setdefault(license_id, {})
        for token in [t for t, expiry in leases.items() if expiry <= now]:
            del leases[token]
        day, next_midnight = utc_day(now)
        audio_limit = limit_value(limits, AUDIO_HOURS_PER_DAY)
        rpm = limit_value(limits, REQUESTS_PER_MINUTE)
        concurrent = limit_value(limits, CONCURRENT_REQUESTS)
        if self._audio.get((license_id, day), 0.0) >= audio_limit * 3600:
            raise rate_limited(AUDIO_HOURS_PER_DAY, audio_limit, math.ceil(next_midnight - now))
        if len(window) >= rpm:
            oldest = window[0] if window else now
            raise rate_limited(REQUESTS_PER_MINUTE, rpm, math.ceil(oldest + WINDOW_S - now))
        if len(leases) >= concurrent:
            raise rate_limited(CONCURRENT_REQUESTS, concurrent, 1)
        token = uuid.uuid4().hex
        window.append(now)
        leases[token] = now + self._lease_ttl_s
        return Lease(license_id=license_id, token=token)

    async def release(self, lease: Lease) -> None:
        self._leases.get(lease.license_id, {}).pop(lease.token, None)

    async def record_audio(self, license_id: str, seconds: float) -> None:
        if math.isfinite(seconds) and seconds > 0:
            day, _ = utc_day(self._clock())
            self._audio[(license_id, day)] = self._audio.get((license_id, day), 0.0) + seconds


__all__ = ["LocalLimiter", "RateLimited"]
