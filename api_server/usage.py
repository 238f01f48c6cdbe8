"""Usage events (metadata only) from the API server to the license proxy.

One event per answered request: a request id, the time, the audio seconds, the features used, the
response code. Events are buffered in memory and posted to the proxy's ``POST /v1/usage`` every
``OYEZ_USAGE_FLUSH_S`` seconds in batches of at most 1000, which spools them durably and forwards
them upstream. If the proxy is down they wait here (bounded) and are retried with backoff; the proxy
ignores an event it already has, so a retry after an ambiguous failure counts nothing twice.

With Redis, each event is also written to the shared outbox (``usage_outbox``) before its request
is answered, and deleted from it once the proxy has it; every replica posts the entries another
replica left behind for longer than ``OYEZ_USAGE_ORPHAN_AGE_S``. A replica killed with events in
memory therefore loses none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from api_server.errors import REDIS_FAILURES
from api_server.metrics import ApiMetrics
from api_server.usage_outbox import UsageOutbox
from oyez.logs import get_logger

_log = get_logger("api_server.usage")
BATCH_MAX = 1000
BUFFER_MAX = 100_000
MAX_BACKOFF_S = 60.0
OUTBOX_WRITE_TIMEOUT_S = 1.0
# After a failed outbox write, events go to memory only for this long: a Redis outage must not add
# a timeout to every answer.
OUTBOX_RETRY_AFTER_S = 5.0


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


@dataclass
class _Pending:
    event: dict[str, Any]
    outbox_id: str | None = None


class UsageSender:
    def __init__(
        self,
        proxy_url: str,
        license_key: str,
        metrics: ApiMetrics,
        *,
        flush_s: float,
        timeout_s: float,
        outbox: UsageOutbox | None = None,
        orphan_age_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(base_url=proxy_url, timeout=timeout_s, transport=transport)
        self._auth = {"Authorization": f"Token {license_key}"}
        self._metrics = metrics
        self._flush_s = flush_s
        self._outbox = outbox
        self._orphan_age_s = orphan_age_s
        self._outbox_down_until = 0.0
        self._events: deque[_Pending] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failing = False

    async def record(self, event: dict[str, Any]) -> None:
        """Keep the event until the proxy has it; with Redis, also make it durable before returning
        (callers record before they answer)."""
        if len(self._events) >= BUFFER_MAX:
            self._events.popleft()
            self._metrics.usage_dropped.inc()
        pending = _Pending(event)
        self._events.append(pending)
        self._metrics.usage_pending.set(len(self._events))
        if self._outbox is None or time.monotonic() < self._outbox_down_until:
            return
        try:
            pending.outbox_id = await asyncio.wait_for(self._outbox.add(event), OUTBOX_WRITE_TIMEOUT_S)
        except REDIS_FAILURES as exc:
            self._outbox_down_until = time.monotonic() + OUTBOX_RETRY_AFTER_S
            _log.warning(
                "Could not write a usage event to the Redis outbox; it is kept in memory only",
                error=f"{type(exc).__name__}: {exc}",
            )

    def stream_mark(self, request_id: str, features: list[str]) -> StreamUsageMark | None:
        """A provisional event for a stream still running (with Redis only); see StreamUsageMark."""
        if self._outbox is None:
            return None
        return StreamUsageMark(self._outbox, request_id, features, refresh_s=self._orphan_age_s / 3)

    @property
    def pending(self) -> int:
        return len(self._events)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-sender")

    async def close(self, *, flush_timeout_s: float = 5.0) -> None:
        self._closing = True  # the loop also stops on this, should a cancellation be swallowed
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=flush_timeout_s)
        if self._events:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), timeout=flush_timeout_s)
            if self._events:
                _log.warning(
                    "Usage events not delivered at shutdown"
                    + ("; another replica will send them from the Redis outbox" if self._outbox else ""),
                    pending=len(self._events),
                )
        await self._client.aclose()

    async def _run(self) -> None:
        delay = self._flush_s
        while not self._closing:
            await asyncio.sleep(delay)
            delivered = await self.flush() and await self.sweep_orphans()
            delay = self._flush_s if delivered else min(delay * 2, MAX_BACKOFF_S)

    async def flush(self) -> bool:
        """Send everything buffered; False (events kept) when the proxy did not take a batch."""
        while self._events:
            batch = [self._events[i] for i in range(min(BATCH_MAX, len(self._events)))]
            status = await self._post([p.event for p in batch])
            if status is None:
                return False
            for _ in batch:
                self._events.popleft()
            self._metrics.usage_pending.set(len(self._events))
            await self._forget([p.outbox_id for p in batch if p.outbox_id is not None])
        return True

    async def sweep_orphans(self) -> bool:
        """Post the outbox entries nobody deleted in time (their replica died); False when the
        proxy did not take them (they stay for the next sweep)."""
        if self._outbox is None or time.monotonic() < self._outbox_down_until:
            return True
        try:
            entries = await self._outbox.orphans(self._orphan_age_s, BATCH_MAX)
        except REDIS_FAILURES:
            return True  # Redis is down: nothing to sweep now; the record path reports it
        readable = [e for e in entries if e.event is not None]
        if len(readable) < len(entries):
            unreadable = len(entries) - len(readable)
            _log.error("Unreadable entries in the usage outbox; deleting them", count=unreadable)
            await self._forget([e.entry_id for e in entries if e.event is None])
        if not readable:
            return True
        if await self._post([e.event for e in readable if e.event is not None]) is None:
            return False
        _log.info("Sent usage events another replica left in the outbox", count=len(readable))
        await self._forget([e.entry_id for e in readable])
        return True

    async def _post(self, events: list[dict[str, Any]]) -> int | None:
        """The proxy's status once it has settled the batch (202 taken, 400 refused for good);
        None when it did not (unreachable or failing: try again later)."""
        try:
            response = await self._client.post("/v1/usage", json={"events": events}, headers=self._auth)
        except httpx.HTTPError as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            return None
        if response.status_code == 400:
            # A malformed event is our bug; keeping it would block every later event.
            _log.error("License proxy refused usage events", detail=response.text[:300])
            return 400
        if response.status_code != 202:
            self._failed(f"HTTP {response.status_code}")
            return None
        if self._failing:
            _log.info("Usage events are reaching the license proxy again")
        self._failing = False
        return 202

    async def _forget(self, entry_ids: list[str]) -> None:
        """Delete delivered events from the outbox. If that fails they are posted again by a sweep
        later, which the proxy ignores: harmless."""
        if self._outbox is None or not entry_ids:
            return
        with contextlib.suppress(*REDIS_FAILURES):
            await self._outbox.remove(entry_ids)

    def _failed(self, error: str) -> None:
        if not self._failing:
            _log.warning("Usage events cannot reach the license proxy; keeping them", error=error)
        self._failing = True


class StreamUsageMark:
    """A stream's usage so far, kept in the outbox while the stream runs.

    A stream's real event is recorded when the session ends. If its replica dies first, the mark is
    what remains: it is swept like any orphan and bills the audio up to its last refresh, with
    response code 499 (the connection was cut). It is refreshed (a new entry, the old one deleted)
    every ``refresh_s``, a third of the orphan age, so a live stream's mark is never swept; the real
    event replaces it at the end. Failures are ignored: the mark is a safety net, not the record.
    """

    def __init__(
        self, outbox: UsageOutbox, request_id: str, features: list[str], *, refresh_s: float
    ) -> None:
        self._outbox = outbox
        self._request_id = request_id
        self._features = features
        self.refresh_s = refresh_s
        self._entry_id: str | None = None
        self._stopped = False

    async def refresh(self, audio_seconds: float) -> None:
        event = usage_event(
            self._request_id, audio_seconds=audio_seconds, features=self._features, response_code=499
        )
        try:
            entry_id = await asyncio.wait_for(self._outbox.add(event), OUTBOX_WRITE_TIMEOUT_S)
        except REDIS_FAILURES:
            return
        previous, self._entry_id = self._entry_id, entry_id
        if previous is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                await self._outbox.remove([previous])

    async def keep(self, audio_seconds: Callable[[], float]) -> None:
        """Refresh until stopped (or cancelled)."""
        while not self._stopped:
            await self.refresh(audio_seconds())
            await asyncio.sleep(self.refresh_s)

    def stop(self) -> None:
        """End ``keep`` at its next step, even if a cancellation was lost (asyncio.wait_for in Python
        3.11 can turn one into a TimeoutError, which refresh ignores)."""
        self._stopped = True

    async def drop(self) -> None:
        """The real event is recorded: the mark goes (if this fails, the proxy dedupes the sweep)."""
        if self._entry_id is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                await self._outbox.remove([self._entry_id])
            self._entry_id = None
