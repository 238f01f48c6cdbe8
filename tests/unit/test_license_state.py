"""Pure grace-period evaluation and the on-disk validation cache (tamper detection)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from license_proxy.grace import CachedValidation, evaluate
from license_proxy.keys import (
    GracePeriodExpired,
    KeyRevoked,
    LicenseExpired,
    LicenseUnconfirmed,
    TrustPolicy,
    verify_key,
)
from license_proxy.state_store import ValidationStore, key_digest
from tests.license_support import dev_key

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
GRACE = timedelta(hours=24)
KEY = dev_key(now=NOW - timedelta(days=1), days=30)
TERMS = verify_key(KEY, TrustPolicy.from_config([], production=False), NOW)


def _cached(checked_at: datetime, **kw: object) -> CachedValidation:
    return CachedValidation(TERMS.license_id, key_digest(KEY), checked_at=checked_at, **kw)  # type: ignore[arg-type]


def test_offline_mode_needs_only_a_genuine_unexpired_key() -> None:
    status = evaluate(TERMS, None, now=NOW, grace=GRACE, online=False, upstream_reachable=None)
    assert status.valid and not status.grace_active and status.error is None
    expired = evaluate(TERMS, None, now=TERMS.expires, grace=GRACE, online=False, upstream_reachable=None)
    assert isinstance(expired.error, LicenseExpired) and not expired.valid


def test_reachable_server_means_valid_without_grace() -> None:
    status = evaluate(TERMS, _cached(NOW), now=NOW, grace=GRACE, online=True, upstream_reachable=True)
    assert status.valid and not status.grace_active and status.grace_remaining is None


def test_grace_counts_down_from_the_last_success() -> None:
    last = NOW - timedelta(hours=5, minutes=30)
    status = evaluate(TERMS, _cached(last), now=NOW, grace=GRACE, online=True, upstream_reachable=False)
    assert status.valid and status.grace_active
    assert status.grace_ends_at == last + GRACE
    assert status.grace_remaining == timedelta(hours=18, minutes=30)
    assert status.grace_remaining_hours == 18


def test_grace_expiry_is_403_with_the_grace_end() -> None:
    last = NOW - GRACE
    status = evaluate(TERMS, _cached(last), now=NOW, grace=GRACE, online=True, upstream_reachable=False)
    assert not status.valid and not status.grace_active
    assert isinstance(status.error, GracePeriodExpired)
    body = status.error.to_dict()
    assert body["code"] == "LICENSE_EXPIRED" and body["reason"] == "GRACE_PERIOD_EXPIRED"
    assert body["expires_at"] == "2026-11-25T12:00:00Z"


def test_key_expiry_wins_over_a_longer_grace() -> None:
    last = TERMS.expires - timedelta(hours=1)
    status = evaluate(
        TERMS, _cached(last), now=TERMS.expires, grace=GRACE, online=True, upstream_reachable=False
    )
    assert isinstance(status.error, LicenseExpired) and status.error.reason == "KEY_EXPIRED"


def test_revocation_is_final_even_while_reachable() -> None:
    cached = _cached(NOW, revoked=True, revoked_reason="revoked: unpaid")
    status = evaluate(TERMS, cached, now=NOW, grace=GRACE, online=True, upstream_reachable=True)
    assert isinstance(status.error, KeyRevoked) and "unpaid" in status.error.message


def test_never_confirmed_and_unreachable_is_invalid() -> None:
    status = evaluate(TERMS, None, now=NOW, grace=GRACE, online=True, upstream_reachable=False)
    assert isinstance(status.error, LicenseUnconfirmed)


def test_a_clock_set_back_cannot_stretch_the_grace_beyond_its_length() -> None:
    cached = _cached(NOW + timedelta(hours=10))  # checked "in the future": the clock went back
    status = evaluate(TERMS, cached, now=NOW, grace=GRACE, online=True, upstream_reachable=False)
    assert status.grace_remaining == GRACE


# --- the cache file --------------------------------------------------------------------------------
def test_cache_round_trips(tmp_path: Path) -> None:
    store = ValidationStore(tmp_path, KEY)
    assert store.load() is None
    cached = _cached(NOW, revoked=True, revoked_reason="revoked: x")
    store.save(cached)
    assert ValidationStore(tmp_path, KEY).load() == cached
    assert KEY not in store.path.read_text()


def test_tampered_cache_is_ignored_and_logged(tmp_path: Path, log_lines: io.StringIO) -> None:
    store = ValidationStore(tmp_path, KEY)
    store.save(_cached(NOW - timedelta(hours=23)))
    document = json.loads(store.path.read_text())
    document["data"]["checked_at"] = NOW.isoformat()  # try to restart the grace period
    store.path.write_text(json.dumps(document))
    assert store.load() is None
    assert "Cached validation was altered or is unreadable; ignoring it" in log_lines.getvalue()


@pytest.mark.parametrize(
    "content", [b"", b"{", b"[]", b'{"version": 1}', b'{"version":1,"data":{},"mac":"00"}']
)
def test_garbage_cache_is_ignored(tmp_path: Path, content: bytes) -> None:
    store = ValidationStore(tmp_path, KEY)
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_bytes(content)
    assert store.load() is None


def test_cache_of_another_key_is_ignored(tmp_path: Path) -> None:
    ValidationStore(tmp_path, KEY).save(_cached(NOW))
    other = dev_key(now=NOW, license_id=TERMS.license_id)
    assert ValidationStore(tmp_path, other).load() is None
