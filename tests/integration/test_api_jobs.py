"""Asynchronous jobs (``callback_url``) against real processes: license server + proxy, one tiny.en
worker, TWO API replicas sharing one Redis database, and a local webhook receiver.

The last test SIGKILLs replica A while it holds jobs: replica B must take them over, and the
receiver must get exactly one webhook per job.
"""

from __future__ import annotations

import io
import itertools
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import soundfile as sf

from api_server.job_store import JOB_GROUP, JOB_STREAM
from api_server.jobs import Job, new_job_id
from api_server.webhooks import ATTEMPT_HEADER, TIMESTAMP_HEADER
from tests.integration.api_stack import ApiStack, long_speech_wav, new_stack, normalise, wait_http
from tests.integration.job_support import (
    JFK,
    JFK_WORDS,
    JOB_ENV,
    TIMEOUT,
    Receiver,
    accepted,
    assert_each_job_delivered_once,
    assert_signed,
    get_job,
    submit,
    wait_job,
)
from tests.license_support import dev_key
from tests.service_process import ServiceProcess, free_port

REDIS_DB = 5


# --- the stack: two API replicas on one Redis database --------------------------------------------
@dataclass
class Replicas:
    stack: ApiStack
    b: ServiceProcess
    b_port: int
    redis_url: str

    @property
    def a(self) -> ServiceProcess:
        assert self.stack.api is not None
        return self.stack.api

    @property
    def a_url(self) -> str:
        return self.stack.url

    @property
    def b_url(self) -> str:
        return f"http://127.0.0.1:{self.b_port}"


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, redis_server: str
) -> Iterator[Replicas]:
    redis_url = f"{redis_server.rsplit('/', 1)[0]}/{REDIS_DB}"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    stack = new_stack(tmp_path_factory.mktemp("jobs"), tiny_bundle, redis_url)
    try:
        stack.start_license()
        worker = stack.start_worker()
        stack.wait_worker(worker)
        stack.start_api(**JOB_ENV)
        b_port = free_port()
        b = ServiceProcess(["api"], stack.api_env(API_SERVER_PORT=str(b_port), **JOB_ENV))
        stack.extra.append(b)
        b.wait_for_line("API server listening on port", timeout=60)
        stack.wait_ready()
        wait_http(f"http://127.0.0.1:{b_port}/healthz", b)
        yield Replicas(stack, b, b_port, redis_url)
    finally:
        stack.stop()


# --- tests ----------------------------------------------------------------------------------------
def test_job_answers_at_once_then_one_signed_webhook_with_the_sync_fields(
    replicas: Replicas, receiver: Receiver
) -> None:
    stack = replicas.stack
    sync = httpx.post(
        f"{replicas.a_url}/v1/listen",
        headers=stack.auth(),
        files={"audio": ("clip.wav", JFK, "audio/wav")},
        data={"timestamps": "true"},
        timeout=TIMEOUT,
    )
    assert sync.status_code == 200, sync.text
    started = time.monotonic()
    job_id = accepted(submit(replicas.a_url, stack, f"{receiver.url}/ok/first", timestamps="true"))
    assert time.monotonic() - started < 5
    before = get_job(replicas.b_url, stack, job_id)  # any replica answers
    assert before.status_code == 200, before.text
    assert before.json()["status"] == "processing" and "result" not in before.json()
    assert before.json()["created_at"].endswith("Z") and "completed_at" not in before.json()

    [hook] = receiver.wait(job_id)
    assert_signed(hook)
    assert hook.path == "/ok/first" and hook.headers[ATTEMPT_HEADER] == "1"
    payload = hook.json()
    assert set(payload) == {"job_id", "status", "result"}
    assert payload["job_id"] == job_id and payload["status"] == "completed"
    result = payload["result"]
    assert (
        set(result)
        == set(sync.json())
        == {"request_id", "text", "confidence", "duration", "language", "words"}
    )
    assert result["text"] == sync.json()["text"] and JFK_WORDS in normalise(result["text"])
    assert result["duration"] == pytest.approx(sync.json()["duration"])
    assert result["request_id"].startswith("req_") and result["words"]

    after = wait_job(replicas.a_url, stack, job_id, "delivered")
    assert after["status"] == "completed" and after["result"] == result
    assert after["completed_at"] >= after["created_at"]
    assert after["webhook"] == {"status": "delivered", "attempts": 1}
    time.sleep(0.5)
    assert len(receiver.for_job(job_id)) == 1


def test_url_job_and_json_body(replicas: Replicas, receiver: Receiver) -> None:
    stack = replicas.stack
    response = httpx.post(
        f"{replicas.b_url}/v1/listen",
        headers=stack.auth(),
        json={
            "url": f"{receiver.url}/audio/jfk.wav",
            "callback_url": f"{receiver.url}/ok/url",
            "punctuate": False,
        },
        timeout=TIMEOUT,
    )
    job_id = accepted(response)
    [hook] = receiver.wait(job_id)
    result = hook.json()["result"]
    assert JFK_WORDS in result["text"].lower() and "," not in result["text"] and "words" not in result


