"""Component health for ``/health`` and friends: workers, license proxy, Redis.

Each check is cheap: workers come from the directory's background view, the proxy's ``/health``
and a Redis ``PING`` are asked with a short timeout and the answer is reused for
``CACHE_S`` seconds, so a probe storm does not become a storm on the dependencies.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis.asyncio as redis

from api_server.errors import REDIS_FAILURES
from api_server.workers import WorkerDirectory

CACHE_S = 1.0
NO_WORKERS = "No ASR workers available"


@dataclass(frozen=True)
class ComponentState:
    status: str  # healthy | unhealthy | not_configured
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != "unhealthy"


class HealthChecker:
    def __init__(
        self,
        *,
        directory: WorkerDirectory,
        proxy_url: str,
        redis_client: redis.Redis | None,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._directory = directory
        self._proxy = httpx.AsyncClient(base_url=proxy_url, timeout=timeout_s, transport=transport)
        self._redis = redis_client
        self._timeout_s = timeout_s
        self._cache: dict[str, tuple[float, ComponentState]] = {}
        self._locks = {"license": asyncio.Lock(), "redis": asyncio.Lock()}

    async def aclose(self) -> None:
        await self._proxy.aclose()

    def workers(self) -> ComponentState:
        ready = self._directory.ready_workers()
        detail = {
            "ready": len(ready),
            "workers": [
                {"address": w.address, "source": w.source, "model": w.model, "ready": w.ready}
                for w in self._directory.workers()
            ],
        }
        if not ready:
            return ComponentState("unhealthy", NO_WORKERS, detail)
        return ComponentState("healthy", None, detail)

    async def license(self) -> ComponentState:
        return await self._cached("license", self._check_license)

    async def redis(self) -> ComponentState:
        if self._redis is None:
            return ComponentState("not_configured")
        return await self._cached("redis", self._check_redis)

    async def all(self) -> dict[str, ComponentState]:
        license_state, redis_state = await asyncio.gather(self.license(), self.redis())
        return {"lightning_asr": self.workers(), "license_proxy": license_state, "redis": redis_state}

    async def _cached(self, name: str, check: Any) -> ComponentState:
        async with self._locks[name]:
            hit = self._cache.get(name)
            if hit is not None and time.monotonic() - hit[0] < CACHE_S:
                return hit[1]
            state: ComponentState = await check()
            self._cache[name] = (time.monotonic(), state)
            return state

    async def _check_license(self) -> ComponentState:
        try:
            response = await self._proxy.get("/health")
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return ComponentState("unhealthy", "License proxy unavailable", {"error": type(exc).__name__})
        if not isinstance(body, dict):
            return ComponentState("unhealthy", "License proxy unavailable", {"error": "unexpected answer"})
        detail = {
            key: body.get(key)
            for key in ("license_valid", "valid_until", "grace_period_active", "grace_period_ends_at")
        }
        if response.status_code == 200 and body.get("license_valid"):
            return ComponentState("healthy", None, detail)
        reason = str(body.get("detail") or body.get("reason") or "the license is not valid")
        return ComponentState("unhealthy", f"License invalid: {reason}", detail)

    async def _check_redis(self) -> ComponentState:
        assert self._redis is not None
        try:
            await asyncio.wait_for(self._redis.ping(), timeout=self._timeout_s)
        except REDIS_FAILURES as exc:
            return ComponentState("unhealthy", "Redis unavailable", {"error": type(exc).__name__})
        return ComponentState("healthy")
