"""kill -9 under load, with accounting. The API, the license proxy and Redis are each killed while
requests (and, for Redis, a stream) are running, then started again as Kubernetes would restart them.
Afterwards every answered request has exactly one usage event at the license server, the stream kept
all of its committed text, and nothing needed a manual step.

Workers killed mid-request and mid-stream: test_api_faults.py. Asynchronous jobs across the death of
an API replica: test_api_jobs.py. Network faults to Redis: test_api_network_faults.py. What each fault
promises: docs/faults.md."""

from __future__ import annotations

import contextlib
import io
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf
from websockets.sync.client import connect

from tests.integration.api_stack import (
    ApiStack,
    long_speech_wav,
    normalise,
    running_stack,
    stream_pcm,
    stream_request_id,
    wait_http,
)
from tests.integration.job_support import JOB_ENV, Receiver, accepted, assert_each_job_delivered_once, submit
from tests.integration.usage_accounting import assert_each_counted_once, upstream_event
from tests.redis_process import RedisServer
from tests.speech_data import SPEECH_DIR

TIMEOUT = 120.0
JFK = (SPEECH_DIR / "jfk.wav").read_bytes()
ORPHAN_AGE_S = "2"


API_ENV = {"OYEZ_AUTH_CACHE_TTL_S": "600", "OYEZ_USAGE_ORPHAN_AGE_S": ORPHAN_AGE_S, **JOB_ENV}


def start_api(stack: ApiStack, **env: str) -> None:
    """A new API process (after a kill) with this module's settings."""
    stack.start_api(**{**API_ENV, **env})
    stack.wait_ready()


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True)  # as the chart runs it
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, own_redis: RedisServer
) -> Iterator[ApiStack]:
    with running_stack(
        tmp_path_factory.mktemp("killload"), tiny_bundle, own_redis.url, workers=2, **API_ENV
    ) as api_stack:
        yield api_stack


# --- load and accounting --------------------------------------------------------------------------
@dataclass
class Load:
    """Threads posting JFK with their own request ids until stopped; every outcome is kept."""

    stack: ApiStack
    name: str
    threads: int = 2
    outcomes: dict[str, int | str] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        for index in range(self.threads):
            thread = threading.Thread(target=self._loop, args=(index,), daemon=True)
            thread.start()
            self._workers.append(thread)

    def _loop(self, index: int) -> None:
        for n in range(10_000):
            if self._stop.is_set():
                return
            request_id = f"req_{self.name}_{index}_{n}"
            try:
                response = httpx.post(
                    f"{self.stack.url}/v1/listen",
                    headers={**self.stack.auth(), "Content-Type": "audio/wav", "X-Request-ID": request_id},
                    content=JFK,
                    timeout=TIMEOUT,
                )
            except httpx.TransportError as exc:  # the API was killed under this request
                self.outcomes[request_id] = type(exc).__name__
                time.sleep(0.2)
                continue
            self.outcomes[request_id] = response.status_code
            if response.status_code == 200:
                assert "your country" in normalise(response.json()["text"])
            else:
                body = response.json()
                assert (
                    response.status_code == 503 and body["code"] and int(response.headers["Retry-After"]) >= 1
                )

    def wait_answered(self, count: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.answered()) < count:
            assert time.monotonic() < deadline, f"only {len(self.answered())} answers: {self.outcomes}"
            assert any(t.is_alive() for t in self._workers), "the load threads died"
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(TIMEOUT)
            assert not thread.is_alive(), "a request hung"
        assert not self.wrong, self.wrong

    def answered(self) -> list[str]:
        """Requests that got an HTTP answer: each must produce exactly one usage event."""
        return [rid for rid, outcome in list(self.outcomes.items()) if isinstance(outcome, int)]


# --- the faults -----------------------------------------------------------------------------------
def test_api_killed_under_load_loses_no_usage_event(stack: ApiStack) -> None:
    assert stack.api is not None
    stack.api.stop(signal.SIGTERM, timeout=30)
    # This replica never flushes on its own: its events are only in its memory and the outbox.
    start_api(stack, OYEZ_USAGE_FLUSH_S="3600")
    load = Load(stack, "apikill")
    load.wait_answered(4)
    stack.api.stop(signal.SIGKILL)  # requests are in flight: they get connection errors
    load.stop()
    answered = load.answered()
    assert any(not isinstance(o, int) for o in load.outcomes.values()), "the kill hit requests in flight"

    start_api(stack)
    assert_each_counted_once(stack, answered)
    assert "Sent usage events another replica left in the outbox" in stack.api.log


