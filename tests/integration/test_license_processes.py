"""``oyez license-proxy`` and ``oyez license-server`` as real processes over real sockets.

Covers: start-up lines; /health, /v1/validate and /v1/usage over HTTP with every kind of bad key;
the license server killed mid-run (grace), a restart inside the grace period, a clock moved past it
(403) and automatic recovery; revocation; the usage spool surviving crashes and restarts and
draining exactly once; every byte sent upstream inspected; bad keys at start-up.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from license_proxy.issuer import generate_key_pair
from tests.license_support import dev_key
from tests.service_process import ServiceProcess, free_port

FAST = {
    "OYEZ_LICENSE_REVALIDATE_S": "0.5",
    "OYEZ_LICENSE_RETRY_INITIAL_S": "0.2",
    "OYEZ_LICENSE_RETRY_MAX_S": "0.5",
    "OYEZ_LICENSE_GRACE_CHECK_S": "0.2",
    "OYEZ_LICENSE_STARTUP_TIMEOUT_S": "1",
    "OYEZ_LICENSE_UPSTREAM_TIMEOUT_S": "2",
    "OYEZ_USAGE_FLUSH_INTERVAL_S": "0.5",
}
STARTUP_LINES = (
    "INFO: License validated successfully",
    "INFO: License valid until: ",
    "INFO: Grace period: 24 hours",
    "INFO: Server listening on port ",
)


@dataclass
class Stack:
    tmp: Path
    key: str
    server_port: int = field(default_factory=free_port)
    proxy_port: int = field(default_factory=free_port)
    server: ServiceProcess | None = None
    proxies: list[ServiceProcess] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.tmp / "server.sqlite3"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def start_server(self) -> ServiceProcess:
        self.server = ServiceProcess(
            ["license-server", "--db", str(self.db), "--port", str(self.server_port)],
            {"OYEZ_LICENSE_SERVER_HOST": "127.0.0.1"},
        )
        self.server.wait_for_line("License server listening on port")
        return self.server

    def start_proxy(self, *, wait: bool = True, upstream: str | None = None, **env: str) -> ServiceProcess:
        environment = {
            "LICENSE_KEY": self.key,
            "PORT": str(self.proxy_port),
            "OYEZ_HOST": "127.0.0.1",
            "OYEZ_LICENSE_SERVER_URL": upstream or f"http://127.0.0.1:{self.server_port}",
            "OYEZ_LICENSE_STATE_DIR": str(self.tmp / "proxy-state"),
            **FAST,
            **env,
        }
        proxy = ServiceProcess(["license-proxy"], environment)
        self.proxies.append(proxy)
        if wait:
            proxy.wait_for_line("Server listening on port")
        return proxy

    def usage_events_stored(self) -> int:
        with sqlite3.connect(self.db) as db:
            return int(db.execute("SELECT COUNT(*) FROM usage_events").fetchone()[0])

    def stop_all(self) -> None:
        for proc in [*self.proxies, *([self.server] if self.server else [])]:
            proc.stop(signal.SIGKILL, timeout=5)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, dev_key(days=30))
    yield stack
    stack.stop_all()


def _auth(key: str, scheme: str = "Token") -> dict[str, str]:
    return {"Authorization": f"{scheme} {key}"}


def _usage_body(start: int, count: int, **extra: object) -> dict[str, object]:
    return {
        "events": [
            {
                "request_id": f"req-SECRET-{i:04d}",
                "timestamp": "2026-11-25T10:00:00Z",
                "audio_seconds": 12.5,
                "features": ["batch", "timestamps"],
                "response_code": 200,
                "component": "api_server",
                **extra,
            }
            for i in range(start, start + count)
        ]
    }


def _wait(predicate, timeout: float = 15.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_startup_health_and_every_bad_key_over_http(stack: Stack) -> None:
    stack.start_server()
    proxy = stack.start_proxy()
    indexes = [proxy.wait_for_line(line) for line in STARTUP_LINES]
    assert indexes == sorted(indexes), proxy.log
    assert f"Server listening on port {stack.proxy_port}" in proxy.log
    assert stack.key not in proxy.log

    health = httpx.get(f"{stack.url}/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "healthy" and body["license_valid"] is True
    assert body["grace_period_active"] is False
    assert body["valid_until"].endswith("Z")

    for scheme in ("Token", "Bearer", "token"):
        ok = httpx.post(f"{stack.url}/v1/validate", headers=_auth(stack.key, scheme))
        assert ok.status_code == 200, ok.text
        assert ok.json()["limits"] == {
            "requests_per_minute": 60,
            "concurrent_requests": 10,
            "audio_hours_per_day": 100,
        }

    license_id = ok.json()["license_id"]
    now = datetime.now(UTC)
    cases = {
        "KEY_MISSING": (None, 401),
        "KEY_MALFORMED": ("not-a-license", 401),
        "KEY_TRUNCATED": (stack.key[:-20], 401),
        "KEY_FORGED": (stack.key[:-3] + ("AAA" if stack.key[-3:] != "AAA" else "BBB"), 401),
        "KEY_UNKNOWN_ISSUER": (dev_key(pair=generate_key_pair(), license_id=license_id), 401),
        "KEY_NOT_YET_VALID": (dev_key(license_id=license_id, not_before=now + timedelta(days=3)), 401),
        "KEY_EXPIRED": (dev_key(license_id=license_id, now=now - timedelta(days=10), days=1), 403),
        "LICENSE_MISMATCH": (dev_key(), 401),
    }
    for reason, (key, status) in cases.items():
        headers = _auth(key) if key is not None else {}
        response = httpx.post(f"{stack.url}/v1/validate", headers=headers)
        assert response.status_code == status, (reason, response.text)
        body = response.json()
        assert body["reason"] == reason
        assert body["code"] == ("LICENSE_EXPIRED" if status == 403 else "INVALID_LICENSE")
        assert body["error"] == ("License expired" if status == 403 else "Invalid license key")
        assert body["detail"]
        if status == 403:
            assert body["expires_at"].endswith("Z")

    metrics = httpx.get(f"{stack.url}/metrics").text
    assert "license_proxy_grace_period_active 0.0" in metrics
    assert "license_proxy_license_valid 1.0" in metrics
    assert 'license_proxy_validations_total{result="key_forged"} 1.0' in metrics
    assert "license_proxy_usage_spool_depth" in metrics
    assert stack.key not in proxy.log


def test_upstream_outage_grace_restart_clock_past_grace_and_recovery(stack: Stack) -> None:
    server = stack.start_server()
    proxy = stack.start_proxy()
    server.stop(signal.SIGKILL)  # the license server dies mid-run

    proxy.wait_for_line("WARNING: Connection to license server failed, using cached validation")
    proxy.wait_for_line("WARNING: Grace period active (23h remaining)")
    health = httpx.get(f"{stack.url}/health").json()
    assert health["grace_period_active"] is True and health["license_valid"] is True
    assert health["upstream"] == "unreachable" and health["grace_period_ends_at"]
    assert "license_proxy_grace_period_active 1.0" in httpx.get(f"{stack.url}/metrics").text
    validated = httpx.post(f"{stack.url}/v1/validate", headers=_auth(stack.key))
    assert validated.status_code == 200 and validated.json()["grace_period_active"] is True
    assert (
        'license_proxy_upstream_failures_total{operation="validate"}'
        in httpx.get(f"{stack.url}/metrics").text
    )

    # A restart inside the grace period keeps serving from the persisted validation.
    assert proxy.stop() == 0
    restarted = stack.start_proxy()
    restarted.wait_for_line("INFO: License validated successfully")
    assert httpx.post(f"{stack.url}/v1/validate", headers=_auth(stack.key)).status_code == 200
    assert restarted.stop() == 0

    # 25 hours later (clock moved): still serving, but every validation is 403 LICENSE_EXPIRED.
    late = stack.start_proxy(OYEZ_CLOCK_OFFSET_S=str(25 * 3600))
    late.wait_for_line("ERROR: Grace period expired")
    late.wait_for_line("CRITICAL: Service will stop accepting requests")
    expired = httpx.post(f"{stack.url}/v1/validate", headers=_auth(stack.key))
    assert expired.status_code == 403
    assert expired.json()["code"] == "LICENSE_EXPIRED" and expired.json()["reason"] == "GRACE_PERIOD_EXPIRED"
    health_response = httpx.get(f"{stack.url}/health")
    assert health_response.status_code == 503 and health_response.json()["license_valid"] is False
    assert httpx.get(f"{stack.url}/ready").status_code == 200  # reachable, so callers get the 403

    # The license server comes back: recovery without a restart.
    stack.start_server()
    late.wait_for_line("Connection to license server restored; license validated", timeout=20)
    recovered = httpx.post(f"{stack.url}/v1/validate", headers=_auth(stack.key))
    assert recovered.status_code == 200 and recovered.json()["grace_period_active"] is False
    assert httpx.get(f"{stack.url}/health").json()["license_valid"] is True


def test_revocation_by_the_license_server(stack: Stack) -> None:
    stack.start_server()
    proxy = stack.start_proxy()
    license_id = httpx.post(f"{stack.url}/v1/validate", headers=_auth(stack.key)).json()["license_id"]
    admin = ServiceProcess(
        ["license-server", "--db", str(stack.db), "revoke", license_id, "--reason", "contract ended"], {}
    )
    assert admin.wait_exit() == 0, admin.log
    proxy.wait_for_line("License server refused the license")
    refused = httpx.post(f"{stack.url}/v1/validate", headers=_auth(stack.key))
    assert refused.status_code == 401 and refused.json()["reason"] == "KEY_REVOKED"
    assert "contract ended" in refused.json()["detail"]

    reinstate = ServiceProcess(["license-server", "--db", str(stack.db), "reinstate", license_id], {})
    assert reinstate.wait_exit() == 0
    _wait(
        lambda: httpx.post(f"{stack.url}/v1/validate", headers=_auth(stack.key)).status_code == 200,
        what="the reinstated license to validate",
    )


def test_usage_spool_survives_crashes_and_drains_exactly_once(stack: Stack) -> None:
    server = stack.start_server()
    proxy = stack.start_proxy()
    server.stop(signal.SIGKILL)
    accepted = httpx.post(f"{stack.url}/v1/usage", headers=_auth(stack.key), json=_usage_body(0, 30))
    assert accepted.status_code == 202 and accepted.json() == {"accepted": 30, "duplicates": 0}
    proxy.wait_for_line("Usage upload failed; will retry")
    proxy.stop(signal.SIGKILL)  # a crash: no shutdown flush

    second = stack.start_proxy()  # still no license server: grace from the cache
    more = httpx.post(f"{stack.url}/v1/usage", headers=_auth(stack.key), json=_usage_body(25, 15))
    assert more.json() == {"accepted": 10, "duplicates": 5}  # 25..29 were already spooled
    assert "license_proxy_usage_spool_depth 40.0" in httpx.get(f"{stack.url}/metrics").text
    assert second.stop() == 0
    second.wait_for_line("Usage spool on shutdown")
    assert "delivered_all=False" in second.log and "License proxy stopped" in second.log

    stack.start_server()
    third = stack.start_proxy()
    third.wait_for_line("Usage batch delivered")
    _wait(lambda: stack.usage_events_stored() == 40, what="40 events upstream")
    _wait(
        lambda: "license_proxy_usage_spool_depth 0.0" in httpx.get(f"{stack.url}/metrics").text,
        what="an empty spool",
    )
    # Re-posting delivered events is recognised; nothing is counted twice across a restart.
    again = httpx.post(f"{stack.url}/v1/usage", headers=_auth(stack.key), json=_usage_body(0, 5))
    assert again.json() == {"accepted": 0, "duplicates": 5}
    assert third.stop() == 0
    fourth = stack.start_proxy()
    lines_before = len(fourth.lines)
    time.sleep(1.5)  # three flush intervals
    assert not any("Usage batch delivered" in line for line in fourth.lines[lines_before:])
    assert stack.usage_events_stored() == 40
    with sqlite3.connect(stack.db) as db:
        assert db.execute("SELECT COUNT(DISTINCT request_id_hash) FROM usage_events").fetchone()[0] == 40
        assert db.execute("SELECT SUM(audio_seconds) FROM usage_events").fetchone()[0] == pytest.approx(500.0)


class RecordingRelay:
    """A TCP relay that records every byte the proxy sends to the license server."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = bytearray()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def requests(self) -> list[bytes]:
        with self._lock:
            raw = bytes(self.sent)
        return [b"POST " + chunk for chunk in raw.split(b"POST ") if chunk]

    def close(self) -> None:
        self.listener.close()


