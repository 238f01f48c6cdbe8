"""The Redis side of asynchronous jobs (:class:`~api_server.jobs.Job`): queue, records, audio, leases.

Layout in Redis (one database shared by every API replica):

- ``oyez:jobs``: a stream, one entry ``{job_id}`` per accepted job, read by the consumer group
  ``oyez-api`` (each replica is one consumer). An entry stays in the group's pending list until the
  job's outcome is recorded and its webhook delivered or given up; then it is acknowledged and
  deleted, so the stream only ever holds unfinished jobs.
- ``oyez:job:<id>``: a hash, the job (:class:`~api_server.jobs.Job`): status, options, result or
  error, webhook state, the license that created it. It expires ``OYEZ_JOB_RETENTION_S`` after
  submission while pending and that long again after its outcome is recorded.
- ``oyez:job:<id>:audio``: the uploaded audio, deleted as soon as the outcome is recorded. All pending
  jobs together may hold ``OYEZ_JOB_AUDIO_MAX_BYTES``; the sizes are kept in ``oyez:jobs:audio``
  (``job_id -> "<bytes>:<expires unix s>"``, expired entries pruned on every submit) and checked
  atomically with the submission, so a full spool refuses the job (503) instead of filling Redis.
- ``oyez:job:<id>:lease``: which replica is processing the job (``SET NX PX``, renewed while it
  works). Every write of a job's outcome or webhook state is fenced by it (a Lua script checks the
  holder), so a replica that lost its lease (stalled past ``OYEZ_JOB_CLAIM_IDLE_S``) cannot overwrite
  what the replica that took the job over recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ResponseError

from api_server.errors import JobsUnavailable
from api_server.jobs import Job, WebhookStatus

JOB_STREAM = "oyez:jobs"
JOB_GROUP = "oyez-api"
AUDIO_SIZES_KEY = "oyez:jobs:audio"
_MIB = 1024 * 1024


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def job_key(job_id: str) -> str:
    return f"oyez:job:{job_id}"


def audio_key(job_id: str) -> str:
    return f"oyez:job:{job_id}:audio"


def lease_key(job_id: str) -> str:
    return f"oyez:job:{job_id}:lease"


# KEYS: sizes, audio, job, stream. ARGV: job_id, size, cap, now, retention, audio, field, value, ...
# Returns -1 when stored; otherwise the bytes pending jobs already hold (the spool is full).
_SUBMIT = """
local size = tonumber(ARGV[2])
local now = tonumber(ARGV[4])
if size > 0 then
  local used = 0
  local entries = redis.call('HGETALL', KEYS[1])
  for i = 1, #entries, 2 do
    local bytes, expires = string.match(entries[i + 1], '^(%d+):(%d+)$')
    if bytes == nil or tonumber(expires) < now then
      redis.call('HDEL', KEYS[1], entries[i])
    else
      used = used + tonumber(bytes)
    end
  end
  if used + size > tonumber(ARGV[3]) then
    return used
  end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. tostring(now + tonumber(ARGV[5])))
  redis.call('SET', KEYS[2], ARGV[6], 'EX', ARGV[5])
