"""Streaming session state, kept in Redis so it outlives the worker that is transcribing it.

Per session ``oyez:stream:<session_id>`` (HASH: license, params, ``base`` = absolute byte position
where the audio buffer starts, ``finals``, ``audio_seconds``) and ``oyez:stream:<session_id>:audio``
(STRING: the audio since the last final, exactly as sent to the worker). ``append`` adds a frame;
``commit`` drops the audio a final has covered and keeps the worker's checkpoint (``resume``) for that
point; on worker loss the bridge reads both back and replays the audio to another worker, which
continues from the checkpoint. Keys expire ``SESSION_TTL_S`` after the last write. Without Redis the
same interface is kept in memory (one replica).

With Redis the API uses ``MirroredSessionStore``: the replica holding the WebSocket keeps its own copy
in memory and replays from that, and writes Redis best-effort. A Redis outage or restart mid-stream
then costs the stream nothing (no error, no lost or repeated text); only the shared view of the
session lags until Redis is back.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as redis

from api_server.errors import REDIS_FAILURES
from oyez.logs import get_logger

_log = get_logger("api_server.stream_state")

SESSION_TTL_S = 3600
_PREFIX = "oyez:stream:"

# KEYS[1] hash, KEYS[2] audio; ARGV[1] new absolute base, ARGV[2] ttl, ARGV[3] the worker's resume
# token for that point. Trims the buffer's front and records the token, atomically.
_COMMIT_LUA = """
local base = tonumber(redis.call('HGET', KEYS[1], 'base') or '0')
local cut = tonumber(ARGV[1]) - base
if cut > 0 then
  local rest = redis.call('GETRANGE', KEYS[2], cut, -1)
  redis.call('SET', KEYS[2], rest, 'EX', ARGV[2])
  redis.call('HSET', KEYS[1], 'base', ARGV[1])