def test_every_byte_sent_upstream_is_metadata_only(stack: Stack) -> None:
    stack.start_server()
    relay = RecordingRelay(stack.server_port)
    try:
        proxy = stack.start_proxy(upstream=f"http://localhost:{relay.port}")
        transcript = "the quick brown fox jumps over the lazy dog"
        forbidden_extras: list[dict[str, object]] = [
            {"transcript": transcript},
            {"audio": "UklGRiQAAABXQVZF"},
            {"url": "https://customer.example/audio.wav"},
            {"client_ip": "203.0.113.7"},
            {"license_key": stack.key},
        ]
        for extra in forbidden_extras:
            refused = httpx.post(
                f"{stack.url}/v1/usage", headers=_auth(stack.key), json=_usage_body(100, 1, **extra)
            )
            assert refused.status_code == 400, refused.text
            assert refused.json()["code"] == "INVALID_PARAMETER"
            assert "Extra inputs are not permitted" in refused.json()["error"]
        accepted = httpx.post(f"{stack.url}/v1/usage", headers=_auth(stack.key), json=_usage_body(0, 7))
        assert accepted.status_code == 202
        proxy.wait_for_line("Usage batch delivered")
        _wait(lambda: stack.usage_events_stored() == 7, what="7 events upstream")
    finally:
        relay.close()

    requests = relay.requests()
    usage = [r for r in requests if r.startswith(b"POST /v1/usage ")]
    validations = [r for r in requests if r.startswith(b"POST /v1/licenses/validate ")]
    assert usage and validations and len(usage) + len(validations) == len(requests)
    for request in usage:
        head, _, body = request.partition(b"\r\n\r\n")
        assert stack.key.encode() not in request
        for secret in (b"req-SECRET", b"127.0.0.1", b"203.0.113.7", transcript.encode(), b"customer.example"):
            assert secret not in request, secret
        batch = json.loads(body)
        assert set(batch) == {"batch_id", "license_id", "created_at", "events"}
        for event in batch["events"]:
            assert set(event) == {
                "request_id_hash",
                "timestamp",
                "audio_seconds",
                "features",
                "response_code",
                "component",
            }
    for request in validations:
        head, _, body = request.partition(b"\r\n\r\n")
        assert body == b""
        # The key goes to the license server only as the credential of a validation call.
        carrying_key = [line for line in head.split(b"\r\n") if stack.key.encode() in line]
        assert [line.lower() for line in carrying_key] == [
            f"authorization: token {stack.key}".lower().encode()
        ]


