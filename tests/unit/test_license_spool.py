"""The durable usage spool: dedupe, sealing, acknowledgement, rejection, restarts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from license_proxy.spool import SpoolFull, UsageSpool
from license_proxy.usage_schema import UsageBatch, UsageEvent, UsageEventIn, to_upstream_event

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SALT = b"s" * 32


def _event(i: int, component: str = "api_server") -> UsageEvent:
    return to_upstream_event(
        UsageEventIn(
            request_id=f"req_{i}",
            timestamp=NOW,
            audio_seconds=1.5,
            features=("batch",),
            response_code=200,
            component=component,  # type: ignore[arg-type]
        ),
        SALT,
    )


def test_events_are_deduplicated_per_request_and_component(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "u.db")
    assert spool.add([_event(1), _event(2)]) == (2, 0)
    assert spool.add([_event(1), _event(3)]) == (1, 1)
    assert spool.add([_event(1, "asr_worker")]) == (1, 0)
    assert spool.depth() == 4


def test_sealed_batches_keep_their_exact_bytes_and_order(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "u.db")
    spool.add([_event(i) for i in range(25)])
    first = spool.seal("lic_000000000001", NOW, batch_size=10)
    second = spool.seal("lic_000000000001", NOW, batch_size=10)
    third = spool.seal("lic_000000000001", NOW, batch_size=10)
    assert spool.seal("lic_000000000001", NOW, batch_size=10) is None
    assert spool.unsealed_count() == 0
    batch = spool.next_batch()
    assert batch is not None and batch.batch_id == first and batch.event_count == 10
    parsed = UsageBatch.model_validate_json(batch.body)
    assert [e.request_id_hash for e in parsed.events] == [_event(i).request_id_hash for i in range(10)]
    spool.record_attempt(first)
    again = spool.next_batch()
    assert again is not None and again.body == batch.body and again.attempts == 1
    spool.acknowledge(first, NOW)
    nxt = spool.next_batch()
    assert nxt is not None and nxt.batch_id == second
    spool.acknowledge(second, NOW)
    spool.acknowledge(third, NOW)
    assert spool.next_batch() is None and spool.depth() == 0


def test_acknowledged_events_are_not_counted_again(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "u.db")
    spool.add([_event(1)])
    batch_id = spool.seal("lic_000000000001", NOW, batch_size=1000)
    assert batch_id is not None
    spool.acknowledge(batch_id, NOW)
    assert spool.add([_event(1)]) == (0, 1)
    # ...for a week; then the remembered key is pruned.
    spool.add([_event(2)])
    later = spool.seal("lic_000000000001", NOW, batch_size=1000)
    assert later is not None
    spool.acknowledge(later, NOW + timedelta(days=8))
    assert spool.add([_event(1)]) == (1, 0)


def test_everything_survives_a_restart(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "u.db")
    salt = spool.salt()
    spool.add([_event(i) for i in range(5)])
    sealed = spool.seal("lic_000000000001", NOW, batch_size=3)
    spool.close()
    reopened = UsageSpool(tmp_path / "u.db")
    assert reopened.salt() == salt
    assert reopened.depth() == 5 and reopened.unsealed_count() == 2
    batch = reopened.next_batch()
    assert batch is not None and batch.batch_id == sealed


def test_rejected_batches_are_kept_aside(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "u.db")
    spool.add([_event(1)])
    batch_id = spool.seal("lic_000000000001", NOW, batch_size=10)
    assert batch_id is not None
    spool.reject(batch_id, NOW, 422, "schema")
    assert spool.next_batch() is None and spool.depth() == 0 and spool.rejected_count() == 1


def test_full_spool_refuses_new_events(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "u.db", max_events=3)
    spool.add([_event(1), _event(2)])
    with pytest.raises(SpoolFull, match="max 3"):
        spool.add([_event(3), _event(4)])
    assert spool.depth() == 2


def test_upstream_events_carry_no_raw_request_id(tmp_path: Path) -> None:
    event = _event(42)
    body = event.model_dump_json()
    assert "req_42" not in body
    assert set(json.loads(body)) == {
        "request_id_hash",
        "timestamp",
        "audio_seconds",
        "features",
        "response_code",
        "component",
    }
