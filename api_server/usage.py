"""Usage events (metadata only) from the API server to the license proxy.

One event per answered request: a request id, the time, the audio seconds, the features used, the
response code. Events are buffered in memory and posted to the proxy's ``POST /v1/usage`` every
``OYEZ_USAGE_FLUSH_S`` seconds in batches of at most 1000, which spools them durably and forwards
them upstream. If the proxy is down they wait here (bounded) and are retried with backoff; the proxy
ignores an event it already has, so a retry after an ambiguous failure counts nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from datetime import UTC, datetime
from typing import Any

import httpx

from api_server.metrics import ApiMetrics
from oyez.logs import get_logger

_log = get_logger("api_server.usage")
BATCH_MAX = 1000
BUFFER_MAX = 100_000
MAX_BACKOFF_S = 60.0


def usage_event(
    request_id: str, *, audio_seconds: float, features: list[str], response_code: int
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "timestamp": datetime.now(UTC).isoformat(),
        "audio_seconds": round(max(0.0, audio_seconds), 3),
        "features": sorted(set(features)),
        "response_code": response_code,
        "component": "api_server",
    }


class UsageSender:
    def __init__(
        self,
        proxy_url: str,
        license_key: str,
        metrics: ApiMetrics,
        *,
        flush_s: float,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(base_url=proxy_url, timeout=timeout_s, transport=transport)
        self._auth = {"Authorization": f"Token {license_key}"}
        self._metrics = metrics
        self._flush_s = flush_s
        self._events: deque[dict[str, Any]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def record(self, event: dict[str, Any]) -> None:
        if len(self._events) >= BUFFER_MAX:
            self._events.popleft()
            self._metrics.usage_dropped.inc()
        self._events.append(event)
        self._metrics.usage_pending.set(len(self._events))

    @property
    def pending(self) -> int:
        return len(self._events)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-sender")

    async def close(self, *, flush_timeout_s: float = 5.0) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._events:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), timeout=flush_timeout_s)
            if self._events:
                _log.warning("Usage events not delivered at shutdown", pending=len(self._events))
        await self._client.aclose()

    async def _run(self) -> None:
        delay = self._flush_s
        while True:
            await asyncio.sleep(delay)
            delay = self._flush_s if await self.flush() else min(delay * 2, MAX_BACKOFF_S)

    async def flush(self) -> bool:
        """Send everything buffered; False (events kept) when the proxy did not take a batch."""
        while self._events:
            batch = [self._events[i] for i in range(min(BATCH_MAX, len(self._events)))]
            try:
                response = await self._client.post("/v1/usage", json={"events": batch}, headers=self._auth)
            except httpx.HTTPError as exc:
                return self._failed(f"{type(exc).__name__}: {exc}")
            if response.status_code == 400:
                # A malformed event is our bug; keeping it would block every later event.
                _log.error("License proxy refused usage events", detail=response.text[:300])
                self._drop(len(batch))
                continue
            if response.status_code != 202:
                return self._failed(f"HTTP {response.status_code}")
            self._drop(len(batch))
            if self._failing:
                _log.info("Usage events are reaching the license proxy again")
            self._failing = False
        return True

    def _drop(self, count: int) -> None:
        for _ in range(count):
            self._events.popleft()
        self._metrics.usage_pending.set(len(self._events))

    def _failed(self, error: str) -> bool:
        if not self._failing:
            _log.warning("Usage events cannot reach the license proxy; keeping them", error=error)
        self._failing = True
        return False
