"""The background consumer of asynchronous jobs: one per API replica, all in one consumer group.

Each replica reads new jobs with ``XREADGROUP`` (its consumer name is unique: host, pid, random) and,
every ``OYEZ_JOB_CLAIM_IDLE_S / 2``, takes over with ``XAUTOCLAIM`` the entries that have been idle
for ``OYEZ_JOB_CLAIM_IDLE_S``: those of a replica that died. For each job it:

1. takes the job's lease (``SET NX PX``; renewed every quarter of the claim timeout, which also
   resets the entry's idle time, so a live replica's long job is not taken over). A job whose lease
   another replica holds is left alone;
2. if the job has no outcome yet: counts the attempt, fetches the audio (Redis, or the job's
   ``url`` through the same guarded fetch as the synchronous route), transcribes it through the
   :class:`~api_server.dispatch.Dispatcher`, and records ``completed`` + result or ``failed`` + error
   (fenced by the lease), deleting the audio. Transient failures (no worker, timeout) leave the job
   pending for a later attempt; after ``JOB_MAX_ATTEMPTS`` attempts it fails;
3. delivers the webhook (:mod:`api_server.webhooks`), recording every attempt and, on a 2xx,
   ``webhook_status=delivered`` in the job hash *before* acknowledging;
4. acknowledges and deletes the stream entry (``XACK`` + ``XDEL``) and drops the lease.

A replica that dies at any point leaves the entry pending; whoever claims it resumes from what the
hash says: transcribe again (no outcome yet), deliver (outcome but webhook pending, continuing the
attempt count), or only acknowledge (webhook delivered or given up). So every job gets one recorded
outcome and one webhook. The one at-least-once window: a replica that dies after the receiver got
the POST but before ``delivered`` reached Redis (a few milliseconds) has the webhook sent again by
the replica that takes over; receivers can drop duplicates by ``X-Oyez-Job-Id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING

from api_server.asr_client import WorkerOptions
from api_server.dispatch import Dispatcher
from api_server.errors import REDIS_FAILURES, LicenseProxyUnavailable, NoWorkers, RequestTimeout
from api_server.job_store import Entry, JobStore, job_store_client
from api_server.jobs import Job, error_status, job_error
from api_server.metrics import ApiMetrics
from api_server.transcription import Limiter, check_container, listen_body
from api_server.url_fetch import FetchPolicy, fetch_url
from api_server.usage import UsageSender, usage_event
from api_server.webhooks import WebhookSender, derive_secret, encode_body
from oyez.aio import cancel_and_wait
from oyez.errors import OyezError
from oyez.logs import bind_request_id, get_logger

if TYPE_CHECKING:
    from api_server.state import ApiState

_log = get_logger("api_server.jobs")
JOB_MAX_ATTEMPTS = 5
READ_BLOCK_MS = 1000
REDIS_RETRY_S = 1.0
PRUNE_EVERY_S = 600.0
PRUNE_IDLE_MS = 3_600_000
_TRANSIENT = (NoWorkers, RequestTimeout, LicenseProxyUnavailable)


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class JobAudioLost(OyezError):
    """The job's audio is no longer in Redis (it expired before the job ran)."""

    code = "INTERNAL_ERROR"