end
redis.call('HSET', KEYS[1], 'resume', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'finals', 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return base
"""


@dataclass(frozen=True)
class Uncommitted:
    base: int  # absolute byte position of data[0]
    data: bytes
    resume_token: bytes = b""  # the worker's checkpoint at ``base`` (empty: replay from the start)


class SessionStore(Protocol):
    async def create(self, session_id: str, license_id: str, params: dict[str, object]) -> None: ...
    async def append(self, session_id: str, data: bytes) -> None: ...
    async def commit(self, session_id: str, absolute_byte: int, resume_token: bytes) -> None: ...
    async def uncommitted(self, session_id: str) -> Uncommitted: ...
    async def delete(self, session_id: str) -> None: ...


class RedisSessionStore:
    def __init__(self, client: redis.Redis, ttl_s: int = SESSION_TTL_S) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._commit = client.register_script(_COMMIT_LUA)

    @staticmethod
    def _keys(session_id: str) -> tuple[str, str]:
        return f"{_PREFIX}{session_id}", f"{_PREFIX}{session_id}:audio"

    async def create(self, session_id: str, license_id: str, params: dict[str, object]) -> None:
        meta, audio = self._keys(session_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(
                meta, mapping={"license": license_id, "params": json.dumps(params), "base": 0, "finals": 0}
            )
            pipe.expire(meta, self._ttl_s)
            pipe.set(audio, b"", ex=self._ttl_s)
            await pipe.execute()

    async def append(self, session_id: str, data: bytes) -> None:
        meta, audio = self._keys(session_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.append(audio, data)
            pipe.expire(audio, self._ttl_s)
            pipe.expire(meta, self._ttl_s)
            await pipe.execute()

    async def commit(self, session_id: str, absolute_byte: int, resume_token: bytes) -> None:
        meta, audio = self._keys(session_id)
        await self._commit(keys=[meta, audio], args=[absolute_byte, self._ttl_s, resume_token])

    async def uncommitted(self, session_id: str) -> Uncommitted:
        meta, audio = self._keys(session_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hget(meta, "base")
            pipe.get(audio)
            pipe.hget(meta, "resume")
            base, data, token = await pipe.execute()
        return Uncommitted(int(base or 0), _bytes(data), _bytes(token))

    async def delete(self, session_id: str) -> None:
        await self._client.delete(*self._keys(session_id))


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return value.encode("latin-1") if isinstance(value, str) else b""


class MemorySessionStore:
    def __init__(self) -> None:
        self._base: dict[str, int] = {}
        self._audio: dict[str, bytearray] = {}
        self._token: dict[str, bytes] = {}

    async def create(self, session_id: str, license_id: str, params: dict[str, object]) -> None:
        self._base[session_id] = 0
        self._audio[session_id] = bytearray()

    async def append(self, session_id: str, data: bytes) -> None:
        self._audio[session_id] += data

    async def commit(self, session_id: str, absolute_byte: int, resume_token: bytes) -> None:
        cut = absolute_byte - self._base[session_id]
        if cut > 0:
            del self._audio[session_id][:cut]
            self._base[session_id] = absolute_byte
        self._token[session_id] = resume_token

    async def uncommitted(self, session_id: str) -> Uncommitted:
        return Uncommitted(
            self._base[session_id], bytes(self._audio[session_id]), self._token.get(session_id, b"")
        )

    async def delete(self, session_id: str) -> None:
        self._base.pop(session_id, None)
        self._audio.pop(session_id, None)
        self._token.pop(session_id, None)


REDIS_RETRY_AFTER_S = 5.0


class MirroredSessionStore:
    """Memory is authoritative for this replica's sessions; Redis gets the same writes when it can.

    After a failed Redis write, Redis is left alone for ``REDIS_RETRY_AFTER_S`` (an outage must not
    add a timeout to every frame). A session whose Redis copy missed writes is not written again
    (its Redis copy would be wrong); it finishes on memory alone.
    """

    def __init__(self, shared: SessionStore, local: MemorySessionStore | None = None) -> None:
        self._shared = shared
        self._local = local or MemorySessionStore()
        self._down_until = 0.0
        self._stale: set[str] = set()

    async def _mirror(self, session_id: str, operation: str, write: Callable[[], Awaitable[None]]) -> None:
        if session_id in self._stale or time.monotonic() < self._down_until:
            self._stale.add(session_id)
            return
        try:
            await write()
        except REDIS_FAILURES as exc:
            self._stale.add(session_id)
            self._down_until = time.monotonic() + REDIS_RETRY_AFTER_S
            _log.warning(
                "Could not write streaming session state to Redis; the stream continues from memory",
                operation=operation,
                error=f"{type(exc).__name__}: {exc}",
            )

    async def create(self, session_id: str, license_id: str, params: dict[str, object]) -> None:
        await self._local.create(session_id, license_id, params)
        await self._mirror(session_id, "create", lambda: self._shared.create(session_id, license_id, params))

    async def append(self, session_id: str, data: bytes) -> None:
        await self._local.append(session_id, data)
        await self._mirror(session_id, "append", lambda: self._shared.append(session_id, data))

    async def commit(self, session_id: str, absolute_byte: int, resume_token: bytes) -> None:
        await self._local.commit(session_id, absolute_byte, resume_token)
        await self._mirror(
            session_id, "commit", lambda: self._shared.commit(session_id, absolute_byte, resume_token)
        )

    async def uncommitted(self, session_id: str) -> Uncommitted:
        return await self._local.uncommitted(session_id)

    async def delete(self, session_id: str) -> None:
        await self._local.delete(session_id)
        stale = session_id in self._stale
        self._stale.discard(session_id)
        if stale and time.monotonic() < self._down_until:
            return  # its keys expire on their own (SESSION_TTL_S)
        with contextlib.suppress(*REDIS_FAILURES):  # else its keys expire on their own
            await self._shared.delete(session_id)
