"""The durable usage spool: SQLite in ``$OYEZ_LICENSE_STATE_DIR/usage.sqlite3``.

Life of an event: *accepted* (committed before the caller gets 202) -> *sealed* into a batch (the
batch's exact upload bytes are stored with it, so every retry sends the same ``batch_id`` and body)
-> *acknowledged* by the license server (events deleted, their dedupe keys remembered for a week).
A crash at any point loses nothing: unsealed events are sealed after restart, sealed batches are
re-sent, and the server ignores a batch id it already has. The same event posted twice (a caller's
retry) is stored once. A batch the server refuses for good is kept aside in ``rejected_batches``,
never dropped.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from license_proxy.terms import iso
from license_proxy.usage_schema import UsageBatch, UsageEvent

SENT_KEY_RETENTION = timedelta(days=7)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    batch_id TEXT
);
CREATE INDEX IF NOT EXISTS events_unsealed ON events (batch_id, seq);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    body BLOB NOT NULL,
    event_count INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sent_keys (
    dedupe_key TEXT PRIMARY KEY,
    acked_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected_batches (
    batch_id TEXT PRIMARY KEY,
    rejected_at TEXT NOT NULL,
    status INTEGER NOT NULL,
    detail TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""


class SpoolFull(Exception):
    """The spool holds its configured maximum of unsent events."""


class SpoolDiskFull(SpoolFull):
    """The spool's disk (``OYEZ_LICENSE_STATE_DIR``) has no room for the events."""


def _is_disk_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "disk is full" in str(exc)


@dataclass(frozen=True)
class SealedBatch:
    batch_id: str
    body: bytes
    event_count: int
    attempts: int


class UsageSpool:
    """Thread-safe; every method is one short transaction (call from a worker thread in async code)."""

    def __init__(self, path: Path, *, max_events: int = 500_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_events = max_events
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def salt(self) -> bytes:
        """The per-installation salt for hashing request ids (created once, kept with the spool)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE name = 'request_id_salt'").fetchone()
            if row is not None:
                return bytes(row[0])
            value = secrets.token_bytes(32)
            self._db.execute("INSERT INTO meta (name, value) VALUES ('request_id_salt', ?)", (value,))
            return value

    def add(self, events: list[UsageEvent]) -> tuple[int, int]:
        """Store new events durably; returns (accepted, duplicates). Raises :class:`SpoolFull`, or
        :class:`SpoolDiskFull` when the disk has no room (nothing is stored then)."""
        try:
            return self._add(events)
        except sqlite3.OperationalError as exc:
            if not _is_disk_full(exc):
                raise
            raise SpoolDiskFull(
                f"the usage spool's disk is full ({self.path.parent}): free space there or give the "
                "license proxy's state volume more room; the events were not stored, send them again"
            ) from exc

    def _add(self, events: list[UsageEvent]) -> tuple[int, int]:
        with self._lock, self._transaction():
            depth = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            if depth + len(events) > self.max_events:
                raise SpoolFull(f"usage spool holds {depth} unsent events (max {self.max_events})")
            accepted = 0
            for event in events:
                key = event.dedupe_key
                if self._db.execute("SELECT 1 FROM sent_keys WHERE dedupe_key = ?", (key,)).fetchone():
                    continue
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO events (dedupe_key, body) VALUES (?, ?)",
                    (key, event.model_dump_json()),
                )
                accepted += cursor.rowcount
            return accepted, len(events) - accepted

    def unsealed_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events WHERE batch_id IS NULL").fetchone()[0])

    def depth(self) -> int:
        """Events not yet acknowledged by the license server."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def rejected_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM rejected_batches").fetchone()[0])

    def seal(self, license_id: str, now: datetime, batch_size: int) -> str | None:
        """Freeze up to ``batch_size`` of the oldest unsealed events into a batch; its id, or None."""
        with self._lock, self._transaction():
            rows = self._db.execute(
                "SELECT seq, body FROM events WHERE batch_id IS NULL ORDER BY seq LIMIT ?", (batch_size,)
            ).fetchall()
            if not rows:
                return None
            batch_id = "ub_" + secrets.token_hex(16)
            batch = UsageBatch(
                batch_id=batch_id,
                license_id=license_id,
                created_at=iso(now),
                events=[UsageEvent.model_validate_json(body) for _, body in rows],
            )
            body = json.dumps(batch.model_dump(mode="json"), separators=(",", ":")).encode("utf-8")
            self._db.execute(
                "INSERT INTO batches (batch_id, created_at, body, event_count) VALUES (?, ?, ?, ?)",
                (batch_id, iso(now), body, len(rows)),
            )
            self._db.executemany(
                "UPDATE events SET batch_id = ? WHERE seq = ?", [(batch_id, seq) for seq, _ in rows]
            )
            return batch_id

    def next_batch(self) -> SealedBatch | None:
        """The oldest sealed, unacknowledged batch."""
        with self._lock:
            row = self._db.execute(
                "SELECT batch_id, body, event_count, attempts FROM batches ORDER BY rowid LIMIT 1"
            ).fetchone()
        return SealedBatch(row[0], bytes(row[1]), int(row[2]), int(row[3])) if row else None

    def record_attempt(self, batch_id: str) -> None:
        with self._lock:
            self._db.execute("UPDATE batches SET attempts = attempts + 1 WHERE batch_id = ?", (batch_id,))

    def acknowledge(self, batch_id: str, now: datetime) -> None:
        """The server has the batch: forget its events, remember their keys for deduplication."""
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO sent_keys (dedupe_key, acked_at) "
                "SELECT dedupe_key, ? FROM events WHERE batch_id = ?",
                (iso(now), batch_id),
            )
            self._db.execute("DELETE FROM events WHERE batch_id = ?", (batch_id,))
            self._db.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))
            self._db.execute("DELETE FROM sent_keys WHERE acked_at < ?", (iso(now - SENT_KEY_RETENTION),))

    def reject(self, batch_id: str, now: datetime, status: int, detail: str) -> None:
        """The server refused the batch for good: set it aside (kept, counted), unblock the queue."""
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO rejected_batches (batch_id, rejected_at, status, detail, body) "
                "SELECT batch_id, ?, ?, ?, body FROM batches WHERE batch_id = ?",
                (iso(now), status, detail[:2000], batch_id),
            )
            self._db.execute("DELETE FROM events WHERE batch_id = ?", (batch_id,))
            self._db.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (the connection is in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