def test_failed_job_reports_the_error(replicas: Replicas, receiver: Receiver) -> None:
    stack = replicas.stack
    undecodable = b"fLaC" + bytes(range(256)) * 64  # a FLAC signature, then nothing a decoder can read
    job_id = accepted(submit(replicas.a_url, stack, f"{receiver.url}/ok/failed", audio=undecodable))
    [hook] = receiver.wait(job_id)
    assert_signed(hook)
    payload = hook.json()
    assert payload["job_id"] == job_id and payload["status"] == "failed"
    assert payload["code"] in {"CORRUPT_AUDIO", "UNSUPPORTED_FORMAT", "EMPTY_AUDIO"}, payload
    assert isinstance(payload["error"], str) and payload["error"]
    assert "result" not in payload
    view = wait_job(replicas.b_url, stack, job_id, "delivered")
    assert (
        view["status"] == "failed" and view["code"] == payload["code"] and view["error"] == payload["error"]
    )
    assert "result" not in view and view["completed_at"]
    # Audio no decoder can even sniff is refused at once, as the synchronous route does.
    refused = submit(replicas.a_url, stack, f"{receiver.url}/ok/x", audio=b"<html>not audio</html>")
    assert refused.status_code == 415 and refused.json()["code"] == "UNSUPPORTED_FORMAT"


def test_webhook_retried_until_delivered_once(replicas: Replicas, receiver: Receiver) -> None:
    stack = replicas.stack
    job_id = accepted(submit(replicas.b_url, stack, f"{receiver.url}/flaky/retry"))
    hooks = receiver.wait(job_id, count=3)
    assert [hook.status for hook in hooks] == [500, 500, 200]
    assert [hook.headers[ATTEMPT_HEADER] for hook in hooks] == ["1", "2", "3"]
    assert len({hook.body for hook in hooks}) == 1  # the same body every time, re-signed
    for hook in hooks:
        assert_signed(hook)
    gaps = [
        float(b.headers[TIMESTAMP_HEADER]) - float(a.headers[TIMESTAMP_HEADER])
        for a, b in itertools.pairwise(hooks)
    ]
    assert all(gap <= 3 for gap in gaps)
    view = wait_job(replicas.a_url, stack, job_id, "delivered")
    assert view["webhook"]["attempts"] == 3
    time.sleep(0.5)
    assert len(receiver.for_job(job_id)) == 3


def test_webhook_given_up_after_four_attempts_result_still_readable(
    replicas: Replicas, receiver: Receiver
) -> None:
    stack = replicas.stack
    job_id = accepted(submit(replicas.a_url, stack, f"{receiver.url}/fail/always"))
    view = wait_job(replicas.a_url, stack, job_id, "failed", timeout=60)
    assert view["webhook"] == {"status": "failed", "attempts": 4, "last_error": "HTTP 500"}
    assert view["status"] == "completed" and JFK_WORDS in normalise(view["result"]["text"])
    assert len(receiver.for_job(job_id)) == 4
    time.sleep(0.5)
    assert len(receiver.for_job(job_id)) == 4


@pytest.mark.parametrize(
    ("callback", "code"),
    [
        ("http://169.254.169.254/latest/meta-data", "INVALID_PARAMETER"),
        ("http://10.1.2.3/hook", "INVALID_PARAMETER"),
        ("http://[::1]:8080/hook", "INVALID_PARAMETER"),
        ("ftp://example.com/hook", "INVALID_PARAMETER"),
        ("http://user:pw@127.0.0.1/hook", "INVALID_PARAMETER"),
    ],
)
def test_callback_to_a_blocked_address_is_400(replicas: Replicas, callback: str, code: str) -> None:
    response = submit(replicas.a_url, replicas.stack, callback)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert "callback" in (response.json().get("detail") or response.json()["error"]).lower()


def test_jobs_are_visible_only_to_their_license(replicas: Replicas) -> None:
    stack = replicas.stack
    missing = get_job(replicas.a_url, stack, new_job_id())
    assert missing.status_code == 404
    assert missing.json() == {"error": "Job not found", "code": "JOB_NOT_FOUND"}
    assert get_job(replicas.a_url, stack, "not-a-job-id").status_code == 404
    # A job of another license (planted in the shared Redis) is the same 404 for this license's keys.
    client = redis.Redis.from_url(replicas.redis_url)
    try:
        foreign = Job(new_job_id(), "another-license", "req_x", "https://h.example/x", time.time())
        mine = Job(new_job_id(), stack.license_id, "req_y", "https://h.example/y", time.time())
        for job in (foreign, mine):
            client.hset(f"oyez:job:{job.job_id}", mapping=job.to_fields())  # type: ignore[arg-type]
            client.expire(f"oyez:job:{job.job_id}", 60)
        other = get_job(replicas.a_url, stack, foreign.job_id)
        assert other.status_code == 404 and other.json()["code"] == "JOB_NOT_FOUND"
        own = get_job(replicas.a_url, stack, mine.job_id, key=stack.issue_key())  # any key of the license
        assert own.status_code == 200 and own.json()["status"] == "processing"
    finally:
        client.delete(f"oyez:job:{foreign.job_id}", f"oyez:job:{mine.job_id}")
        client.close()
    # A key of another license cannot even authenticate against this deployment.
    stranger = get_job(replicas.a_url, stack, mine.job_id, key=dev_key())
    assert stranger.status_code == 401 and stranger.json()["code"] == "INVALID_LICENSE"
    anonymous = httpx.get(f"{replicas.a_url}/v1/listen/jobs/{mine.job_id}", timeout=30)
    assert anonymous.status_code == 401


