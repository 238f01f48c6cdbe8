"""The whole batch stack as real processes for API tests: license server + proxy, ASR worker(s)
with the real tiny.en model, the API server, and the session's real redis-server.

Start-up is the slow part (the worker loads and warms the model), so one stack serves a test
module; tests that kill a part start their own extra processes.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
import soundfile as sf
from websockets.sync.client import connect

from license_proxy.keys import TrustPolicy, verify_signature
from tests.license_support import dev_key
from tests.service_process import ServiceProcess, free_port
from tests.speech_data import SPEECH_DIR

START_TIMEOUT_S = 180.0
# Generous limits so contract tests are not throttled; the limit tests issue their own keys.
ROOMY_LIMITS = {"requests_per_minute": 100_000, "concurrent_requests": 1000, "audio_hours_per_day": 1000}
ALL_FEATURES = ["batch", "streaming", "timestamps", "punctuation", "diarization", "callbacks"]


def wait_http(url: str, proc: ServiceProcess, timeout_s: float = START_TIMEOUT_S, status: int = 200) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            code = proc.proc.returncode
            raise AssertionError(f"process exited ({code}) while waiting for {url}:\n{proc.log}")
        try:
            if httpx.get(url, timeout=2).status_code == status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer {status} within {timeout_s}s:\n{proc.log}")


@dataclass
class Worker:
    proc: ServiceProcess
    grpc_port: int
    http_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@dataclass
class ApiStack:
    tmp: Path
    bundle: Path
    redis_url: str
    key: str = ""
    license_id: str = ""
    server_port: int = field(default_factory=free_port)
    proxy_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    server: ServiceProcess | None = None
    proxy: ServiceProcess | None = None
    api: ServiceProcess | None = None
    workers: list[Worker] = field(default_factory=list)
    extra: list[ServiceProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def auth(self, key: str | None = None, scheme: str = "Token") -> dict[str, str]:
        return {"Authorization": f"{scheme} {key or self.key}"}

    def issue_key(self, **limits: float) -> str:
        """Another key of this stack's license (same id) with its own limits."""
        return dev_key(license_id=self.license_id, limits={**ROOMY_LIMITS, **limits}, features=ALL_FEATURES)

    # --- processes --------------------------------------------------------------------------------
    def start_license(self) -> None:
        self.server = ServiceProcess(
            ["license-server", "--db", str(self.tmp / "server.sqlite3"), "--port", str(self.server_port)],
            {"OYEZ_LICENSE_SERVER_HOST": "127.0.0.1"},
        )
        self.server.wait_for_line("License server listening on port", timeout=60)
        self.proxy = self.start_proxy()

    def start_proxy(self) -> ServiceProcess:
        proxy = ServiceProcess(
            ["license-proxy"],
            {
                "LICENSE_KEY": self.key,
                "PORT": str(self.proxy_port),
                "OYEZ_HOST": "127.0.0.1",
                "OYEZ_LICENSE_SERVER_URL": f"http://127.0.0.1:{self.server_port}",
                "OYEZ_LICENSE_STATE_DIR": str(self.tmp / "proxy-state"),
                "OYEZ_USAGE_FLUSH_INTERVAL_S": "0.5",
            },
        )
        proxy.wait_for_line("Server listening on port", timeout=60)
        return proxy

    def start_worker(self, *, register: bool = True, **env: str) -> Worker:
        grpc_port, http_port = free_port(), free_port()
        environment = {
            "MODEL_URL": str(self.bundle),
            "PORT": str(grpc_port),
            "OYEZ_HTTP_PORT": str(http_port),
            "OYEZ_HOST": "127.0.0.1",
            "OYEZ_WORKER_ID": f"api-test-{grpc_port}",
            "OYEZ_ADVERTISE_ADDRESS": f"127.0.0.1:{grpc_port}",
            "OYEZ_MAX_BATCH_SIZE": "4",
            "OYEZ_HEARTBEAT_S": "0.5",
            "OYEZ_HEARTBEAT_TTL_S": "3",
            **({"REDIS_URL": self.redis_url} if register else {}),
            **env,
        }
        worker = Worker(ServiceProcess(["worker"], environment), grpc_port, http_port)
        self.workers.append(worker)
        return worker

    def wait_worker(self, worker: Worker) -> None:
        wait_http(f"http://127.0.0.1:{worker.http_port}/health", worker.proc)

    def api_env(self, **env: str) -> dict[str, str]:
        return {
            "LICENSE_KEY": self.key,
            "API_SERVER_PORT": str(self.api_port),
            "OYEZ_HOST": "127.0.0.1",
            "API_BASE_URL": self.proxy_url,
            "LIGHTNING_ASR_BASE_URL": ",".join(f"http://{w.address}" for w in self.workers[:1]),
            "REDIS_URL": self.redis_url,
            "OYEZ_REGISTRY_REFRESH_S": "0.2",
            "OYEZ_STATIC_PROBE_S": "0.5",
            "OYEZ_USAGE_FLUSH_S": "0.5",
            "OYEZ_URL_ALLOWED_HOSTS": "127.0.0.1",
            **env,
        }

    def start_api(self, **env: str) -> ServiceProcess:
        self.api = ServiceProcess(["api"], self.api_env(**env))
        self.api.wait_for_line("API server listening on port", timeout=60)
        return self.api

    def wait_ready(self) -> None:
        assert self.api is not None
        wait_http(f"{self.url}/healthz", self.api)

    def stop(self) -> None:
        procs = [*self.extra]
        if self.api:
            procs.append(self.api)
        procs += [w.proc for w in self.workers]
        procs += [p for p in (self.proxy, self.server) if p is not None]
        for proc in procs:
            if proc.proc.poll() is None:
                proc.stop(signal.SIGTERM, timeout=30)