class _Lease:
    """Keeps a job's lease (and its stream entry's idle time) fresh while the job is worked on."""

    def __init__(self, store: JobStore, job_id: str, entry_id: str, owner: str, every_s: float) -> None:
        self.lost = False
        self._store, self._job_id, self._entry_id, self._owner = store, job_id, entry_id, owner
        self._every_s = every_s
        self._task = asyncio.create_task(self._beat(), name=f"lease-{job_id}")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            try:
                if not await self._store.renew(self._job_id, self._owner):
                    self.lost = True
                    _log.warning(f"Job {self._job_id}: lease lost; another replica may take it over")
                    return
                await self._store.touch(self._entry_id, self._owner)
            except REDIS_FAILURES as exc:
                _log.warning(f"Job {self._job_id}: could not renew the lease ({exc})")

    async def stop(self) -> None:
        # A cancellation lost inside a Redis call must not leave the handler waiting here forever
        # (the entry would never be deleted, and the heartbeat would keep it from being taken over).
        await cancel_and_wait(self._task)


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        *,
        dispatcher: Dispatcher,
        fetch_policy: FetchPolicy,
        webhooks: WebhookSender,
        usage: UsageSender | None,
        limiter: Limiter,
        metrics: ApiMetrics,
        concurrency: int,
        claim_idle_s: float,
        consumer: str | None = None,
    ) -> None:
        self.store = store
        self.consumer = consumer or default_consumer()
        self._dispatcher = dispatcher
        self._policy = fetch_policy
        self._webhooks = webhooks
        self._usage = usage
        self._limiter = limiter
        self._metrics = metrics
        self._concurrency = concurrency
        self._claim_idle_ms = max(1, int(claim_idle_s * 1000))
        self._claim_every_s = max(0.2, claim_idle_s / 2)
        self._heartbeat_s = max(0.05, claim_idle_s / 4)
        self._cursor = "0-0"
        self._running = 0
        self._slot_freed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._last_prune = 0.0
        self._redis_down = False

    # --- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        _log.info(f"Job runner started (consumer {self.consumer}, up to {self._concurrency} jobs at once)")
        self._loops = [
            asyncio.create_task(self._read_loop(), name="jobs-read"),
            asyncio.create_task(self._claim_loop(), name="jobs-claim"),
        ]

    async def close(self, grace_s: float = 3.0) -> None:
        """Stop taking jobs; give running ones ``grace_s``, then cancel them (their leases are
        released, so another replica takes them over after the claim timeout)."""
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if pending:
                _log.info(f"Job runner stopped with {len(pending)} job(s) left to other replicas")
        await self.store.aclose()

    # --- loops ----------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        group_ready = False
        while True:
            try:
                if not group_ready:
                    await self.store.ensure_group()
                    group_ready = True
                while self._running >= self._concurrency:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                entries = await self.store.read_new(
                    self.consumer, self._concurrency - self._running, READ_BLOCK_MS
                )
                self._redis_ok()
                for entry in entries:
                    self._spawn(entry)
            except REDIS_FAILURES as exc:
                self._redis_failed(exc)
                await asyncio.sleep(REDIS_RETRY_S)

    async def _claim_loop(self) -> None:
        while True:
            await asyncio.sleep(self._claim_every_s)
            free = self._concurrency - self._running
            try:
                if free > 0:
                    self._cursor, entries = await self.store.claim_stale(
                        self.consumer, free, self._claim_idle_ms, self._cursor
                    )
                    for entry in entries:
                        _log.info(f"Job {entry[1]}: taken over from a silent replica (entry {entry[0]})")
                        self._spawn(entry)
                if time.monotonic() - self._last_prune > PRUNE_EVERY_S:
                    self._last_prune = time.monotonic()
                    await self.store.prune_consumers(self.consumer, PRUNE_IDLE_MS)
            except REDIS_FAILURES as exc:
                self._redis_failed(exc)

    def _redis_failed(self, exc: BaseException) -> None:
        if not self._redis_down:
            _log.warning(f"Job runner: Redis unavailable ({exc}); retrying")
        self._redis_down = True

    def _redis_ok(self) -> None:
        if self._redis_down:
            _log.info("Job runner: Redis reachable again")
        self._redis_down = False

    def _spawn(self, entry: Entry) -> None:
        self._running += 1
        task = asyncio.create_task(self._handle(*entry), name=f"job-{entry[1]}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._running -= 1
        self._slot_freed.set()

    # --- one job --------------------------------------------------------------------------------
    async def _handle(self, entry_id: str, job_id: str | None) -> None:
        try:
            await self._handle_entry(entry_id, job_id)
        except asyncio.CancelledError:
            if job_id is not None:
                with contextlib.suppress(*REDIS_FAILURES, asyncio.CancelledError):
                    await asyncio.wait_for(self.store.release(job_id, self.consumer), timeout=1.0)
            raise
        except REDIS_FAILURES as exc:
            _log.warning(f"Job {job_id}: Redis failed ({exc}); the job stays pending and is retried")
        except Exception:  # noqa: BLE001 - one job's bug must not stop the runner
            _log.exception(f"Job {job_id}: unexpected error; the job stays pending and is retried")
        if job_id is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                await self.store.release(job_id, self.consumer)

    async def _handle_entry(self, entry_id: str, job_id: str | None) -> None:
        job = await self.store.load(job_id) if job_id is not None else None
        if job_id is None or job is None:
            _log.warning(f"Job {job_id}: no longer stored (expired); dropping its queue entry")
            await self.store.finish(entry_id, job_id, self.consumer)
            return
        bind_request_id(job.request_id)
        if job.finished:
            await self.store.finish(entry_id, job_id, self.consumer)
            return
        if not await self.store.acquire(job_id, self.consumer):
            _log.debug(f"Job {job_id}: another replica holds it")
            return
        lease = _Lease(self.store, job_id, entry_id, self.consumer, self._heartbeat_s)
        try:
            if job.status == "processing":
                processed = await self._process(job)
                if processed is None:
                    return
                job = processed
            done = await self._deliver(job, lease) and not lease.lost
        finally:
            await lease.stop()
        if done:
            await self.store.finish(entry_id, job_id, self.consumer)

    async def _process(self, job: Job) -> Job | None:
        """Transcribe and record the outcome; the job as recorded, or None when it was not (lease
        lost, or a transient failure left it for a later attempt)."""
        attempt = await self.store.start_attempt(job.job_id, self.consumer)
        if attempt < 0:
            return None
        seconds = 0.0
        if attempt > JOB_MAX_ATTEMPTS:
            job.status = "failed"
            job.error = job_error(
                OyezError(f"the job was interrupted {JOB_MAX_ATTEMPTS} times (replicas stopped); given up")
            )
        else:
            _log.info(f"Job {job.job_id}: processing (attempt {attempt})")
            try:
                job.result, seconds = await self._transcribe(job)
                job.status = "completed"
            except _TRANSIENT as exc:
                if attempt < JOB_MAX_ATTEMPTS:
                    _log.warning(f"Job {job.job_id}: {exc.message}; it will be retried")
                    return None
                job.status, job.error = "failed", job_error(exc)
            except OyezError as exc:
                job.status, job.error = "failed", job_error(exc)
            except REDIS_FAILURES:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded as the job's failure
                _log.exception(f"Job {job.job_id}: unexpected error")
                job.status, job.error = (
                    "failed",
                    job_error(OyezError(f"internal error: {type(exc).__name__}")),
                )
        job.updated_at = job.completed_at = time.time()
        recorded = await self.store.record_outcome(job, self.consumer)
        if recorded == 0:
            return None
        if recorded < 0:
            return await self.store.load(job.job_id)
        await self._account(job, seconds)
        return job

    async def _transcribe(self, job: Job) -> tuple[dict[str, object], float]:
        if job.url:
            audio = await fetch_url(job.url, self._policy)
        else:
            stored = await self.store.audio(job.job_id)
            if stored is None:
                raise JobAudioLost("the job's audio is no longer stored (it expired before the job ran)")
            audio = stored
        check_container(audio)
        options = WorkerOptions(
            language=job.language,
            punctuate=job.punctuate,
            timestamps=job.timestamps,
            diarize=job.diarize,
            num_speakers=job.num_speakers,
        )
        response = await self._dispatcher.transcribe(audio, options, job.request_id)
        return listen_body(job.request_id, response, job.timestamps, job.diarize), response.duration

    async def _account(self, job: Job, seconds: float) -> None:
        """Metrics, usage event and the license's audio hours, once per recorded outcome."""
        self._metrics.jobs.labels(status=job.status).inc()
        if job.status == "completed":
            self._metrics.audio_seconds.inc(seconds)
            _log.info(f"Job {job.job_id}: completed ({seconds:.1f} s of audio)")
        else:
            error = job.error or {}
            _log.warning(f"Job {job.job_id}: failed: {error.get('detail') or error.get('error')}")
        if self._usage is not None:
            await self._usage.record(
                usage_event(
                    job.job_id,
                    audio_seconds=seconds,
                    features=job.features,
                    response_code=error_status(job.error),
                )
            )
        if seconds > 0:
            try:
                await self._limiter.record_audio(job.license_id, seconds)
            except REDIS_FAILURES as exc:
                _log.warning(f"Could not count a job's audio against the license ({exc})")

    async def _deliver(self, job: Job, lease: _Lease) -> bool:
        """Deliver the webhook unless done; True when its final state is recorded."""
        if job.webhook_status != "pending":
            return True
        job_id = job.job_id

        async def recorded(attempt: int, error: str | None) -> bool:
            ok = await self.store.record_webhook(
                job_id,
                self.consumer,
                status="delivered" if error is None else "pending",
                attempts=attempt,
                error=error,
            )
            if error is not None:
                _log.warning(f"Job {job_id}: webhook attempt {attempt} failed: {error}")
            if not ok:
                lease.lost = True
            return ok and not lease.lost

        body = encode_body(job.webhook_payload())
        outcome = await self._webhooks.deliver(
            job.callback_url, job_id, body, done=job.webhook_attempts, on_attempt=recorded
        )
        if lease.lost:
            return False
        if outcome.delivered:
            self._metrics.webhooks.labels(outcome="delivered").inc()
            _log.info(f"Job {job_id}: webhook delivered (attempt {outcome.attempts})")
            return True
        self._metrics.webhooks.labels(outcome="failed").inc()
        _log.warning(f"Job {job_id}: webhook given up after {outcome.attempts} attempt(s): {outcome.error}")
        return await self.store.record_webhook(
            job_id, self.consumer, status="failed", attempts=outcome.attempts, error=outcome.error
        )


def build_job_runner(state: ApiState) -> JobRunner | None:
    """The runner of a server with Redis; None without (``callback_url`` is then refused)."""
    settings = state.settings
    url = settings.resolved_redis_url
    if not url:
        return None
    key = settings.license_key.get_secret_value().strip() if settings.license_key else ""
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else derive_secret(key)
    policy = state.flow.fetch_policy
    store = JobStore(
        job_store_client(url),
        retention_s=settings.job_retention_s,
        audio_max_bytes=settings.job_audio_max_bytes,
        lease_s=settings.job_claim_idle_s,
    )
    webhooks = WebhookSender(
        secret,
        policy,
        retries=settings.webhook_retries,
        backoff_s=settings.webhook_backoff_s,
        timeout_s=settings.webhook_timeout_s,
    )
    return JobRunner(
        store,
        dispatcher=state.dispatcher,
        fetch_policy=policy,
        webhooks=webhooks,
        usage=state.usage,
        limiter=state.limiter,
        metrics=state.metrics,
        concurrency=settings.job_concurrency,
        claim_idle_s=settings.job_claim_idle_s,
    )
