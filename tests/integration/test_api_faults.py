"""The API server under faults, with real processes: a worker killed mid-request, the license
proxy down, Redis restarted, every worker busy (queue full, queue timeout), and no worker at all."""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf

from tests.integration.api_stack import (
    ApiStack,
    Worker,
    long_speech_wav,
    running_stack,
    stream_pcm,
    stream_request_id,
    wait_http,
)
from tests.license_support import dev_key
from tests.redis_process import RedisServer
from tests.service_process import ServiceProcess, free_port
from tests.speech_data import SPEECH_DIR

TIMEOUT = 180.0


LONG = long_speech_wav(45.0)
JFK = (SPEECH_DIR / "jfk.wav").read_bytes()


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, own_redis: RedisServer
) -> Iterator[ApiStack]:
    with running_stack(
        tmp_path_factory.mktemp("faults"), tiny_bundle, own_redis.url, workers=2, OYEZ_AUTH_CACHE_TTL_S="600"
    ) as api_stack:
        yield api_stack


def post_audio(stack: ApiStack, data: bytes, key: str | None = None, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/listen",
        headers={**stack.auth(key), "Content-Type": "audio/wav", **headers},
        content=data,
        timeout=TIMEOUT,
    )


def test_stream_moves_to_another_worker_when_its_worker_dies(stack: ApiStack) -> None:
    clips = [sf.read(SPEECH_DIR / name, dtype="int16")[0].tobytes() for name in
             ("jfk.wav", "librivox_0870.wav", "librivox_0880.wav")]  # fmt: skip
    gap = bytes(2 * 16000 * 2)
    audio = b"".join(clip + gap for clip in clips)
    # Diarized: the session's speakers must survive the move too (they travel in the checkpoint).
    diarized = "?diarize=true"
    speakers: dict[str, list[tuple[str, int, float]]] = {"undisturbed": [], "disturbed": []}

    def speakers_of(run: str, message: dict[str, Any]) -> None:
        if message.get("type") == "transcription" and message["is_final"] and message["transcript"]:
            final = (message["transcript"], message["speaker"], message["speaker_confidence"])
            speakers[run].append(final)

    undisturbed = stream_pcm(stack, audio, lambda m: speakers_of("undisturbed", m), diarized).text
    assert "dashwood" in undisturbed.lower()
    kennedy_then_reader = [s for s, _ in itertools.groupby(s for _, s, _ in speakers["undisturbed"])]
    assert kennedy_then_reader == [0, 1], speakers["undisturbed"]

    killed: list[Worker] = []
    errors: list[dict[str, Any]] = []

    def kill_after_first_final(message: dict[str, Any]) -> None:
        speakers_of("disturbed", message)
        if message.get("type") == "error":
            errors.append(message)
        if killed or not (message.get("type") == "transcription" and message["is_final"]):
            return
        assert stack.api is not None
        session = message["session_id"]
        request_id = stream_request_id(stack.api.lines, session)
        victim = next(w for w in stack.workers if f"Stream received: {request_id}" in w.proc.log)
        victim.proc.proc.send_signal(signal.SIGKILL)
        killed.append(victim)

    disturbed = stream_pcm(stack, audio, kill_after_first_final, diarized).text
    assert killed, "the stream never produced a final before the end"
    assert not errors, errors
    assert disturbed == undisturbed
    assert speakers["disturbed"] == speakers["undisturbed"], "labels kept across the move"
    assert stack.api is not None
    assert "Streaming worker lost; moving the session to another worker" in stack.api.log
    stack.workers.remove(killed[0])
    replacement = stack.start_worker()  # the later tests expect two workers
    stack.wait_worker(replacement)


def test_worker_killed_mid_request_is_retried_on_another(stack: ApiStack) -> None:
    request_id = "req_fault_kill_worker"
    outcome: dict[str, httpx.Response] = {}
    caller = threading.Thread(
        target=lambda: outcome.setdefault("response", post_audio(stack, LONG, **{"X-Request-ID": request_id}))
    )
    caller.start()
    deadline = time.monotonic() + 60
    victim = None
    while victim is None and time.monotonic() < deadline:
        victim = next((w for w in stack.workers if f"Request received: {request_id}" in w.proc.log), None)
        time.sleep(0.02)
    assert victim is not None, "no worker received the request"
    victim.proc.proc.send_signal(signal.SIGKILL)
    caller.join(TIMEOUT)
    response = outcome["response"]
    assert response.status_code == 200, response.text
    assert "ask not what your country can do for you" in response.json()["text"].lower()
    survivor = next(w for w in stack.workers if w is not victim)
    assert f"Request received: {request_id}" in survivor.proc.log
    assert stack.api is not None
    assert "Worker failed the request; retrying on another worker" in stack.api.log
    stack.workers.remove(victim)


