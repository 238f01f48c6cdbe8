"""Admission and dispatch: wait for a worker slot (bounded queue), call it, retry once elsewhere.

- No ready worker at all: 503 at once (``No Lightning ASR workers available``).
- No ready worker transcribes the language: 400 ``UNSUPPORTED_LANGUAGE``.
- Every suitable worker is full: the request waits in a bounded queue (``OYEZ_QUEUE_MAX`` places,
  ``OYEZ_QUEUE_TIMEOUT_S``), logging ``Request queued: <id>`` and ``Queue size: <n>``; a full queue
  or a wait that times out is 503 with ``retry_after``.
- A worker that fails the call for its own reasons (gone, restarting, draining, full) is left out
  and the request runs once more on another worker, within the same overall deadline
  (``OYEZ_REQUEST_TIMEOUT_S``, default 300 s). So a worker crash loses no request.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from api_server import asr_client
from api_server.asr_client import WorkerFailed, WorkerOptions
from api_server.errors import NoWorkers, RequestTimeout
from api_server.metrics import ApiMetrics
from api_server.workers import WorkerDirectory, WorkerView
from oyez.errors import UnsupportedLanguage
from oyez.logs import get_logger
from oyez.proto import asr_v1_pb2 as pb

_log = get_logger("api_server.dispatch")
MAX_ATTEMPTS = 2


class Dispatcher:
    def __init__(
        self,
        directory: WorkerDirectory,
        metrics: ApiMetrics,
        *,
        queue_max: int,
        queue_timeout_s: float,
        request_timeout_s: float,
    ) -> None:
        self._directory = directory
        self._metrics = metrics
        self._queue_max = queue_max
        self._queue_timeout_s = queue_timeout_s
        self._request_timeout_s = request_timeout_s
        self.waiting = 0

    async def transcribe(
        self, audio: bytes, options: WorkerOptions, request_id: str
    ) -> pb.TranscribeResponse:
        deadline = time.monotonic() + self._request_timeout_s
        failed: set[str] = set()
        last_failure: WorkerFailed | None = None
        for attempt in range(MAX_ATTEMPTS):
            worker = await self._admit(options.language, request_id, frozenset(failed), deadline)
            left = deadline - time.monotonic()
            if left <= 0:
                await self._directory.release(worker.address)
                break
            try:
                return await asr_client.transcribe(
                    self._directory.channel(worker.address),
                    worker.address,
                    audio,
                    options,
                    request_id=request_id,
                    timeout_s=left,
                )
            except WorkerFailed as exc:
                last_failure = exc
                failed.add(worker.address)
                self._metrics.worker_failures.labels(status=exc.status.name).inc()
                _log.warning(
                    "Worker failed the request; retrying on another worker"
                    if attempt + 1 < MAX_ATTEMPTS
                    else "Worker failed the request again; giving up",
                    worker=worker.address,
                    status=exc.status.name,
                    details=exc.details[:200],
                )
            finally:
                await self._directory.release(worker.address)
        if last_failure is None:
            _log.warning(f"Request timeout after {self._request_timeout_s:g}s")
            raise RequestTimeout(f"Request timeout after {self._request_timeout_s:g}s")
        raise NoWorkers(
            f"the request failed on {len(failed)} worker(s) ({last_failure.status.name}); retry shortly"
        )

    async def acquire(
        self, language: str, request_id: str, exclude: frozenset[str] = frozenset()
    ) -> WorkerView:
        """A worker slot held until :meth:`release` (for streams): the same admission as requests."""
        return await self._admit(language, request_id, exclude, time.monotonic() + self._queue_timeout_s)

    async def release(self, address: str) -> None:
        await self._directory.release(address)

    def channel(self, address: str) -> grpc.aio.Channel:
        return self._directory.channel(address)

    async def _admit(
        self, language: str, request_id: str, exclude: frozenset[str], deadline: float
    ) -> WorkerView:
        directory = self._directory
        worker = directory.pick(language, exclude) or (directory.pick(language) if exclude else None)
        if worker is None:
            self._refuse_if_hopeless(language)
            worker = await self._queue(language, request_id, exclude, deadline)
        directory.acquire(worker.address)
        return worker

    def _refuse_if_hopeless(self, language: str) -> None:
        ready = self._directory.ready_workers()
        if not ready:
            _log.warning("No Lightning ASR workers available")
            raise NoWorkers("No ASR workers available: none is registered and ready")
        languages = self._directory.languages()
        if languages is not None and language not in languages:
            raise UnsupportedLanguage(
                f"no loaded model transcribes language {language!r}; "
                f"available: {', '.join(sorted(languages))}"
            )

    async def _queue(
        self, language: str, request_id: str, exclude: frozenset[str], deadline: float
    ) -> WorkerView:
        if self.waiting >= self._queue_max:
            self._metrics.queue_rejections.labels(reason="full").inc()
            raise NoWorkers(f"all workers are busy and the queue is full ({self._queue_max} waiting)")
        self.waiting += 1
        self._metrics.queue_depth.set(self.waiting)
        _log.info(f"Request queued: {request_id}")
        _log.info(f"Queue size: {self.waiting}")
        chosen: list[WorkerView] = []

        def found() -> bool:
            worker = self._directory.pick(language, exclude) or self._directory.pick(language)
            if worker is not None:
                chosen.append(worker)
            return worker is not None

        timeout = min(self._queue_timeout_s, max(0.0, deadline - time.monotonic()))
        try:
            async with self._directory.changed:
                await asyncio.wait_for(self._directory.changed.wait_for(found), timeout=timeout)
        except TimeoutError:
            self._metrics.queue_rejections.labels(reason="timeout").inc()
            raise NoWorkers(f"no worker slot became free within {timeout:g}s; all workers are busy") from None
        finally:
            self.waiting -= 1
            self._metrics.queue_depth.set(self.waiting)
        return chosen[-1]