@pytest.mark.parametrize(
    ("make_key", "env", "first_line"),
    [
        (lambda: "garbage", {}, "License validation failed: Invalid license key"),
        (lambda: dev_key()[:-30], {}, "License validation failed: Invalid license key"),
        (lambda: dev_key()[:-4] + "AAAA", {}, "License validation failed: Invalid license key"),
        (lambda: dev_key(pair=generate_key_pair()), {}, "License validation failed: Invalid license key"),
        (
            lambda: dev_key(now=datetime.now(UTC) - timedelta(days=40)),
            {},
            "License validation failed: License expired",
        ),
        (
            lambda: dev_key(),
            {"OYEZ_ENV": "production", "OYEZ_LICENSE_PUBLIC_KEY": generate_key_pair().public.text},
            "License validation failed: Invalid license key",
        ),
    ],
    ids=["malformed", "truncated", "forged", "unknown-issuer", "expired", "dev-key-in-production"],
)
def test_unusable_key_at_startup_exits_nonzero(tmp_path: Path, make_key, env, first_line) -> None:  # type: ignore[no-untyped-def]
    key = make_key()
    proxy = ServiceProcess(
        ["license-proxy"],
        {"LICENSE_KEY": key, "PORT": str(free_port()), "OYEZ_LICENSE_STATE_DIR": str(tmp_path), **env},
    )
    assert proxy.wait_exit() == 1
    failed = proxy.wait_for_line(f"ERROR: {first_line}")
    critical = proxy.wait_for_line("CRITICAL: Cannot start without valid license")
    assert failed < critical
    assert "Server listening" not in proxy.log and key not in proxy.log