end
redis.call('HSET', KEYS[3], unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('XADD', KEYS[4], '*', 'job_id', ARGV[1])
return -1
"""

# KEYS: job, lease, audio, sizes. ARGV: owner, job_id, retention, field, value, ...
# 1 recorded; 0 not the lease holder; -1 the job is gone or already has an outcome.
_RECORD_OUTCOME = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'processing' then return -1 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[4], ARGV[2])
return 1
"""

# KEYS: job, lease. ARGV: owner, field, value, ... -> 1 written; 0 not the holder; -1 job gone.
_FENCED_SET = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

# KEYS: job, lease. ARGV: owner, field -> the new count; -1 not the holder; -2 job gone.
_FENCED_INCR = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
return redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
"""

# KEYS: lease. ARGV: owner, ttl ms -> 1 renewed; 0 lost.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease. ARGV: owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

Entry = tuple[str, str | None]  # (stream entry id, job id or None for a malformed/deleted entry)


def job_store_client(url: str, *, timeout_s: float = 30.0) -> redis.Redis:
    """A binary-safe client (audio bytes) with a socket timeout above the blocking read's."""
    return redis.Redis.from_url(
        url, decode_responses=False, socket_connect_timeout=2.0, socket_timeout=timeout_s
    )


class JobStore:
    """The jobs' Redis side. Redis errors propagate; callers map them."""

    def __init__(
        self, client: redis.Redis, *, retention_s: float, audio_max_bytes: int, lease_s: float
    ) -> None:
        self.client = client
        self.retention_s = max(1, int(retention_s))
        self.audio_max_bytes = audio_max_bytes
        self.lease_ms = max(100, int(lease_s * 1000))
        self._submit = client.register_script(_SUBMIT)
        self._record = client.register_script(_RECORD_OUTCOME)
        self._fenced_set = client.register_script(_FENCED_SET)
        self._fenced_incr = client.register_script(_FENCED_INCR)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(JOB_STREAM, JOB_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # --- submission and reading -----------------------------------------------------------------
    async def submit(self, job: Job, audio: bytes | None) -> None:
        """Store the job (and its audio) and queue it, atomically; JobsUnavailable when the audio
        spool is full."""
        size = len(audio) if audio else 0
        job.audio_bytes = size
        flat: list[str | bytes | int] = []
        for name, value in job.to_fields().items():
            flat += [name, value]
        args: list[str | bytes | int] = [
            job.job_id,
            size,
            self.audio_max_bytes,
            int(time.time()),
            self.retention_s,
            audio or b"",
            *flat,
        ]
        keys = [AUDIO_SIZES_KEY, audio_key(job.job_id), job_key(job.job_id), JOB_STREAM]
        used = int(await self._submit(keys=keys, args=args))
        if used >= 0:
            raise JobsUnavailable(
                f"the spool of pending jobs' audio is full ({used // _MIB} MiB of "
                f"{self.audio_max_bytes // _MIB} MiB held); retry when jobs have finished",
                retry_after=30,
            )

    async def load(self, job_id: str) -> Job | None:
        raw = await self.client.hgetall(job_key(job_id))
        if not raw or b"job_id" not in raw:
            return None
        return Job.from_fields(raw)

    async def audio(self, job_id: str) -> bytes | None:
        data: Any = await self.client.get(audio_key(job_id))
        return bytes(data) if data is not None else None

    async def read_new(self, consumer: str, count: int, block_ms: int) -> list[Entry]:
        answer: Any
        try:
            answer = await self.client.xreadgroup(
                JOB_GROUP, consumer, {JOB_STREAM: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        entries: list[Entry] = []
        for _, messages in answer or []:
            entries += [_entry(entry_id, fields) for entry_id, fields in messages]
        return entries

    async def claim_stale(
        self, consumer: str, count: int, min_idle_ms: int, cursor: str
    ) -> tuple[str, list[Entry]]:
        """XAUTOCLAIM: pending entries idle over ``min_idle_ms`` (their replica died or stalled) become
        ours. Returns the cursor for the next round (``0-0`` when the scan wrapped)."""
        answer: Any
        try:
            answer = await self.client.xautoclaim(
                JOB_STREAM, JOB_GROUP, consumer, min_idle_ms, start_id=cursor, count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return "0-0", []
        next_cursor = _text(answer[0]) if answer else "0-0"
        messages = answer[1] if answer and len(answer) > 1 else []
        return next_cursor, [_entry(entry_id, fields) for entry_id, fields in messages]

    async def touch(self, entry_id: str, consumer: str) -> None:
        """Reset the entry's idle time (it is being worked on), so nobody claims it needlessly."""
        await self.client.xclaim(JOB_STREAM, JOB_GROUP, consumer, 0, [entry_id], justid=True)

    async def finish(self, entry_id: str, job_id: str | None, owner: str) -> None:
        """Acknowledge and delete the stream entry, then drop the lease."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(JOB_STREAM, JOB_GROUP, entry_id)
            pipe.xdel(JOB_STREAM, entry_id)
            await pipe.execute()
        if job_id is not None:
            await self.release(job_id, owner)

    async def prune_consumers(self, keep: str, idle_ms: int) -> int:
        """Forget consumers (replicas long gone) with nothing pending; a live one that was merely
        idle is re-created by its next read."""
        consumers: Any = await self.client.xinfo_consumers(JOB_STREAM, JOB_GROUP)
        removed = 0
        for info in consumers:
            name = _text(info.get("name", b""))
            if (
                name
                and name != keep
                and int(info.get("pending", 0)) == 0
                and int(info.get("idle", 0)) > idle_ms
            ):
                await self.client.xgroup_delconsumer(JOB_STREAM, JOB_GROUP, name)
                removed += 1
        return removed

    # --- the lease and fenced writes ------------------------------------------------------------
    async def acquire(self, job_id: str, owner: str) -> bool:
        key = lease_key(job_id)
        if await self.client.set(key, owner, nx=True, px=self.lease_ms):
            return True
        return _text(await self.client.get(key) or b"") == owner

    async def renew(self, job_id: str, owner: str) -> bool:
        return bool(await self._renew(keys=[lease_key(job_id)], args=[owner, self.lease_ms]))

    async def release(self, job_id: str, owner: str) -> None:
        await self._release(keys=[lease_key(job_id)], args=[owner])

    async def start_attempt(self, job_id: str, owner: str) -> int:
        """Count one more processing attempt; -1 when the lease is lost, -2 when the job is gone."""
        keys = [job_key(job_id), lease_key(job_id)]
        return int(await self._fenced_incr(keys=keys, args=[owner, "attempts"]))

    async def record_outcome(self, job: Job, owner: str) -> int:
        """Write ``job``'s status, result/error and times; drop its audio; restart the retention
        clock. 1 recorded, 0 lease lost, -1 the job is gone or already had an outcome."""
        fields: list[str] = ["status", job.status, "updated_at", repr(job.updated_at)]
        if job.completed_at is not None:
            fields += ["completed_at", repr(job.completed_at)]
        if job.result is not None:
            fields += ["result", json.dumps(job.result, separators=(",", ":"))]
        if job.error is not None:
            fields += ["error", json.dumps(job.error, separators=(",", ":"))]
        keys = [job_key(job.job_id), lease_key(job.job_id), audio_key(job.job_id), AUDIO_SIZES_KEY]
        return int(await self._record(keys=keys, args=[owner, job.job_id, self.retention_s, *fields]))

    async def record_webhook(
        self, job_id: str, owner: str, *, status: WebhookStatus, attempts: int, error: str | None
    ) -> bool:
        fields = [
            "webhook_status",
            status,
            "webhook_attempts",
            str(attempts),
            "updated_at",
            repr(time.time()),
        ]
        if error is not None:
            fields += ["webhook_error", error[:500]]
        keys = [job_key(job_id), lease_key(job_id)]
        return int(await self._fenced_set(keys=keys, args=[owner, *fields])) == 1


def _entry(entry_id: bytes | str, fields: Mapping[Any, Any] | None) -> Entry:
    job_id = fields.get(b"job_id") if fields else None
    return _text(entry_id), _text(job_id) if job_id is not None else None
