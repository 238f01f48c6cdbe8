"""Usage reporting: seal spooled events into batches and upload them to the license server.

A batch is sealed every ``flush_interval_s`` or as soon as ``batch_max`` events wait, whichever
comes first. Sealed batches are uploaded oldest first; a failed upload is retried with exponential
backoff (with jitter) and never dropped. With no license server (offline mode) events stay spooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time

from license_proxy.clock import Clock
from license_proxy.metrics import ProxyMetrics
from license_proxy.spool import UsageSpool
from license_proxy.upstream_client import LicenseServerClient, UpstreamUnavailable, UsageRefused
from oyez.logs import get_logger

_log = get_logger("license_proxy.usage")


class UsageReporter:
    def __init__(
        self,
        *,
        spool: UsageSpool,
        client: LicenseServerClient | None,
        license_id: str,
        key_digest: str,
        clock: Clock,
        metrics: ProxyMetrics,
        flush_interval_s: float = 300.0,
        batch_max: int = 1000,
        retry_initial_s: float = 5.0,
        retry_max_s: float = 300.0,
    ) -> None:
        self._spool = spool
        self._client = client
        self._license_id = license_id
        self._key_digest = key_digest
        self._clock = clock
        self._metrics = metrics
        self._flush_interval_s = flush_interval_s
        self._batch_max = batch_max
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._wake = asyncio.Event()

    def notify(self, unsealed: int) -> None:
        """Called after new events are spooled: a full batch is sent without waiting for the timer."""
        if unsealed >= self._batch_max:
            self._wake.set()

    async def run(self) -> None:
        """Seal and send until cancelled."""
        if self._client is None:
            return
        deadline = time.monotonic() + self._flush_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, deadline - time.monotonic()))
            self._wake.clear()
            try:
                await self.flush()
            except sqlite3.Error as exc:  # e.g. the state volume is full: the spool is intact, retry
                _log.warning(
                    "Usage spool not writable; delivery resumes when it is",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=self._flush_interval_s,
                )
            deadline = time.monotonic() + self._flush_interval_s

    async def flush(self, *, give_up_after_s: float | None = None) -> bool:
        """Seal everything waiting and upload all sealed batches, retrying with backoff. Returns True
        when the spool is empty; False if ``give_up_after_s`` ran out first (nothing is lost)."""
        if self._client is None:
            return False
        started = time.monotonic()
        delay = self._retry_initial_s
        while True:
            await self._seal_all()
            batch = await asyncio.to_thread(self._spool.next_batch)
            if batch is None:
                self._metrics.spool_depth.set(await asyncio.to_thread(self._spool.depth))
                return True
            if await self._send(batch.batch_id, batch.body, batch.event_count):
                delay = self._retry_initial_s
                continue
            if give_up_after_s is not None and time.monotonic() - started + delay > give_up_after_s:
                return False
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 2, self._retry_max_s)

    async def _seal_all(self) -> None:
        while await asyncio.to_thread(self._spool.unsealed_count) > 0:
            await asyncio.to_thread(self._spool.seal, self._license_id, self._clock.now(), self._batch_max)

    async def _send(self, batch_id: str, body: bytes, event_count: int) -> bool:
        assert self._client is not None
        await asyncio.to_thread(self._spool.record_attempt, batch_id)
        try:
            receipt = await self._client.send_usage(
                body, license_id=self._license_id, key_digest=self._key_digest
            )
        except UpstreamUnavailable as exc:
            self._metrics.upstream_failures.labels(operation="usage").inc()
            _log.warning(
                "Usage upload failed; will retry", batch_id=batch_id, events=event_count, error=str(exc)
            )
            return False
        except UsageRefused as exc:
            await asyncio.to_thread(self._spool.reject, batch_id, self._clock.now(), exc.status, exc.detail)
            self._metrics.batches_rejected.inc()
            _log.error(
                "License server refused a usage batch; kept in the spool's rejected_batches table",
                batch_id=batch_id,
                status=exc.status,
                detail=exc.detail,
            )
            return True
        await asyncio.to_thread(self._spool.acknowledge, batch_id, self._clock.now())
        self._metrics.batches_sent.inc()
        self._metrics.spool_depth.set(await asyncio.to_thread(self._spool.depth))
        _log.info(
            "Usage batch delivered",
            batch_id=batch_id,
            events=event_count,
            duplicate=receipt.duplicate,
        )
        return True