def new_stack(tmp: Path, bundle: Path, redis_url: str) -> ApiStack:
    key = dev_key(days=30, limits=ROOMY_LIMITS, features=ALL_FEATURES)
    terms = verify_signature(key, TrustPolicy.from_config([], production=False))
    return ApiStack(tmp=tmp, bundle=bundle, redis_url=redis_url, key=key, license_id=terms.license_id)


@contextlib.contextmanager
def running_stack(
    tmp: Path, bundle: Path, redis_url: str, *, workers: int, **api_env: str
) -> Iterator[ApiStack]:
    """License server and proxy, ``workers`` registered workers and the API, all ready; stopped after."""
    stack = new_stack(tmp, bundle, redis_url)
    try:
        stack.start_license()
        started = [stack.start_worker() for _ in range(workers)]
        for worker in started:
            stack.wait_worker(worker)
        stack.start_api(**api_env)
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


def normalise(text: str) -> str:
    """Lower case, letters and spaces only: for comparing transcripts."""
    return re.sub(r"[^a-z ]", "", text.lower()).strip()


def clear_limits(redis_url: str, license_id: str) -> None:
    """Forget a license's limit counters (tests that exercise limits start from zero)."""
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(f"oyez:limits:{{{license_id}}}:*"):
            client.delete(key)
    finally:
        client.close()


def long_speech_wav(seconds: float) -> bytes:
    """Real speech clips one after another with 0.5 s pauses (cycled): a long 16 kHz WAV."""
    pieces: list[np.ndarray] = []
    total = 0.0
    clips = sorted(SPEECH_DIR.glob("*.wav"))
    while total < seconds:
        for path in clips:
            samples, rate = sf.read(path, dtype="float32")
            assert rate == 16000
            pieces += [samples, np.zeros(8000, dtype=np.float32)]
            total += len(samples) / rate + 0.5
            if total >= seconds:
                break
    buffer = io.BytesIO()
    sf.write(buffer, np.concatenate(pieces), 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@dataclass
class StreamRun:
    text: str  # the finals' transcripts, joined
    session_id: str
    errors: list[dict[str, Any]]
    ended: bool  # the terminal message (is_last, or an error) arrived


def stream_pcm(
    stack: ApiStack,
    audio: bytes,
    on_message: Callable[[dict[str, Any]], None] = lambda _: None,
    query: str = "",
    timeout_s: float = 120.0,
) -> StreamRun:
    """Stream 16 kHz linear16 audio over ``/v1/listen/stream`` at about 4x real time, then
    ``close_stream``; ``on_message`` sees every server message as it arrives."""
    finals: list[str] = []
    errors: list[dict[str, Any]] = []
    session = [""]
    url = f"ws://127.0.0.1:{stack.api_port}/v1/listen/stream{query}"
    with connect(url, additional_headers=stack.auth(), open_timeout=30) as ws:
        done = threading.Event()

        def receive() -> None:
            while not done.is_set():
                message = json.loads(ws.recv(timeout=timeout_s))
                session[0] = message.get("session_id", session[0])
                on_message(message)
                if message.get("type") == "error":
                    errors.append(message)
                if message.get("type") == "transcription" and message["is_final"]:
                    finals.append(message["transcript"])
                if message.get("is_last") or message.get("type") == "error":
                    done.set()

        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        for start in range(0, len(audio), 4096):
            ws.send(audio[start : start + 4096])
            time.sleep(0.032)
        ws.send(json.dumps({"type": "close_stream"}))
        receiver.join(timeout_s + 60)
    text = " ".join(t.strip() for t in finals if t.strip())
    return StreamRun(text, session[0], errors, done.is_set())


def stream_request_id(api_log_lines: list[str], session_id: str) -> str:
    """The request id the API logged for a stream session (its usage event's id)."""
    line = next(line for line in api_log_lines if session_id in line and "/v1/listen/stream" in line)
    found = re.search(r"request_id=(req_[0-9a-f]+)", line)
    assert found is not None, line
    return found.group(1)
