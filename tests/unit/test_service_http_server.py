"""WorkerHttpServer over a real loopback socket: /health, /metrics, 404, 405, failing probes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from asr_worker.service.http_server import WorkerHttpServer


class Probe:
    def __init__(self) -> None:
        self.healthy = False
        self.body: dict[str, Any] = {"status": "unhealthy", "reason": "loading"}
        self.fail = False

    def __call__(self) -> tuple[bool, dict[str, Any]]:
        if self.fail:
            raise RuntimeError("probe exploded")
        return self.healthy, self.body


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def base_url(probe: Probe) -> Iterator[str]:
    server = WorkerHttpServer(
        "127.0.0.1", 0, health=probe, metrics=lambda: b"asr_active_requests 0.0\n", metrics_type="text/plain"
    )
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def test_health_is_503_until_the_probe_says_healthy(probe: Probe, base_url: str) -> None:
    reply = httpx.get(f"{base_url}/health")
    assert (reply.status_code, reply.json()) == (503, {"status": "unhealthy", "reason": "loading"})
    assert reply.headers["Content-Type"] == "application/json"
    probe.healthy, probe.body = True, {"status": "healthy", "model": "m"}
    reply = httpx.get(f"{base_url}/health/")
    assert (reply.status_code, reply.json()) == (200, {"status": "healthy", "model": "m"})
    assert httpx.head(f"{base_url}/health").status_code == 200


def test_metrics_are_served_as_prometheus_text(base_url: str) -> None:
    reply = httpx.get(f"{base_url}/metrics")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "text/plain"
    assert reply.text == "asr_active_requests 0.0\n"


def test_unknown_path_is_404_json(base_url: str) -> None:
    reply = httpx.get(f"{base_url}/v1/listen?x=1")
    assert reply.status_code == 404
    assert reply.json() == {"error": "Not found", "path": "/v1/listen"}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_json(base_url: str, method: str) -> None:
    reply = httpx.request(method, f"{base_url}/health", content=b"{}")
    assert reply.status_code == 405
    assert reply.headers["Allow"] == "GET, HEAD"
    assert reply.json()["error"] == "Method not allowed"


def test_a_keep_alive_client_can_go_on_after_a_405(base_url: str) -> None:
    with httpx.Client() as client:
        assert client.post(f"{base_url}/metrics", content=b"x" * 1000).status_code == 405
        assert client.get(f"{base_url}/metrics").status_code == 200
        assert client.get(f"{base_url}/metrics").status_code == 200


def test_a_failing_probe_answers_500_and_the_server_keeps_serving(probe: Probe, base_url: str) -> None:
    probe.fail = True
    reply = httpx.get(f"{base_url}/health")
    assert (reply.status_code, reply.json()["status"]) == (500, "unhealthy")
    probe.fail = False
    assert httpx.get(f"{base_url}/health").status_code == 503


def test_stop_closes_the_port() -> None:
    server = WorkerHttpServer("127.0.0.1", 0, health=Probe(), metrics=lambda: b"", metrics_type="text/plain")
    server.start()
    url = f"http://127.0.0.1:{server.port}/health"
    assert httpx.get(url).status_code == 503
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)
