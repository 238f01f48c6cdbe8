"""Asynchronous jobs, the parts testable without the stack: the job record, webhook signing and
backoff, delivery against a local receiver, and the Redis store's atomic steps on a real redis-server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from api_server.errors import JobsUnavailable
from api_server.job_store import JOB_GROUP, JOB_STREAM, JobStore, job_store_client
from api_server.jobs import Job, error_status, iso_time, job_error, new_job_id, valid_job_id
from api_server.url_fetch import FetchPolicy
from api_server.webhooks import (
    ATTEMPT_HEADER,
    JOB_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSender,
    backoff_delays,
    derive_secret,
    encode_body,
    sign,
    verify,
)
from oyez.errors import UnsupportedFormat

T = TypeVar("T")
LOCAL = FetchPolicy(allowed_hosts=frozenset({"127.0.0.1"}))


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


def _job(**fields: Any) -> Job:
    return Job(
        job_id=new_job_id(),
        license_id="lic-1",
        request_id="req_0123456789abcdef",
        callback_url="https://hooks.example.com/x",
        created_at=1_700_000_000.25,
        **fields,
    )


# --- the job record -------------------------------------------------------------------------------
def test_job_ids() -> None:
    job_id = new_job_id()
    assert valid_job_id(job_id) and job_id.startswith("job_") and len(job_id) == 28
    assert new_job_id() != job_id
    for bad in ("job_", "job_XYZ", "req_0123456789abcdef01234567", job_id + "0", "../job"):
        assert not valid_job_id(bad)


def test_job_round_trips_through_redis_fields() -> None:
    job = _job(language="de", punctuate=False, timestamps=True, url="https://a.example/x.wav")
    job.features = ["batch", "callbacks", "timestamps"]
    fields = job.to_fields()
    assert all(isinstance(value, str) for value in fields.values())
    assert Job.from_fields(fields) == Job.from_fields({k.encode(): v.encode() for k, v in fields.items()})
    back = Job.from_fields(fields)
    assert back.language == "de" and back.punctuate is False and back.timestamps is True
    assert back.url == "https://a.example/x.wav" and back.created_at == job.created_at
    assert back.status == "processing" and back.result is None and back.error is None
    assert back.webhook_status == "pending" and not back.finished
    done = _job(status="completed", result={"text": "hi", "words": [{"word": "hi"}]}, completed_at=5.5)
    done.webhook_status = "delivered"
    again = Job.from_fields(done.to_fields())
    assert again.result == {"text": "hi", "words": [{"word": "hi"}]} and again.completed_at == 5.5
    assert again.finished


def test_unknown_states_read_as_safe_defaults() -> None:
    fields = {**_job().to_fields(), "status": "weird", "webhook_status": "??"}
    job = Job.from_fields(fields)
    assert job.status == "processing" and job.webhook_status == "pending"


def test_views_and_webhook_payloads() -> None:
    completed = _job(
        status="completed", result={"request_id": "req_1", "text": "ok"}, completed_at=1_700_000_001
    )
    assert completed.webhook_payload() == {
        "job_id": completed.job_id,
        "status": "completed",
        "result": {"request_id": "req_1", "text": "ok"},
    }
    view = completed.view()
    assert view["status"] == "completed" and view["result"]["text"] == "ok"
    assert view["created_at"] == "2023-11-14T22:13:20.250Z" and view["completed_at"].endswith("Z")
    assert view["webhook"] == {"status": "pending", "attempts": 0}
    error = job_error(UnsupportedFormat("not audio"))
    assert error == {"error": "Unsupported audio format", "code": "UNSUPPORTED_FORMAT", "detail": "not audio"}
    failed = _job(status="failed", error=error, webhook_status="failed", webhook_attempts=4)
    failed.webhook_error = "HTTP 500"
    assert failed.webhook_payload() == {"job_id": failed.job_id, "status": "failed", **error}
    assert failed.view()["webhook"] == {"status": "failed", "attempts": 4, "last_error": "HTTP 500"}
    assert "result" not in failed.view() and failed.view()["code"] == "UNSUPPORTED_FORMAT"
    assert "completed_at" not in _job().view()
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"


def test_error_status_matches_the_synchronous_answer() -> None:
    assert error_status(None) == 200
    assert error_status({"error": "x", "code": "UNSUPPORTED_FORMAT"}) == 415
    assert error_status({"error": "x", "code": "URL_FETCH_FAILED"}) == 400
    assert error_status({"error": "x", "code": "INTERNAL_ERROR"}) == 500


# --- signing and backoff --------------------------------------------------------------------------
def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = encode_body({"job_id": "job_1", "status": "completed", "result": {"text": "héllo"}})
    assert body == '{"job_id":"job_1","status":"completed","result":{"text":"héllo"}}'.encode()
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", "1700000000", body) == f"sha256={expected}"
    signature = sign("s3cret", "1700000000", body)
    assert verify("s3cret", "1700000000", body, signature, now=1_700_000_100)
    assert not verify("s3cret", "1700000000", body + b" ", signature, now=1_700_000_100)
    assert not verify("other", "1700000000", body, signature, now=1_700_000_100)
    assert not verify("s3cret", "1700000001", body, signature, now=1_700_000_100)
    assert not verify("s3cret", "1700000000", body, signature, now=1_700_001_000)  # too old: replay
    assert not verify("s3cret", "soon", body, signature)


def test_derived_secret_is_documented_and_stable() -> None:
    secret = derive_secret("oyez1.abc.def")
    assert secret == hmac.new(b"oyez1.abc.def", b"oyez-webhook-secret-v1", hashlib.sha256).hexdigest()
    assert secret == derive_secret("oyez1.abc.def") != derive_secret("oyez1.abc.deg")


def test_backoff_schedule() -> None:
    assert backoff_delays(3, 1.0) == [1.0, 2.0, 4.0]
    assert backoff_delays(3, 0.1) == pytest.approx([0.1, 0.2, 0.4])
    assert backoff_delays(0, 1.0) == []
    sender = WebhookSender("s", LOCAL)
    assert sender.max_attempts == 4 and sender.delays == [1.0, 2.0, 4.0]


# --- delivery against a local receiver ------------------------------------------------------------
class _Receiver(http.server.ThreadingHTTPServer):
    statuses: list[int]
    seen: list[tuple[dict[str, str], bytes]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append((dict(self.headers.items()), body))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver(("127.0.0.1", 0), _Handler)
    server.statuses, server.seen = [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: _Receiver) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/hook"


def test_delivery_retries_with_backoff_then_succeeds(receiver: _Receiver) -> None:
    receiver.statuses = [500, 503]
    waits: list[float] = []
    attempts: list[tuple[int, str | None]] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def hook(attempt: int, error: str | None) -> bool:
        attempts.append((attempt, error))
        return True

    sender = WebhookSender("secret", LOCAL, retries=3, backoff_s=1.0, sleep=sleep)
    body = encode_body({"job_id": "job_x", "status": "completed", "result": {}})
    outcome = run(lambda: sender.deliver(_url(receiver), "job_x", body, on_attempt=hook))
    assert outcome.delivered and outcome.attempts == 3
    assert waits == [1.0, 2.0]
    assert attempts == [(1, "HTTP 500"), (2, "HTTP 503"), (3, None)]
    assert len(receiver.seen) == 3
    for number, (headers, seen_body) in enumerate(receiver.seen, start=1):
        assert seen_body == body
        assert headers[JOB_ID_HEADER] == "job_x" and headers[ATTEMPT_HEADER] == str(number)
        assert headers["Content-Type"] == "application/json"
        assert verify("secret", headers[TIMESTAMP_HEADER], seen_body, headers[SIGNATURE_HEADER])


def test_delivery_gives_up_after_the_retries(receiver: _Receiver) -> None:
    receiver.statuses = [500] * 10
    sender = WebhookSender("secret", LOCAL, retries=3, backoff_s=0.01)
    outcome = run(lambda: sender.deliver(_url(receiver), "job_y", b"{}"))
    assert not outcome.delivered and outcome.attempts == 4 and outcome.error == "HTTP 500"
    assert len(receiver.seen) == 4
    # A replica that takes over after two attempts makes only the remaining two.
    receiver.seen.clear()
    outcome = run(lambda: sender.deliver(_url(receiver), "job_y", b"{}", done=2))
    assert outcome.attempts == 4 and len(receiver.seen) == 2


def test_delivery_to_a_guarded_address_is_refused_without_retries() -> None:
    sender = WebhookSender("secret", FetchPolicy(), retries=3, backoff_s=0.01)
    for url in ("http://169.254.169.254/latest", "http://127.0.0.1:9/hook", "http://[::1]:9/x"):
        outcome = run(lambda url=url: sender.deliver(url, "job_z", b"{}"))  # type: ignore[misc]
        assert outcome.refused and outcome.attempts == 1 and not outcome.delivered
        assert "blocked" in (outcome.error or "")


def test_unreachable_receiver_is_retried() -> None:
    sender = WebhookSender("secret", LOCAL, retries=2, backoff_s=0.01, timeout_s=2)
    outcome = run(lambda: sender.deliver("http://127.0.0.1:9/nothing-listens", "job_q", b"{}"))
    assert not outcome.delivered and not outcome.refused and outcome.attempts == 3
    assert "ConnectError" in (outcome.error or "")


# --- the Redis store ------------------------------------------------------------------------------
@pytest.fixture
def store_url(redis_server: str) -> str:
    return redis_server.rsplit("/", 1)[0] + "/6"


def _store(url: str, **overrides: Any) -> JobStore:
    options: dict[str, Any] = {"retention_s": 60, "audio_max_bytes": 1000, "lease_s": 5.0, **overrides}
    return JobStore(job_store_client(url), **options)


def test_store_submit_read_lease_outcome_finish(store_url: str) -> None:
    async def scenario() -> None:
        store = _store(store_url)
        await store.client.flushdb()
        await store.ensure_group()
        await store.ensure_group()  # idempotent
        job = _job()
        await store.submit(job, b"RIFF" + bytes(600))
        assert (await store.audio(job.job_id)) == b"RIFF" + bytes(600)
        # The audio spool is capped across pending jobs.
        with pytest.raises(JobsUnavailable, match="spool of pending jobs' audio is full"):
            await store.submit(_job(), bytes(600))
        url_job = _job(url="https://a.example/x.wav")
        await store.submit(url_job, None)  # a URL job holds no audio
        loaded = await store.load(job.job_id)
        assert loaded is not None and loaded.audio_bytes == 604 and loaded.license_id == "lic-1"
        assert 0 < await store.client.ttl(f"oyez:job:{job.job_id}") <= 60

        entries = await store.read_new("a", 10, 100)
        assert [job_id for _, job_id in entries] == [job.job_id, url_job.job_id]
        entry_id = entries[0][0]
        assert await store.acquire(job.job_id, "a") and await store.acquire(job.job_id, "a")
        assert not await store.acquire(job.job_id, "b")
        assert await store.start_attempt(job.job_id, "a") == 1
        assert await store.start_attempt(job.job_id, "b") == -1  # not the holder
        # Fenced: only the lease holder records the outcome, and only once.
        job.status, job.result, job.completed_at, job.updated_at = "completed", {"text": "x"}, 9.0, 9.0
        assert await store.record_outcome(job, "b") == 0
        assert await store.record_outcome(job, "a") == 1
        assert await store.record_outcome(job, "a") == -1
        assert await store.audio(job.job_id) is None  # audio dropped with the outcome
        await store.submit(_job(), bytes(900))  # ... which frees its share of the spool
        assert not await store.record_webhook(job.job_id, "b", status="delivered", attempts=1, error=None)
        assert await store.record_webhook(job.job_id, "a", status="delivered", attempts=1, error=None)
        done = await store.load(job.job_id)
        assert done is not None and done.finished and done.result == {"text": "x"}
        await store.finish(entry_id, job.job_id, "a")
        assert await store.client.exists(f"oyez:job:{job.job_id}:lease") == 0
        pending: Any = await store.client.xpending(JOB_STREAM, JOB_GROUP)
        assert pending["pending"] == 1  # the URL job is still pending
        await store.aclose()

    run(scenario)


def test_store_claims_entries_of_a_silent_consumer(store_url: str) -> None:
    async def scenario() -> None:
        store = _store(store_url, lease_s=0.3)
        await store.client.flushdb()
        await store.ensure_group()
        job = _job()
        await store.submit(job, None)
        [(entry_id, _)] = await store.read_new("dead", 1, 100)
        assert await store.acquire(job.job_id, "dead")
        _, claimed = await store.claim_stale("alive", 5, 60_000, "0-0")
        assert claimed == []  # not idle long enough
        await asyncio.sleep(0.4)
        _, claimed = await store.claim_stale("alive", 5, 300, "0-0")
        assert claimed == [(entry_id, job.job_id)]
        assert await store.acquire(job.job_id, "alive")  # the dead consumer's lease expired
        assert not await store.renew(job.job_id, "dead") and await store.renew(job.job_id, "alive")
        await store.touch(entry_id, "alive")
        await store.finish(entry_id, job.job_id, "alive")
        assert await store.prune_consumers("alive", 0) == 1  # "dead" has nothing pending
        await store.aclose()

    run(scenario)


def test_stream_entries_are_deleted_when_finished(store_url: str) -> None:
    async def scenario() -> None:
        store = _store(store_url)
        await store.client.flushdb()
        await store.ensure_group()
        for _ in range(3):
            await store.submit(_job(), None)
        for entry_id, job_id in await store.read_new("c", 10, 100):
            await store.finish(entry_id, job_id, "c")
        assert await store.client.xlen(JOB_STREAM) == 0
        await store.aclose()

    run(scenario)


def test_job_times_are_unix_seconds() -> None:
    job = _job()
    assert (
        abs(Job.from_fields({**job.to_fields(), "created_at": repr(time.time())}).created_at - time.time())
        < 5
    )
    assert json.loads(job.to_fields()["features"]) == ["batch", "callbacks"]


class _SwallowingStore:
    """A store whose Redis call swallows a cancellation (the first) and returns normally, as a
    client may."""

    def __init__(self) -> None:
        self.renewing = asyncio.Event()
        self.renewals = 0
        self.touches = 0
        self.swallowed = 0

    async def renew(self, job_id: str, owner: str) -> bool:
        self.renewals += 1
        self.renewing.set()
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed += 1  # the cancellation is lost here
        return True

    async def touch(self, entry_id: str, owner: str) -> None:
        self.touches += 1


def test_lease_heartbeat_stops_even_when_a_redis_call_swallows_the_cancellation() -> None:
    """Otherwise the job's handler waits on stop() forever and its queue entry is never deleted."""
    from api_server.job_runner import _Lease

    async def scenario() -> None:
        store = _SwallowingStore()
        lease = _Lease(store, "job_x", "1-0", "me", every_s=0.01)  # type: ignore[arg-type]
        await asyncio.wait_for(store.renewing.wait(), timeout=5)
        stopping = asyncio.create_task(lease.stop())
        finished, _ = await asyncio.wait({stopping}, timeout=5)
        assert stopping in finished, "stop() waits forever on a heartbeat that lost its cancellation"
        assert store.swallowed == 1
        renewals, touches = store.renewals, store.touches
        await asyncio.sleep(0.1)
        assert (store.renewals, store.touches) == (renewals, touches), "the heartbeat goes on"

    run(scenario)