def test_stream_cut_by_its_api_replica_dying_is_billed_up_to_the_cut(stack: ApiStack) -> None:
    """The stream's real event is written when it ends; its replica's death leaves the provisional
    mark (refreshed every third of the orphan age), which another replica sends as a 499."""
    clips = [sf.read(SPEECH_DIR / name, dtype="int16")[0].tobytes() for name in
             ("jfk.wav", "librivox_0870.wav")]  # fmt: skip
    audio = clips[0] + bytes(2 * 16000 * 2) + clips[1]  # the pause ends the first final
    url = f"ws://127.0.0.1:{stack.api_port}/v1/listen/stream"
    assert stack.api is not None
    victim = stack.api
    with connect(url, additional_headers=stack.auth(), open_timeout=30) as ws:
        sent = 0
        while True:
            ws.send(audio[sent : sent + 8000])  # 0.25 s of audio, at 2x real time
            sent += 8000
            time.sleep(0.125)
            with contextlib.suppress(TimeoutError):
                message = json.loads(ws.recv(timeout=0))
                if message.get("is_final") and message.get("transcript"):
                    break
            assert sent < len(audio), "no final in the whole clip"
        session = message["session_id"]
        time.sleep(float(ORPHAN_AGE_S))  # at least one refresh after the final
        victim.stop(signal.SIGKILL)
    request_id = stream_request_id(victim.lines, session)
    start_api(stack)
    seconds, status = upstream_event(stack, request_id)
    assert status == 499, "billed as a cut connection"
    assert 1.0 < seconds <= sent / 32000, (seconds, sent / 32000)


def test_license_proxy_killed_under_load_loses_no_usage_event(stack: ApiStack) -> None:
    assert stack.proxy is not None
    load = Load(stack, "proxykill")
    load.wait_answered(3)
    stack.proxy.stop(signal.SIGKILL)
    during = len(load.answered())
    load.wait_answered(during + 3)  # served from the API's auth cache while the proxy is down
    stack.proxy = stack.start_proxy()
    load.wait_answered(len(load.answered()) + 2)
    load.stop()
    assert set(load.outcomes.values()) == {200}, load.outcomes
    assert_each_counted_once(stack, load.answered())


def test_redis_killed_under_load_and_mid_stream_loses_nothing(
    stack: ApiStack, own_redis: RedisServer
) -> None:
    clips = [sf.read(SPEECH_DIR / name, dtype="int16")[0].tobytes() for name in
             ("jfk.wav", "librivox_0870.wav", "librivox_0880.wav")]  # fmt: skip
    gap = bytes(2 * 16000 * 2)
    audio = b"".join(clip + gap for clip in clips)
    undisturbed = stream_pcm(stack, audio)
    assert undisturbed.ended and not undisturbed.errors, undisturbed

    killed = threading.Event()

    def kill_redis_after_first_final(message: dict[str, Any]) -> None:
        if not killed.is_set() and message.get("is_final") and message.get("transcript"):
            killed.set()
            own_redis.kill()

    load = Load(stack, "rediskill")
    load.wait_answered(2)
    disturbed = stream_pcm(stack, audio, kill_redis_after_first_final)
    assert disturbed.ended and not disturbed.errors, disturbed
    assert killed.is_set(), "the stream never produced a final"
    own_redis.start()  # the same data directory: AOF replays what was fsynced
    assert stack.api is not None
    wait_http(f"{stack.url}/healthz", stack.api, timeout_s=60)
    load.wait_answered(len(load.answered()) + 2)
    load.stop()

    assert disturbed.text == undisturbed.text, "no committed text lost or repeated"
    assert "your country" in normalise(disturbed.text) and "dashwood" in normalise(disturbed.text)
    assert "Could not write streaming session state to Redis" in stack.api.log
    statuses = Counter(load.outcomes.values())
    assert statuses[200] >= 4 and set(statuses) <= {200, 503}, statuses
    stream_id = stream_request_id(stack.api.lines, disturbed.session_id)
    assert_each_counted_once(stack, [*load.answered(), stream_id])
    assert "Traceback" not in stack.api.log


def test_redis_killed_with_jobs_pending_every_job_completes_once(
    stack: ApiStack, own_redis: RedisServer, receiver: Receiver
) -> None:
    clip = long_speech_wav(20.0)
    seconds = sf.info(io.BytesIO(clip)).duration
    callback = f"{receiver.url}/ok/rediskill"
    submitted = [submit(stack.url, stack, callback, audio=clip) for _ in range(4)]
    job_ids = [accepted(response) for response in submitted]
    first_request = submitted[0].headers["X-Request-ID"]  # what the job runner sends to the worker
    deadline = time.monotonic() + 60
    while not any(f"Request received: {first_request}" in w.proc.log for w in stack.workers):
        assert time.monotonic() < deadline, "the first job never reached a worker"
        time.sleep(0.02)
    assert not any(receiver.for_job(job_id) for job_id in job_ids), "Redis dies with every job pending"
    # The promise covers jobs accepted at least a second before Redis dies: AOF fsyncs every second.
    time.sleep(1.5)
    own_redis.kill()
    time.sleep(2.0)
    own_redis.start()
    assert_each_job_delivered_once(receiver, stack, stack.url, job_ids, seconds)
    assert stack.api is not None
    assert "Traceback" not in stack.api.log
    assert_each_counted_once(stack, job_ids)
