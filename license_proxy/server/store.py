"""The license server's SQLite store: revocations, the key digests it has seen, usage batches.

Usage ingestion is idempotent by ``batch_id`` (the primary key): a batch sent twice is stored and
counted once.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from license_proxy.terms import iso
from license_proxy.usage_schema import UsageBatch

_SCHEMA = """
CREATE TABLE IF NOT EXISTS revocations (
    license_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    revoked_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS license_keys (
    license_id TEXT NOT NULL,
    key_digest TEXT NOT NULL,
    customer TEXT NOT NULL,
    last_validated_at TEXT NOT NULL,
    PRIMARY KEY (license_id, key_digest)
);
CREATE TABLE IF NOT EXISTS usage_batches (
    batch_id TEXT PRIMARY KEY,
    license_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    event_count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS usage_events (
    batch_id TEXT NOT NULL REFERENCES usage_batches (batch_id),
    request_id_hash TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    audio_seconds REAL NOT NULL,
    features TEXT NOT NULL,
    response_code INTEGER NOT NULL,
    component TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_events_batch ON usage_events (batch_id);
"""


@dataclass(frozen=True)
class UsageTotals:
    license_id: str
    batches: int
    events: int
    audio_seconds: float


class LicenseServerStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- revocations ------------------------------------------------------------------------------
    def revoke(self, license_id: str, reason: str, now: datetime) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO revocations (license_id, reason, revoked_at) VALUES (?, ?, ?)",
                (license_id, reason, iso(now)),
            )

    def reinstate(self, license_id: str) -> bool:
        with self._lock:
            return (
                self._db.execute("DELETE FROM revocations WHERE license_id = ?", (license_id,)).rowcount > 0
            )

    def revocation_reason(self, license_id: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT reason FROM revocations WHERE license_id = ?", (license_id,)
            ).fetchone()
        return str(row[0]) if row else None

    # --- keys seen --------------------------------------------------------------------------------
    def remember_key(self, license_id: str, key_digest: str, customer: str, now: datetime) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO license_keys (license_id, key_digest, customer, last_validated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (license_id, key_digest) "
                "DO UPDATE SET last_validated_at = excluded.last_validated_at",
                (license_id, key_digest, customer, iso(now)),
            )

    def key_digests(self, license_id: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key_digest FROM license_keys WHERE license_id = ?", (license_id,)
            ).fetchall()
        return [str(row[0]) for row in rows]

    # --- usage ------------------------------------------------------------------------------------
    def record_batch(self, batch: UsageBatch, now: datetime) -> bool:
        """Store a batch and its events; False (and nothing stored) if the batch id is known."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                known = self._db.execute(
                    "SELECT 1 FROM usage_batches WHERE batch_id = ?", (batch.batch_id,)
                ).fetchone()
                if not known:
                    self._db.execute(
                        "INSERT INTO usage_batches "
                        "(batch_id, license_id, created_at, received_at, event_count) VALUES (?, ?, ?, ?, ?)",
                        (batch.batch_id, batch.license_id, batch.created_at, iso(now), len(batch.events)),
                    )
                    self._db.executemany(
                        "INSERT INTO usage_events (batch_id, request_id_hash, timestamp, audio_seconds, "
                        "features, response_code, component) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [
                            (
                                batch.batch_id,
                                event.request_id_hash,
                                event.timestamp,
                                event.audio_seconds,
                                ",".join(event.features),
                                event.response_code,
                                event.component,
                            )
                            for event in batch.events
                        ],
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return not known

    def usage_totals(self) -> list[UsageTotals]:
        with self._lock:
            rows = self._db.execute(
                "SELECT b.license_id, COUNT(DISTINCT b.batch_id), COUNT(e.rowid), "
                "COALESCE(SUM(e.audio_seconds), 0) FROM usage_batches b "
                "LEFT JOIN usage_events e ON e.batch_id = b.batch_id "
                "GROUP BY b.license_id ORDER BY b.license_id"
            ).fetchall()
        return [UsageTotals(str(r[0]), int(r[1]), int(r[2]), float(r[3])) for r in rows]