def test_unconfirmable_license_exits_nonzero(tmp_path: Path) -> None:
    proxy = ServiceProcess(
        ["license-proxy"],
        {
            "LICENSE_KEY": dev_key(),
            "PORT": str(free_port()),
            "OYEZ_LICENSE_STATE_DIR": str(tmp_path),
            "OYEZ_LICENSE_SERVER_URL": f"http://127.0.0.1:{free_port()}",
            **FAST,
        },
    )
    assert proxy.wait_exit() == 1
    proxy.wait_for_line("Connection to license server failed; no cached validation to fall back on")
    proxy.wait_for_line("License validation failed: the license server has never confirmed this license")
    proxy.wait_for_line("CRITICAL: Cannot start without valid license")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "LICENSE_KEY"),
        ({"LICENSE_KEY": "x", "PORT": "99999"}, "PORT"),
        ({"LICENSE_KEY": "x", "OYEZ_LICENSE_SERVER_URL": "ftp://x"}, "OYEZ_LICENSE_SERVER_URL"),
        (
            {"LICENSE_KEY": "x", "OYEZ_ENV": "production", "OYEZ_CLOCK_OFFSET_S": "100"},
            "refused in production",
        ),
        ({"LICENSE_KEY": "x", "OYEZ_LICENSE_GRACE_PERIOD_H": "0"}, "OYEZ_LICENSE_GRACE_PERIOD_H"),
        ({"LICENSE_KEY": dev_key(), "OYEZ_ENV": "production"}, "needs OYEZ_LICENSE_PUBLIC_KEY"),
    ],
)
def test_bad_configuration_exits_2_naming_the_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    environment = {"OYEZ_LICENSE_STATE_DIR": str(tmp_path), "LICENSE_KEY": "", **env}
    if "LICENSE_KEY" not in env:
        environment["LICENSE_KEY"] = ""
    proxy = ServiceProcess(["license-proxy"], environment)
    assert proxy.wait_exit() == 2
    line = proxy.wait_for_line("CRITICAL: Invalid configuration")
    assert message in proxy.lines[line]