def test_unlicensed_callbacks_feature_is_403(replicas: Replicas, receiver: Receiver) -> None:
    stack = replicas.stack
    no_callbacks = dev_key(license_id=stack.license_id, features=["batch", "punctuation", "timestamps"])
    in_form = submit(replicas.a_url, stack, f"{receiver.url}/ok/nope", key=no_callbacks)
    assert in_form.status_code == 403 and in_form.json()["code"] == "FEATURE_NOT_LICENSED", in_form.text
    in_query = httpx.post(
        f"{replicas.a_url}/v1/listen",
        params={"callback_url": f"{receiver.url}/ok/nope"},
        headers={**stack.auth(no_callbacks), "Content-Type": "audio/wav"},
        content=JFK,
        timeout=TIMEOUT,
    )
    assert in_query.status_code == 403 and in_query.json()["feature"] == "callbacks"
    assert not [hook for hook in receiver.hooks if hook.path == "/ok/nope"]


def test_without_redis_callback_url_is_a_clear_400(replicas: Replicas, receiver: Receiver) -> None:
    stack = replicas.stack
    port = free_port()
    lone = ServiceProcess(["api"], stack.api_env(API_SERVER_PORT=str(port), REDIS_URL=""))
    try:
        lone.wait_for_line("API server listening on port", timeout=60)
        response = submit(f"http://127.0.0.1:{port}", stack, f"{receiver.url}/ok/lone")
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["code"] == "FEATURE_NOT_AVAILABLE" and "Redis (REDIS_URL)" in body["error"]
        status = get_job(f"http://127.0.0.1:{port}", stack, new_job_id())
        assert status.status_code == 400 and status.json()["code"] == "FEATURE_NOT_AVAILABLE"
    finally:
        lone.stop(signal.SIGTERM, timeout=20)


def test_replica_killed_with_jobs_pending_every_job_completes_once(
    replicas: Replicas, receiver: Receiver
) -> None:
    stack = replicas.stack
    clip = long_speech_wav(30.0)
    clip_seconds = sf.info(io.BytesIO(clip)).duration
    job_ids = [
        accepted(submit(replicas.a_url, stack, f"{receiver.url}/ok/crash", audio=clip)) for _ in range(6)
    ]
    a_consumer = f"-{replicas.a.proc.pid}-"
    client = redis.Redis.from_url(replicas.redis_url, decode_responses=True)
    try:
        # Kill A while it holds jobs whose outcome is not recorded yet.
        deadline = time.monotonic() + 60
        held: list[str] = []
        while time.monotonic() < deadline and not held:
            pending: Any = client.xpending_range(JOB_STREAM, JOB_GROUP, "-", "+", 100)
            entries = {
                str(p["message_id"]): str(p["consumer"]) for p in pending if a_consumer in str(p["consumer"])
            }
            for entry_id in entries:
                found: Any = client.xrange(JOB_STREAM, entry_id, entry_id)
                job_id = found[0][1]["job_id"] if found else None
                if job_id and client.hget(f"oyez:job:{job_id}", "status") == "processing":
                    held.append(job_id)
            if not held:
                time.sleep(0.02)
        assert held, f"replica A never held a job: {replicas.a.log[-3000:]}"
        replicas.a.proc.send_signal(signal.SIGKILL)
        replicas.a.proc.wait(10)

        assert_each_job_delivered_once(receiver, stack, replicas.b_url, job_ids, clip_seconds)
        assert "taken over from a silent replica" in replicas.b.log
        # An entry left in A's list by the kill is deleted by B once A's lease has expired and the
        # entry has been idle long enough again: wait for that, then nothing may be left.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            summary: Any = client.xpending(JOB_STREAM, JOB_GROUP)
            if client.xlen(JOB_STREAM) == 0 and summary["pending"] == 0:
                break
            time.sleep(0.2)
        left: Any = client.xrange(JOB_STREAM)
        assert not left, (left, client.xpending_range(JOB_STREAM, JOB_GROUP, "-", "+", 10))
        assert client.xpending(JOB_STREAM, JOB_GROUP)["pending"] == 0
        assert not list(client.scan_iter("oyez:job:*:audio")) and not list(
            client.scan_iter("oyez:job:*:lease")
        )
    finally:
        client.close()
