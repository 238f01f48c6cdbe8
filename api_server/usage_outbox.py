"""The durable copy of usage events: a Redis stream every API replica writes and sweeps.

An event is written here (``XADD oyez:usage:outbox``) before its request is answered, and is also
kept in the replica's memory until the license proxy has it. When the proxy takes it, the entry is
deleted. So one ``kill -9`` loses nothing: if the replica dies, another replica finds its entries
once they are older than the orphan age and posts them; if Redis dies (AOF loses up to a second of
writes), the replica still has them in memory. The proxy stores an event once however often it is
posted (it dedupes on the request id), so a sweep that races a live replica double-counts nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis

OUTBOX_KEY = "oyez:usage:outbox"
# Far beyond any backlog a deployment should build: it bounds Redis memory if the proxy is gone
# for days. Entries past it are trimmed oldest first (they are still in their replica's memory).
OUTBOX_MAX_ENTRIES = 1_000_000


@dataclass(frozen=True)
class OutboxEntry:
    entry_id: str
    event: dict[str, Any] | None  # None: unreadable (not written by us); the sender deletes it


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class UsageOutbox:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    async def add(self, event: dict[str, Any]) -> str:
        entry_id = await self._client.xadd(
            OUTBOX_KEY, {"event": json.dumps(event)}, maxlen=OUTBOX_MAX_ENTRIES, approximate=True
        )
        return _text(entry_id)

    async def remove(self, entry_ids: list[str]) -> None:
        if entry_ids:
            await self._client.xdel(OUTBOX_KEY, *entry_ids)

    async def orphans(self, older_than_s: float, count: int) -> list[OutboxEntry]:
        """Entries written more than ``older_than_s`` ago by Redis's clock (entry ids are Redis
        milliseconds, so replica clocks do not matter): their replica has not delivered them."""
        seconds, micros = await self._client.time()
        cutoff_ms = int(seconds) * 1000 + int(micros) // 1000 - int(older_than_s * 1000)
        if cutoff_ms <= 0:
            return []
        rows = await self._client.xrange(OUTBOX_KEY, min="-", max=f"({cutoff_ms}-0", count=count)
        entries: list[OutboxEntry] = []
        for entry_id, fields in rows or []:
            if entry_id is None:
                continue
            decoded = {_text(name): value for name, value in (fields or {}).items()}
            entries.append(OutboxEntry(_text(entry_id), _decode(decoded.get("event"))))
        return entries


def _decode(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