def test_license_proxy_down_serves_cached_auth_and_reports_it(stack: ApiStack) -> None:
    assert post_audio(stack, JFK).status_code == 200  # the key is now in the API's auth cache
    assert stack.proxy is not None
    stack.proxy.stop(signal.SIGKILL)
    try:
        cached = post_audio(stack, JFK)
        assert cached.status_code == 200, cached.text
        never_seen = stack.issue_key(requests_per_minute=999)
        refused = post_audio(stack, JFK, key=never_seen)
        assert refused.status_code == 503 and refused.json()["code"] == "LICENSE_PROXY_UNAVAILABLE"
        assert int(refused.headers["Retry-After"]) >= 1
        time.sleep(1.1)  # the health answer is cached for a second
        health = httpx.get(f"{stack.url}/health", timeout=10)
        assert health.status_code == 503 and health.json()["reason"] == "License proxy unavailable"
        assert httpx.get(f"{stack.url}/healthz", timeout=10).status_code == 503
    finally:
        stack.proxy = stack.start_proxy()
    assert stack.api is not None
    wait_http(f"{stack.url}/healthz", stack.api, timeout_s=30)


def test_redis_restart_recovers(stack: ApiStack, own_redis: RedisServer) -> None:
    own_redis.kill()
    try:
        during = post_audio(stack, JFK)  # known workers and fail-open limits keep serving
        assert during.status_code == 200, during.text
        time.sleep(1.1)
        health = httpx.get(f"{stack.url}/health", timeout=10)
        assert health.status_code == 503 and health.json()["reason"] == "Redis unavailable"
    finally:
        own_redis.start()
    assert stack.api is not None
    wait_http(f"{stack.url}/healthz", stack.api, timeout_s=30)
    deadline = time.monotonic() + 20
    asr = {}
    while time.monotonic() < deadline:  # the workers re-register at their next heartbeat
        asr = httpx.get(f"{stack.url}/health/asr", timeout=10).json()
        if any(w["source"] == "registry" and w["ready"] for w in asr["detail"]["workers"]):
            break
        time.sleep(0.2)
    assert any(w["source"] == "registry" for w in asr["detail"]["workers"]), asr
    assert post_audio(stack, JFK).status_code == 200
    assert "Redis unavailable" not in post_audio(stack, JFK).text


def test_queue_full_and_queue_timeout_then_no_workers(stack: ApiStack, own_redis: RedisServer) -> None:
    """A one-slot worker on its own Redis database and an API with a one-place queue."""
    small_db = own_redis.url.rsplit("/", 1)[0] + "/3"
    worker = stack.start_worker(REDIS_URL=small_db, OYEZ_MAX_CONCURRENCY="1", OYEZ_MAX_QUEUE="0")
    stack.wait_worker(worker)
    api_port = free_port()
    api = ServiceProcess(
        ["api"],
        stack.api_env(
            API_SERVER_PORT=str(api_port),
            REDIS_URL=small_db,
            LIGHTNING_ASR_BASE_URL="http://127.0.0.1:9",  # nothing there: only the registry counts
            OYEZ_QUEUE_MAX="1",
            OYEZ_QUEUE_TIMEOUT_S="1",
        ),
    )
    stack.extra.append(api)
    api.wait_for_line("API server listening on port", timeout=60)
    url = f"http://127.0.0.1:{api_port}"
    wait_http(f"{url}/healthz", api, timeout_s=60)

    def call(data: bytes, request_id: str) -> httpx.Response:
        return httpx.post(
            f"{url}/v1/listen",
            headers={**stack.auth(), "Content-Type": "audio/wav", "X-Request-ID": request_id},
            content=data,
            timeout=TIMEOUT,
        )

    results: dict[str, httpx.Response] = {}
    first = threading.Thread(target=lambda: results.setdefault("first", call(LONG, "req_q_first")))
    first.start()
    deadline = time.monotonic() + 30
    while "Request received: req_q_first" not in worker.proc.log and time.monotonic() < deadline:
        time.sleep(0.02)
    second = threading.Thread(target=lambda: results.setdefault("second", call(JFK, "req_q_second")))
    second.start()
    api.wait_for_line("Request queued: req_q_second", timeout=10)
    third = call(JFK, "req_q_third")  # the one queue place is taken
    assert third.status_code == 503, third.text
    assert third.json()["code"] == "SERVICE_UNAVAILABLE" and third.json()["retry_after"] >= 1
    assert third.headers["Retry-After"] == str(third.json()["retry_after"])
    second.join(TIMEOUT)
    queued = results["second"]  # timed out after 1 s while the long request held the slot
    assert queued.status_code == 503 and "no worker slot became free" in queued.json()["detail"]
    first.join(TIMEOUT)
    assert results["first"].status_code == 200
    assert "Queue size: 1" in api.log

    worker.proc.stop(signal.SIGTERM, timeout=60)
    stack.workers.remove(worker)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and httpx.get(f"{url}/health", timeout=5).status_code == 200:
        time.sleep(0.2)
    health = httpx.get(f"{url}/health", timeout=5)
    assert health.status_code == 503
    assert health.json() == {"status": "unhealthy", "reason": "No ASR workers available"}
    none_left = call(JFK, "req_q_none")
    assert none_left.status_code == 503
    assert none_left.json()["error"] == "No ASR workers available"
    assert none_left.json()["retry_after"] == 30
    assert "WARNING: No Lightning ASR workers available" in api.log


def test_other_license_keys_are_not_served_even_when_the_proxy_is_down(stack: ApiStack) -> None:
    foreign = dev_key()
    response = post_audio(stack, JFK, key=foreign)
    assert response.status_code == 401
