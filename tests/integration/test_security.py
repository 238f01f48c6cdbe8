"""The security review, as tests against the real stack (SECURITY.md lists what each one proves):
every route and the WebSocket need a key in a header, keys in query strings are not accepted, keys
and transcripts never reach the logs, client headers are not reflected raw, and responses carry
the hardening headers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.integration.api_stack import ApiStack, normalise
from tests.speech_data import speech_clip

PUBLIC = {
    "/health",
    "/health/asr",
    "/health/license",
    "/health/redis",
    "/api/v1/health",
    "/healthz",
    "/metrics",
}
DOCS = {"/openapi.json", "/docs"}
TIMEOUT = 120.0


@pytest.fixture(scope="module")
def stack(api_stack: ApiStack) -> ApiStack:
    return api_stack


@pytest.fixture
def client(stack: ApiStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=TIMEOUT) as http:
        yield http


def _operations(client: httpx.Client) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    found = []
    for path, item in spec["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "job_0123456789abcdef", path)
        found += [
            (method.upper(), concrete)
            for method in item
            if method in {"get", "post", "put", "delete", "patch"}
        ]
    return found


def test_every_route_but_health_and_metrics_needs_a_key(client: httpx.Client) -> None:
    operations = _operations(client)
    assert len(operations) >= 8, "the OpenAPI document lists the routes"
    protected = [(m, p) for m, p in operations if p not in PUBLIC]
    assert {p for _, p in protected} >= {"/v1/listen"}
    for method, path in protected:
        for headers in ({}, {"Authorization": "Token not-a-key"}, {"Authorization": "Basic b3llejpvZXll"}):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"] == "Invalid license key"
    for path in PUBLIC:
        assert client.get(path).status_code in (200, 503), path  # public by design: no key needed


def test_the_websocket_needs_a_key_in_a_header_or_subprotocol(stack: ApiStack) -> None:
    url = f"ws://127.0.0.1:{stack.api_port}/v1/listen/stream"
    for extra in ({}, {"additional_headers": {"Authorization": "Token nope"}}):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, open_timeout=30, **extra)  # type: ignore[arg-type]
        assert refused.value.response.status_code == 401


@pytest.mark.parametrize("name", ["token", "api_key", "key", "access_token"])
def test_a_key_in_the_query_string_is_not_accepted(client: httpx.Client, stack: ApiStack, name: str) -> None:
    audio = speech_clip("jfk").path.read_bytes()
    response = client.post(
        "/v1/listen", params={name: stack.key}, content=audio, headers={"Content-Type": "audio/wav"}
    )
    assert response.status_code in (400, 401), response.text  # no auth header: never served
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{stack.api_port}/v1/listen/stream?{name}={stack.key}", open_timeout=30)
    assert refused.value.response.status_code in (400, 401)


def test_keys_and_transcripts_never_reach_the_logs(client: httpx.Client, stack: ApiStack) -> None:
    audio = speech_clip("jfk").path.read_bytes()
    ok = client.post(
        "/v1/listen",
        params={"timestamps": "true"},
        content=audio,
        headers={**stack.auth(), "Content-Type": "audio/wav"},
    )
    assert ok.status_code == 200 and "ask not what your country" in normalise(ok.json()["text"])
    wrong_key = stack.key[:-12] + "AAAAAAAAAAAA"
    refused = client.post("/v1/listen", content=audio, headers={"Authorization": f"Token {wrong_key}"})
    assert refused.status_code == 401
    url = f"ws://127.0.0.1:{stack.api_port}/v1/listen/stream"
    with connect(url, additional_headers=stack.auth(), open_timeout=30) as ws:
        pcm = audio[44:]
        for start in range(0, len(pcm), 4096):
            ws.send(pcm[start : start + 4096])
        ws.send(json.dumps({"type": "close_stream"}))
        finals = []
        while True:
            message = json.loads(ws.recv(timeout=TIMEOUT))
            if message.get("is_final"):
                finals.append(message["transcript"])
            if message.get("is_last"):
                break
    assert "your country" in normalise(" ".join(finals))
    logs = {"api": stack.api.log if stack.api else ""}
    logs |= {f"worker {i}": worker.proc.log for i, worker in enumerate(stack.workers)}
    for name, proc in (("license server", stack.server), ("license proxy", stack.proxy)):
        assert proc is not None
        logs[name] = proc.log
    assert len(logs) >= 4, f"every service's log is checked: {sorted(logs)}"
    secret_parts = {stack.key, wrong_key, stack.key.split(".")[-1], wrong_key.split(".")[-1]}
    for name, log in logs.items():
        assert log, f"{name} logged nothing: the check would be empty"
        for secret in secret_parts:
            assert secret not in log, f"a license key (or its signature) is in the {name} log"
        lowered = log.lower()
        for phrase in ("what your country can do", "ask not what", "fellow americans"):
            assert phrase not in lowered, f"transcript text is in the {name} log"


def test_client_headers_are_not_reflected_raw(client: httpx.Client, stack: ApiStack) -> None:
    hostile = ["<script>alert(1)</script>", "req_" + "a" * 500, "req_ok\u00e9", "../../etc/passwd", ""]
    for value in hostile:
        response = client.get("/health", headers={"X-Request-ID": value.encode("utf-8")})
        echoed = response.headers["X-Request-ID"]
        assert echoed != value and re.fullmatch(r"req_[0-9a-zA-Z_.-]{1,64}", echoed), (value, echoed)
    fine = client.get("/health", headers={"X-Request-ID": "req_trace-42"})
    assert fine.headers["X-Request-ID"] == "req_trace-42", "a sane request ID is kept for tracing"
    cors = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in cors.headers, "no cross-origin reads of the API"


def test_responses_carry_the_hardening_headers(client: httpx.Client, stack: ApiStack) -> None:
    for response in (
        client.get("/health"),
        client.post("/v1/listen", content=b"x"),  # a 401
        client.post(
            "/v1/listen", content=b"not audio", headers={**stack.auth(), "Content-Type": "audio/wav"}
        ),
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff", response.url
        assert response.headers["Cache-Control"] == "no-store", response.url
        assert response.headers["X-Frame-Options"] == "DENY", response.url
        assert "server" not in response.headers, "the server software is not advertised"
