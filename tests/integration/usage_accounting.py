"""Usage accounting checks: did each answered request reach the license server, exactly once?

The license server stores HMACs of request ids under the proxy's per-installation salt; the salt is
read from the proxy's spool so the test can compute the same digests."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter

from license_proxy.usage_schema import hash_request_id
from tests.integration.api_stack import ApiStack


def _salt(stack: ApiStack) -> bytes:
    with sqlite3.connect(stack.tmp / "proxy-state" / "usage.sqlite3") as conn:
        return bytes(conn.execute("SELECT value FROM meta WHERE name = 'request_id_salt'").fetchone()[0])


def _upstream_events(stack: ApiStack) -> Counter[str]:
    with sqlite3.connect(stack.tmp / "server.sqlite3") as conn:
        rows = conn.execute("SELECT request_id_hash FROM usage_events WHERE component = 'api_server'")
        return Counter(row[0] for row in rows)


def assert_each_counted_once(stack: ApiStack, request_ids: list[str], timeout_s: float = 60) -> None:
    """Every request id reaches the license server, exactly once (waits for the relays)."""
    salt = _salt(stack)
    wanted = {hash_request_id(salt, rid): rid for rid in request_ids}
    deadline = time.monotonic() + timeout_s
    while True:
        counted = _upstream_events(stack)
        missing = [rid for digest, rid in wanted.items() if counted[digest] == 0]
        if not missing:
            break
        assert time.monotonic() < deadline, f"usage events never arrived for {missing}"
        time.sleep(0.25)
    twice = [rid for digest, rid in wanted.items() if counted[digest] > 1]
    assert not twice, f"counted more than once: {twice}"


def upstream_event(stack: ApiStack, request_id: str, timeout_s: float = 60) -> tuple[float, int]:
    """(audio_seconds, response_code) of the one event the license server has for ``request_id``."""
    digest = hash_request_id(_salt(stack), request_id)
    deadline = time.monotonic() + timeout_s
    while True:
        with sqlite3.connect(stack.tmp / "server.sqlite3") as conn:
            rows = conn.execute(
                "SELECT audio_seconds, response_code FROM usage_events WHERE request_id_hash = ?", (digest,)
            ).fetchall()
        if rows:
            assert len(rows) == 1, f"counted {len(rows)} times: {rows}"
            return float(rows[0][0]), int(rows[0][1])
        assert time.monotonic() < deadline, f"no usage event arrived for {request_id}"
        time.sleep(0.25)
