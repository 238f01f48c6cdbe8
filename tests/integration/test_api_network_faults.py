"""The stack with a faulty network to Redis: every service reaches Redis through a TCP proxy that adds
latency, cuts connections under load, or swallows traffic like a partition. Requests are answered
(200, or a documented 503) and never hang or fail with a 500; when the network heals, the stack
recovers by itself, without a restart."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.integration.api_stack import ApiStack, normalise, running_stack, wait_http
from tests.integration.test_api_faults import JFK
from tests.redis_process import RedisServer
from tests.tcp_fault_proxy import FaultProxy

TIMEOUT = 60.0  # a request that takes longer than this is treated as hung


@pytest.fixture(scope="module")
def redis_behind_proxy() -> Iterator[FaultProxy]:
    server = RedisServer()
    server.start()
    proxy = FaultProxy(server.port)
    yield proxy
    proxy.close()
    server.kill()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, redis_behind_proxy: FaultProxy
) -> Iterator[ApiStack]:
    with running_stack(
        tmp_path_factory.mktemp("netfaults"),
        tiny_bundle,
        redis_behind_proxy.url,
        workers=1,
        OYEZ_AUTH_CACHE_TTL_S="600",
    ) as api_stack:
        yield api_stack


@pytest.fixture(autouse=True)
def healed(redis_behind_proxy: FaultProxy, stack: ApiStack) -> Iterator[None]:
    yield
    redis_behind_proxy.heal()
    assert stack.api is not None
    wait_http(f"{stack.url}/healthz", stack.api, timeout_s=60)


def transcribe(stack: ApiStack) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/listen",
        content=JFK,
        headers={**stack.auth(), "Content-Type": "audio/wav"},
        timeout=TIMEOUT,
    )


def check_answer(response: httpx.Response) -> None:
    assert response.status_code in (200, 503), response.text
    if response.status_code == 200:
        assert "your country" in normalise(response.json()["text"])
    else:
        body = response.json()
        assert body["code"] and body["error"], body
        assert int(response.headers["Retry-After"]) >= 1


def stream_jfk(stack: ApiStack) -> str:
    pcm = JFK[44:]
    url = f"ws://127.0.0.1:{stack.api_port}/v1/listen/stream"
    finals = []
    with connect(url, additional_headers=stack.auth(), open_timeout=30) as ws:
        for start in range(0, len(pcm), 4096):
            ws.send(pcm[start : start + 4096])
        ws.send(json.dumps({"type": "close_stream"}))
        while True:
            message = json.loads(ws.recv(timeout=TIMEOUT))
            assert message["type"] != "error", message
            if message.get("is_final"):
                finals.append(message["transcript"])
            if message.get("is_last"):
                return " ".join(finals)


def no_unhandled_errors(stack: ApiStack) -> None:
    assert stack.api is not None
    assert "Unhandled error" not in stack.api.log and "Traceback" not in stack.api.log
    for worker in stack.workers:
        assert "Traceback" not in worker.proc.log


def test_a_slow_network_to_redis_slows_requests_but_breaks_nothing(
    stack: ApiStack, redis_behind_proxy: FaultProxy
) -> None:
    redis_behind_proxy.delay_s = 0.05  # each way, per chunk: every Redis round trip gains 100 ms
    for _ in range(2):
        response = transcribe(stack)
        assert response.status_code == 200, response.text
    assert "your country" in normalise(stream_jfk(stack))
    no_unhandled_errors(stack)


def test_connections_cut_under_load_give_answers_and_recovery_without_a_restart(
    stack: ApiStack, redis_behind_proxy: FaultProxy
) -> None:
    stop = threading.Event()
    cuts: list[int] = []

    def cutter() -> None:
        while not stop.wait(0.3):
            cuts.append(redis_behind_proxy.drop_all())

    thread = threading.Thread(target=cutter, daemon=True)
    thread.start()
    try:
        answers = [transcribe(stack) for _ in range(6)]
    finally:
        stop.set()
        thread.join()
    assert sum(cuts) > 0, "connections were really cut"
    for response in answers:
        check_answer(response)
    assert any(r.status_code == 200 for r in answers), "known workers keep serving through Redis faults"
    assert stack.api is not None
    wait_http(f"{stack.url}/healthz", stack.api, timeout_s=60)
    assert transcribe(stack).status_code == 200
    no_unhandled_errors(stack)


def test_a_redis_partition_never_hangs_a_request_and_heals_by_itself(
    stack: ApiStack, redis_behind_proxy: FaultProxy
) -> None:
    redis_behind_proxy.blackhole = True
    try:
        for _ in range(2):
            check_answer(transcribe(stack))  # httpx raises if the API hangs past TIMEOUT
        deadline = time.monotonic() + 30
        health = httpx.get(f"{stack.url}/health", timeout=TIMEOUT)
        while health.status_code == 200 and time.monotonic() < deadline:
            time.sleep(1)
            health = httpx.get(f"{stack.url}/health", timeout=TIMEOUT)
        assert health.status_code == 503 and health.json()["reason"] == "Redis unavailable", health.text
    finally:
        redis_behind_proxy.heal()
        redis_behind_proxy.drop_all()  # the held connections are stale: clients reconnect
    assert stack.api is not None
    wait_http(f"{stack.url}/healthz", stack.api, timeout_s=60)
    assert transcribe(stack).status_code == 200
    no_unhandled_errors(stack)
