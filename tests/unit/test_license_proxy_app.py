"""The proxy's HTTP handlers in-process (offline mode): request validation and limits."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from license_proxy.app import MAX_USAGE_BODY_BYTES, build_app
from license_proxy.clock import SystemClock
from license_proxy.keys import TrustPolicy
from license_proxy.metrics import ProxyMetrics
from license_proxy.reporter import UsageReporter
from license_proxy.spool import UsageSpool
from license_proxy.state_store import ValidationStore
from license_proxy.validator import LicenseValidator
from tests.license_support import dev_key

KEY = dev_key()


def _client(tmp_path: Path, max_events: int = 500_000) -> tuple[httpx.AsyncClient, UsageSpool]:
    metrics = ProxyMetrics()
    validator = LicenseValidator(
        license_key=KEY,
        policy=TrustPolicy.from_config([], production=False),
        store=ValidationStore(tmp_path, KEY),
        client=None,
        clock=SystemClock(),
        grace=timedelta(hours=24),
        metrics=metrics,
    )
    asyncio.run(validator.startup())
    spool = UsageSpool(tmp_path / "usage.db", max_events=max_events)
    reporter = UsageReporter(
        spool=spool,
        client=None,
        license_id=validator.terms.license_id,
        key_digest=validator.digest,
        clock=SystemClock(),
        metrics=metrics,
    )
    app = build_app(validator=validator, spool=spool, reporter=reporter, metrics=metrics, salt=spool.salt())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy"), spool


def _event(i: int) -> dict[str, object]:
    return {
        "request_id": f"r{i}",
        "timestamp": "2026-11-25T10:00:00+01:00",
        "audio_seconds": 1.0,
        "features": ["streaming"],
        "response_code": 200,
        "component": "api_server",
    }


def _post(tmp_path: Path, **kwargs: object) -> httpx.Response:
    client, spool = _client(tmp_path)

    async def go() -> httpx.Response:
        async with client:
            return await client.post("/v1/usage", **kwargs)  # type: ignore[arg-type]

    try:
        return asyncio.run(go())
    finally:
        spool.close()


AUTH = {"Authorization": f"Token {KEY}"}


def test_health_offline_mode_and_request_id_echo(tmp_path: Path) -> None:
    client, spool = _client(tmp_path)

    async def go() -> None:
        async with client:
            health = await client.get("/health", headers={"X-Request-ID": "req_abc"})
            assert health.status_code == 200 and health.headers["X-Request-ID"] == "req_abc"
            assert health.json()["upstream"] == "offline"
            assert (await client.get("/ready")).json() == {"status": "ready"}
            missing = await client.post("/v1/validate")
            assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Token")
            basic = await client.post("/v1/validate", headers={"Authorization": "Basic dXNlcjpwYXNz"})
            assert basic.json()["reason"] == "KEY_MISSING"

    asyncio.run(go())
    spool.close()


BAD = "INVALID_PARAMETER"


def _one(**override: object) -> dict[str, object]:
    return {"json": {"events": [{**_event(1), **override}]}, "headers": AUTH}


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {"events": [_event(1)]}}, 401, "INVALID_LICENSE"),
        ({**_one(), "headers": {"Authorization": f"Token {dev_key()}"}}, 401, "INVALID_LICENSE"),
        ({"content": b"{not json", "headers": AUTH}, 400, BAD),
        ({"json": {"events": []}, "headers": AUTH}, 400, BAD),
        (_one(audio_seconds=-1), 400, BAD),
        (_one(features=["mind-reading"]), 400, BAD),
        (_one(timestamp="2026-11-25T10:00:00"), 400, BAD),
        ({"json": {"events": [_event(i) for i in range(1001)]}, "headers": AUTH}, 400, BAD),
        ({"content": b"x" * (MAX_USAGE_BODY_BYTES + 1), "headers": AUTH}, 413, "PAYLOAD_TOO_LARGE"),
    ],
    ids=["no-key", "other-license", "not-json", "empty", "negative-audio", "unknown-feature", "naive-time",
         "too-many", "too-large"],
)  # fmt: skip
def test_bad_usage_reports_get_clear_errors(
    tmp_path: Path, kwargs: dict[str, object], status: int, code: str
) -> None:
    response = _post(tmp_path, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


def test_usage_is_accepted_with_an_expired_key_of_the_license(tmp_path: Path) -> None:
    # Requests refused for an expired key still produce usage events; the caller is authenticated
    # by a genuine key of the license, whatever its dates.
    client, spool = _client(tmp_path)

    async def go() -> httpx.Response:
        async with client:
            return await client.post("/v1/usage", headers=AUTH, json={"events": [_event(1)]})

    assert asyncio.run(go()).status_code == 202
    spool.close()


def test_full_spool_is_507(tmp_path: Path) -> None:
    client, spool = _client(tmp_path, max_events=1000)

    async def go() -> list[int]:
        async with client:
            first = await client.post(
                "/v1/usage", headers=AUTH, json={"events": [_event(i) for i in range(1000)]}
            )
            second = await client.post("/v1/usage", headers=AUTH, json={"events": [_event(5000)]})
            return [first.status_code, second.status_code, second.json()["code"] == "USAGE_SPOOL_FULL"]

    assert asyncio.run(go()) == [202, 507, True]
    assert spool.depth() == 1000
    spool.close()
