"""MirroredSessionStore: memory is what a stream replays from; Redis (a real redis-server, then a
dead port) gets the same writes best-effort."""

from __future__ import annotations

import asyncio

import redis.asyncio as redis

from api_server.stream_state import MirroredSessionStore, RedisSessionStore
from tests.service_process import free_port


def test_writes_reach_redis_and_replay_comes_from_memory(redis_server: str) -> None:
    async def scenario() -> None:
        client = redis.Redis.from_url(redis_server.rsplit("/", 1)[0] + "/8")
        store = MirroredSessionStore(RedisSessionStore(client))
        await store.create("s1", "lic", {"encoding": "linear16"})
        await store.append("s1", b"abcdef")
        await store.commit("s1", 4, b"token")
        await store.append("s1", b"gh")
        shared = await RedisSessionStore(client).uncommitted("s1")
        local = await store.uncommitted("s1")
        assert (shared.base, shared.data, shared.resume_token) == (4, b"efgh", b"token")
        assert local == shared
        await store.delete("s1")
        assert await client.exists("oyez:stream:s1", "oyez:stream:s1:audio") == 0
        await client.aclose()

    asyncio.run(scenario())


class CountingStore(RedisSessionStore):
    """The Redis store, counting the writes it is asked for."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client)
        self.calls = 0

    async def append(self, session_id: str, data: bytes) -> None:
        self.calls += 1
        await super().append(session_id, data)

    async def create(self, session_id: str, license_id: str, params: dict[str, object]) -> None:
        self.calls += 1
        await super().create(session_id, license_id, params)


def test_redis_outage_mid_stream_loses_nothing_and_tries_redis_once(redis_server: str) -> None:
    async def scenario() -> None:
        live = redis.Redis.from_url(redis_server.rsplit("/", 1)[0] + "/8")
        dead = redis.Redis(port=free_port(), socket_connect_timeout=0.3, socket_timeout=0.3)
        shared = CountingStore(dead)
        store = MirroredSessionStore(shared)
        await store.create("s2", "lic", {})
        for n in range(50):
            await store.append("s2", bytes([n]) * 10)
        await store.commit("s2", 100, b"t")
        assert shared.calls == 1  # the failed create; then memory only, no timeout per frame
        replay = await store.uncommitted("s2")
        assert (replay.base, len(replay.data), replay.resume_token) == (100, 400, b"t")
        assert replay.data[:10] == bytes([10]) * 10
        await store.delete("s2")  # does not raise while Redis is down

        # A session that missed writes stays off Redis even after it is back (its copy would be
        # wrong); a new session is mirrored again once the retry pause is over.
        recovering = MirroredSessionStore(RedisSessionStore(live))
        recovering._stale.add("old")
        await recovering.create("old", "lic", {})
        await recovering.create("new", "lic", {})
        assert await live.exists("oyez:stream:old") == 0
        assert await live.exists("oyez:stream:new") == 1
        await recovering.delete("new")
        await live.aclose()
        await dead.aclose()

    asyncio.run(scenario())
