"""A local webhook receiver and helpers for asynchronous jobs (``callback_url``), shared by the job
tests and the fault tests."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from api_server.webhooks import JOB_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.integration.api_stack import ApiStack
from tests.speech_data import SPEECH_DIR

JFK = (SPEECH_DIR / "jfk.wav").read_bytes()
JFK_WORDS = "ask not what your country can do for you"
SECRET = "test-webhook-secret"
JOB_ENV = {
    "OYEZ_JOB_CLAIM_IDLE_S": "2",
    "OYEZ_WEBHOOK_BACKOFF_S": "0.2",
    "OYEZ_WEBHOOK_TIMEOUT_S": "5",
    "OYEZ_WEBHOOK_SECRET": SECRET,
    "OYEZ_JOB_CONCURRENCY": "3",
}
TIMEOUT = 120.0


# --- the webhook receiver -------------------------------------------------------------------------
@dataclass
class Hook:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def job_id(self) -> str:
        return self.headers.get(JOB_ID_HEADER, "")

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    """``/ok/*`` answers 200; ``/flaky/*`` 500 twice per job, then 200; ``/fail/*`` always 500;
    ``GET /audio/jfk.wav`` serves audio for url jobs."""

    url: str = ""
    hooks: list[Hook] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def status_for(self, path: str, job_id: str) -> int:
        if path.startswith("/fail/"):
            return 500
        if path.startswith("/flaky/"):
            earlier = sum(1 for hook in self.hooks if hook.job_id == job_id)
            return 500 if earlier < 2 else 200
        return 200

    def for_job(self, job_id: str) -> list[Hook]:
        with self.lock:
            return [hook for hook in self.hooks if hook.job_id == job_id]

    def wait(self, job_id: str, count: int = 1, timeout: float = 60.0) -> list[Hook]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hooks = self.for_job(job_id)
            if len(hooks) >= count:
                return hooks
            time.sleep(0.05)
        raise AssertionError(
            f"{count} webhook(s) for {job_id} not received in {timeout}s: {self.for_job(job_id)}"
        )


class _Server(http.server.ThreadingHTTPServer):
    receiver: Receiver


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        receiver = self.server.receiver
        headers = dict(self.headers.items())
        with receiver.lock:
            status = receiver.status_for(self.path, headers.get(JOB_ID_HEADER, ""))
            receiver.hooks.append(Hook(self.path, headers, body, status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if self.path != "/audio/jfk.wav":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(JFK)))
        self.end_headers()
        self.wfile.write(JFK)

    def log_message(self, *_: object) -> None:
        return


@contextlib.contextmanager
def serve_receiver() -> Iterator[Receiver]:
    """A webhook receiver on a free loopback port (the ``receiver`` fixture in conftest)."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.receiver = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.receiver
    finally:
        server.shutdown()
        server.server_close()


def submit(
    base_url: str, stack: ApiStack, callback: str, audio: bytes = JFK, key: str | None = None, **fields: str
) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/listen",
        headers=stack.auth(key),
        files={"audio": ("clip.wav", audio, "audio/wav")},
        data={"callback_url": callback, **fields},
        timeout=TIMEOUT,
    )


def accepted(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"job_id", "status"} and body["status"] == "processing", body
    assert re.match(r"^job_[0-9a-f]{24}$", body["job_id"])
    return str(body["job_id"])


def get_job(base_url: str, stack: ApiStack, job_id: str, key: str | None = None) -> httpx.Response:
    return httpx.get(f"{base_url}/v1/listen/jobs/{job_id}", headers=stack.auth(key), timeout=30)


def wait_job(
    base_url: str, stack: ApiStack, job_id: str, webhook: str, timeout: float = 60.0
) -> dict[str, Any]:
    """Poll until the job's webhook reaches ``webhook`` (delivered or failed)."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = get_job(base_url, stack, job_id).json()
        if body.get("webhook", {}).get("status") == webhook:
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach webhook={webhook}: {body}")


def assert_signed(hook: Hook) -> None:
    assert hook.headers["Content-Type"] == "application/json"
    assert hook.headers[SIGNATURE_HEADER].startswith("sha256=")
    assert abs(int(hook.headers[TIMESTAMP_HEADER]) - time.time()) < 120
    assert verify(SECRET, hook.headers[TIMESTAMP_HEADER], hook.body, hook.headers[SIGNATURE_HEADER])


def assert_each_job_delivered_once(
    receiver: Receiver, stack: ApiStack, base_url: str, job_ids: list[str], seconds: float
) -> None:
    """Every job completes with exactly one signed webhook, and its stored result has the audio's
    duration (within 0.1 s)."""
    for job_id in job_ids:
        receiver.wait(job_id, timeout=180)
    time.sleep(3.0)  # time for any duplicate to show up
    counts = {job_id: len(receiver.for_job(job_id)) for job_id in job_ids}
    assert counts == dict.fromkeys(job_ids, 1), counts
    for job_id in job_ids:
        [hook] = receiver.for_job(job_id)
        assert_signed(hook)
        assert hook.json()["status"] == "completed", hook.json()
        view = wait_job(base_url, stack, job_id, "delivered", timeout=30)
        assert view["status"] == "completed"
        assert abs(view["result"]["duration"] - seconds) <= 0.1, (view["result"]["duration"], seconds)
