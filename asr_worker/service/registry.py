"""The worker registry in Redis: how API servers find ready workers and route to them.

Key layout (the API server reads exactly this; names from ``oyez.constants``):

``oyez:workers`` (SET, ``REGISTRY_SET_KEY``)
    Ids of workers that registered. Never expires: a reader must treat an id whose hash is missing
    as gone (it crashed and its TTL ran out) and may ``SREM`` it.

``oyez:worker:<id>`` (HASH, ``REGISTRY_WORKER_KEY_PREFIX + id``), TTL ``OYEZ_HEARTBEAT_TTL_S``
    ``address``       host:port of the worker's gRPC endpoint (``OYEZ_ADVERTISE_ADDRESS``)
    ``model``         name of the loaded model
    ``languages``     comma-separated ISO 639-1 codes the model transcribes
    ``capacity``      concurrent requests + streams the worker admits
    ``in_flight``     requests + streams holding a slot at the last heartbeat
    ``queued``        requests + streams waiting for a slot at the last heartbeat
    ``state``         ``ready`` or ``draining`` (route only to ``ready``)
    ``started_at``    Unix time (seconds) the worker process started
    ``heartbeat_at``  Unix time (seconds) of the last heartbeat

Every heartbeat (``OYEZ_HEARTBEAT_S``) rewrites all fields, re-adds the id to the set and renews the
TTL in one transaction, so a Redis restart heals itself at the next beat. On drain the worker sets
``state=draining``, then deletes its hash and removes its id from the set. Redis being unreachable
never stops the worker: it logs a warning and keeps retrying at the heartbeat interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from oyez.aio import cancel_and_wait
from oyez.constants import REGISTRY_SET_KEY, REGISTRY_WORKER_KEY_PREFIX
from oyez.logs import get_logger

_log = get_logger("asr_worker.registry")
_SOCKET_TIMEOUT_S = 2.0
_REDIS_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True)
class WorkerRecord:
    """What the worker publishes about itself at one heartbeat."""

    address: str
    model: str
    languages: tuple[str, ...]
    capacity: int
    in_flight: int
    queued: int
    state: str
    started_at: float

    def to_fields(self, now: float) -> dict[str, str]:
        return {
            "address": self.address,
            "model": self.model,
            "languages": ",".join(self.languages),
            "capacity": str(self.capacity),
            "in_flight": str(self.in_flight),
            "queued": str(self.queued),
            "state": self.state,
            "started_at": f"{self.started_at:.3f}",
            "heartbeat_at": f"{now:.3f}",
        }


def worker_key(worker_id: str) -> str:
    return f"{REGISTRY_WORKER_KEY_PREFIX}{worker_id}"


class WorkerRegistry:
    """Publishes one worker's record and keeps it alive until :meth:`deregister`."""

    def __init__(
        self,
        client: redis.Redis,
        worker_id: str,
        snapshot: Callable[[], WorkerRecord],
        *,
        heartbeat_s: float,
        ttl_s: int,
    ) -> None:
        self._client = client
        self.worker_id = worker_id
        self.key = worker_key(worker_id)
        self._snapshot = snapshot
        self._heartbeat_s = heartbeat_s
        self._ttl_s = ttl_s
        self._task: asyncio.Task[None] | None = None
        self._healthy: bool | None = None
        self._beat_done = asyncio.Event()

    @classmethod
    def from_url(
        cls,
        url: str,
        worker_id: str,
        snapshot: Callable[[], WorkerRecord],
        *,
        heartbeat_s: float,
        ttl_s: int,
    ) -> WorkerRegistry:
        """A registry on a client that fails fast (no retries): the heartbeat loop is the retry."""
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=_SOCKET_TIMEOUT_S,
            socket_timeout=_SOCKET_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, worker_id, snapshot, heartbeat_s=heartbeat_s, ttl_s=ttl_s)

    async def start(self) -> None:
        """Register now (or warn) and keep the record alive from a background task."""
        await self.heartbeat()
        self._task = asyncio.create_task(self._beat_forever(), name="registry-heartbeat")

    async def heartbeat(self) -> bool:
        """Write the record, the set membership and the TTL once; False (and a warning) if Redis failed."""
        fields = self._snapshot().to_fields(time.time())
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(self.key, mapping=fields)  # type: ignore[arg-type]
                pipe.expire(self.key, self._ttl_s)
                pipe.sadd(REGISTRY_SET_KEY, self.worker_id)
                await pipe.execute()
        except _REDIS_FAILURES as exc:
            self._report(ok=False, error=exc)
            return False
        self._report(ok=True)
        self._beat_done.set()
        return True

    async def next_beat(self) -> None:
        """Wait for the next successful heartbeat (for monitoring and tests)."""
        self._beat_done.clear()
        await self._beat_done.wait()

    async def deregister(self) -> None:
        """Stop the heartbeat, mark the record draining, then remove it; close the client."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        try:
            await self._client.hset(self.key, "state", "draining")
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self.key)
                pipe.srem(REGISTRY_SET_KEY, self.worker_id)
                await pipe.execute()
            _log.info("Deregistered from the worker registry", worker_id=self.worker_id)
        except _REDIS_FAILURES as exc:
            _log.warning(f"Could not deregister from Redis ({exc}); the record expires with its TTL")
        finally:
            await self.close()

    async def close(self) -> None:
        with contextlib.suppress(*_REDIS_FAILURES):
            await self._client.aclose()

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            await self.heartbeat()

    def _report(self, *, ok: bool, error: BaseException | None = None) -> None:
        """Log transitions only: one warning when Redis goes away, one line when it is back."""
        if ok and self._healthy is not True:
            _log.info("Registered in the worker registry", worker_id=self.worker_id, key=self.key)
        elif not ok and self._healthy is not False:
            _log.warning(
                f"Redis registry unavailable ({error}); serving anyway, retrying every {self._heartbeat_s}s",
                worker_id=self.worker_id,
            )
        self._healthy = ok
