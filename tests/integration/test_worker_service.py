"""The ASR worker's service shell over real sockets: gRPC, HTTP health/metrics, Redis registry, drain.

The engine is ``tests.fake_engine.FakeEngine`` (a fake at the edge); audio decoding is the real
``asr_worker.engine.audio.decode_audio``. Each test runs its own event loop and its own worker on
127.0.0.1 ephemeral ports.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import grpc
import httpx
import numpy as np
import pytest
import redis.asyncio as redis
import structlog
from grpc.aio import EOF  # type: ignore[attr-defined]
from grpc_health.v1 import health_pb2, health_pb2_grpc

from asr_worker.service.admission import JobKind
from asr_worker.service.app import SERVICE_NAME, WorkerApp, serve
from asr_worker.service.lifecycle import Phase
from asr_worker.service.settings import WorkerSettings
from oyez.constants import MAX_UPLOAD_BYTES, REGISTRY_SET_KEY
from oyez.errors import ModelError
from oyez.proto import asr_v1_pb2 as pb
from oyez.proto import asr_v1_pb2_grpc as pb_grpc
from tests.fake_engine import FAKE_MODEL_NAME, FakeEngine
from tests.speech_data import SPEECH_DIR

JFK_WAV = SPEECH_DIR / "jfk.wav"
TEST_TIMEOUT_S = 30.0
C10_METRICS = (
    "asr_active_requests",
    "asr_batch_queue_depth",
    "asr_active_streams",
    "asr_stream_queue_depth",
    "asr_e2e_latency_seconds_bucket",
    "asr_processing_duration_seconds_bucket",
    "asr_real_time_factor_bucket",
    "asr_errors_total",
    "total_requests_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
)


# --- helpers --------------------------------------------------------------------------------------


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run one scenario on a fresh event loop, with a hard timeout."""
    asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT_S))


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until ``condition()`` holds (for state owned by another component, polled every 5 ms)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def make_settings(**overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "model_url": ["https://models.invalid/fake.tar"],
        "host": "127.0.0.1",
        "port": 0,
        "http_port": 0,
        "redis_url": None,
        "max_concurrency": 4,
        "max_queue": 4,
        "drain_grace_s": 10,
        "worker_id": None,
        "advertise_address": None,
    }
    values.update(overrides)
    return WorkerSettings(**values)


@dataclass
class Worker:
    app: WorkerApp
    engine: FakeEngine
    stub: pb_grpc.AsrWorkerAsyncStub
    health: health_pb2_grpc.HealthStub

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.app.http_port}{path}"

    async def http_get(self, path: str) -> httpx.Response:
        return await asyncio.to_thread(httpx.get, self.url(path), timeout=5)

    async def metrics(self) -> str:
        return (await self.http_get("/metrics")).text

    def open_stream(self) -> Any:
        """A bidi ``StreamingRecognize`` call (typed ``Any``: grpc-stubs types aio bidi calls loosely)."""
        return cast(Any, self.stub.StreamingRecognize)()

    async def health_status(self, service: str = "") -> int:
        reply = await self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)


@asynccontextmanager
async def running_worker(
    engine: FakeEngine | None = None, *, ready: bool = True, **overrides: Any
) -> AsyncIterator[Worker]:
    engine = engine or FakeEngine()
    fake = engine
    app = WorkerApp(make_settings(**overrides), lambda _settings: fake)
    await app.start()
    try:
        if ready:
            await app.load()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            yield Worker(app, engine, pb_grpc.AsrWorkerStub(channel), health_pb2_grpc.HealthStub(channel))
    finally:
        engine.release()
        await app.stop(grace=0)


def transcribe_messages(
    audio: bytes,
    *,
    language: str = "en",
    request_id: str = "req_test",
    chunk_bytes: int = 64 * 1024,
    total_bytes: int = 0,
) -> Iterator[pb.TranscribeRequest]:
    options = pb.TranscriptionOptions(language=language, punctuate=True, timestamps=True)
    config = pb.TranscribeConfig(request_id=request_id, options=options, total_bytes=total_bytes)
    yield pb.TranscribeRequest(config=config)
    for start in range(0, len(audio), chunk_bytes):
        yield pb.TranscribeRequest(audio_chunk=audio[start : start + chunk_bytes])


async def expect_rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def _blocking_transcribe(
    port: int, messages: Iterable[pb.TranscribeRequest], metadata: tuple[tuple[str, str], ...]
) -> pb.TranscribeResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.AsrWorkerStub(channel)
        return stub.Transcribe(iter(messages), metadata=metadata, timeout=20)


async def refused_upload(
    worker: Worker, messages: Iterable[pb.TranscribeRequest], metadata: tuple[tuple[str, str], ...] = ()
) -> grpc.RpcError:
    """Send an upload the server ends early and return the status it sent.

    Uses the blocking client in a thread: when a server ends a client-streaming call while the
    client is still writing, the asyncio client may replace the server's status with its own
    ``INTERNAL: Internal error from Core`` (grpc/grpc#36066); the blocking client reports it.
    """
    with pytest.raises(grpc.RpcError) as caught:
        await asyncio.to_thread(_blocking_transcribe, worker.app.grpc_port, messages, metadata)
    return caught.value


def error_code(error: grpc.RpcError | grpc.aio.AioRpcError) -> str | None:
    metadata: Any = error.trailing_metadata()  # a sequence of (key, value) pairs
    for key, value in metadata or ():
        if key == "oyez-error-code":
            return str(value)
    return None


def metric_value(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not exposed"
    return float(match.group(1))


def stream_config(**fields: Any) -> pb.StreamingRequest:
    options = pb.TranscriptionOptions(language=fields.pop("language", "en"), punctuate=True)
    return pb.StreamingRequest(config=pb.StreamingConfig(request_id="req_stream", options=options, **fields))


def int16_bytes(values: list[int]) -> bytes:
    return np.asarray(values, dtype="<i2").tobytes()


# --- readiness and health -------------------------------------------------------------------------


def test_health_is_not_serving_until_the_engine_is_loaded_then_serving() -> None:
    assert SERVICE_NAME == "oyez.asr.v1.AsrWorker"

    async def scenario() -> None:
        loaded = threading.Event()
        engine = FakeEngine()

        def slow_factory(_settings: WorkerSettings) -> FakeEngine:
            assert loaded.wait(10)
            return engine

        app = WorkerApp(make_settings(), slow_factory)
        await app.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                worker = Worker(
                    app, engine, pb_grpc.AsrWorkerStub(channel), health_pb2_grpc.HealthStub(channel)
                )
                loading = asyncio.create_task(app.load())
                for service in ("", SERVICE_NAME):
                    assert await worker.health_status(service) == health_pb2.HealthCheckResponse.NOT_SERVING
                reply = await worker.http_get("/health")
                assert reply.status_code == 503
                assert reply.json() == {"status": "unhealthy", "reason": "loading"}
                error = await refused_upload(worker, transcribe_messages(b"x"))
                assert error.code() == grpc.StatusCode.UNAVAILABLE

                loaded.set()
                await loading
                for service in ("", SERVICE_NAME):
                    assert await worker.health_status(service) == health_pb2.HealthCheckResponse.SERVING
                reply = await worker.http_get("/health")
                assert reply.status_code == 200
                body = reply.json()
                assert body["status"] == "healthy"
                assert body["model"] == FAKE_MODEL_NAME
                assert body["capacity"] == 4
                assert body["in_flight"] == 0
        finally:
            loaded.set()
            await app.stop(grace=0)

    run(scenario())


def test_http_side_door_answers_404_and_405_as_json() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            missing = await worker.http_get("/nope")
            assert missing.status_code == 404
            assert missing.json()["error"] == "Not found"
            posted = await asyncio.to_thread(httpx.post, worker.url("/health"), timeout=5)
            assert posted.status_code == 405
            assert "GET" in posted.headers["Allow"]
            assert posted.json()["error"] == "Method not allowed"

    run(scenario())


def test_metrics_expose_every_c10_name() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            await worker.stub.Transcribe(transcribe_messages(JFK_WAV.read_bytes()))
            reply = await worker.http_get("/metrics")
            assert reply.status_code == 200
            assert reply.headers["Content-Type"].startswith("text/plain")
            for name in C10_METRICS:
                assert re.search(rf"^{name}[{{ ]", reply.text, re.MULTILINE), name
            assert 'asr_processing_duration_seconds_count{language="en"} 1.0' in reply.text
            assert metric_value(reply.text, "total_requests_total") == 1.0

    run(scenario())


# --- Transcribe -----------------------------------------------------------------------------------


def test_transcribe_a_real_wav_returns_the_engine_transcript_and_logs_the_contract_lines() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            with structlog.testing.capture_logs() as logs:
                reply = await worker.stub.Transcribe(transcribe_messages(JFK_WAV.read_bytes()))
            assert reply.request_id == "req_test"
            assert reply.text == "fake transcript of 11.0 seconds."
            assert reply.duration == pytest.approx(11.0)
            assert reply.language == "en"
            assert reply.model == FAKE_MODEL_NAME
            assert [w.word for w in reply.words] == ["fake"]
            assert reply.processing_seconds > 0
            assert reply.real_time_factor == pytest.approx(reply.processing_seconds / 11.0)
            messages = [entry["event"] for entry in logs]
            assert "Request received: req_test" in messages
            assert any(
                re.fullmatch(r"Transcription completed in \d+\.\d{3}s \(RTF: \d+\.\d{3}x\)", m)
                for m in messages
            )

    run(scenario())


def test_request_id_falls_back_to_metadata_then_to_a_generated_one() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            audio = JFK_WAV.read_bytes()
            from_header = await worker.stub.Transcribe(
                transcribe_messages(audio, request_id=""), metadata=(("x-request-id", "debug-123"),)
            )
            assert from_header.request_id == "debug-123"
            generated = await worker.stub.Transcribe(transcribe_messages(audio, request_id=""))
            assert re.fullmatch(r"req_[0-9a-f]{16}", generated.request_id)

    run(scenario())


def test_first_message_must_be_config() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            error = await refused_upload(worker, [pb.TranscribeRequest(audio_chunk=b"RIFF")])
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "first message must be config" in (error.details() or "")
            assert error_code(error) == "INVALID_PARAMETER"

    run(scenario())


def test_garbage_bytes_are_unsupported_format() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            error = await refused_upload(worker, transcribe_messages(b"\x00garbage" * 100))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (error.details() or "").startswith("UNSUPPORTED_FORMAT: ")
            assert error_code(error) == "UNSUPPORTED_FORMAT"
            assert 'asr_errors_total{code="UNSUPPORTED_FORMAT"} 1.0' in await worker.metrics()

    run(scenario())


def test_unknown_language_is_invalid_argument_before_any_audio_is_read() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            error = await refused_upload(worker, transcribe_messages(JFK_WAV.read_bytes(), language="tlh"))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_code(error) == "UNSUPPORTED_LANGUAGE"
            assert worker.engine.calls == []

    run(scenario())


def test_declared_oversize_upload_is_refused_up_front() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            error = await refused_upload(worker, transcribe_messages(b"", total_bytes=MAX_UPLOAD_BYTES + 1))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (error.details() or "").startswith("FILE_TOO_LARGE: ")

    run(scenario())


def test_oversize_upload_is_refused_while_receiving_and_the_server_stops_reading() -> None:
    async def scenario() -> None:
        chunk = b"\x00" * (1024 * 1024)
        sent = 0

        def messages() -> Iterator[pb.TranscribeRequest]:
            nonlocal sent
            yield from transcribe_messages(b"")
            for _ in range(300):  # 300 MiB offered; the limit is 100 MiB
                sent += 1
                yield pb.TranscribeRequest(audio_chunk=chunk)

        async with running_worker() as worker:
            error = await refused_upload(worker, messages())
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (error.details() or "").startswith("FILE_TOO_LARGE: ")
            assert error_code(error) == "FILE_TOO_LARGE"
            assert 101 <= sent < 150, sent  # the server stopped reading right after the limit
            assert worker.engine.calls == []

    run(scenario())


def test_unexpected_engine_failure_is_internal_without_leaking_the_exception() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            worker.engine.fail_with = RuntimeError("secret stack detail")
            error = await refused_upload(worker, transcribe_messages(JFK_WAV.read_bytes()))
            assert error.code() == grpc.StatusCode.INTERNAL
            assert "secret" not in (error.details() or "")
            assert error_code(error) == "INTERNAL_ERROR"

    run(scenario())


def test_active_requests_gauge_rises_during_a_request_and_returns_to_zero() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            worker.engine.hold()
            request = asyncio.ensure_future(worker.stub.Transcribe(transcribe_messages(JFK_WAV.read_bytes())))
            await worker.engine.wait_in_flight(1)
            assert metric_value(await worker.metrics(), "asr_active_requests") == 1.0
            assert (await worker.http_get("/health")).json()["in_flight"] == 1
            worker.engine.release()
            assert (await request).text.startswith("fake transcript")
            assert metric_value(await worker.metrics(), "asr_active_requests") == 0.0

    run(scenario())


def test_capacity_and_queue_full_is_resource_exhausted() -> None:
    async def scenario() -> None:
        async with running_worker(max_concurrency=1, max_queue=1) as worker:
            audio = JFK_WAV.read_bytes()
            worker.engine.hold()
            first = asyncio.ensure_future(worker.stub.Transcribe(transcribe_messages(audio)))
            await worker.engine.wait_in_flight(1)
            queued = asyncio.ensure_future(worker.stub.Transcribe(transcribe_messages(audio)))
            await eventually(lambda: worker.app.gate.waiting(JobKind.BATCH) == 1)
            assert metric_value(await worker.metrics(), "asr_batch_queue_depth") == 1.0

            error = await refused_upload(worker, transcribe_messages(audio))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_code(error) == "RESOURCE_EXHAUSTED"

            worker.engine.release()
            assert (await first).text and (await queued).text
            assert metric_value(await worker.metrics(), "asr_batch_queue_depth") == 0.0

    run(scenario())


# --- StreamingRecognize ---------------------------------------------------------------------------


def test_streaming_interim_final_and_last_with_odd_byte_carry() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            call = worker.open_stream()
            await call.write(stream_config(encoding=pb.LINEAR16, sample_rate=16000))
            await call.write(pb.StreamingRequest(audio=int16_bytes([1000] * 1600)))
            interim = await call.read()
            assert (interim.transcript, interim.is_final, interim.request_id) == (
                "heard 1600 samples",
                False,
                "req_stream",
            )
            assert metric_value(await worker.metrics(), "asr_active_streams") == 1.0

            await call.write(pb.StreamingRequest(finalize=True))
            final = await call.read()
            assert final.is_final and final.from_finalize and not final.is_last

            # 0x1234 and -2 split across chunks at odd offsets: nothing is dropped.
            odd = int16_bytes([0x1234, -2])
            await call.write(pb.StreamingRequest(audio=odd[:1]))
            await call.write(pb.StreamingRequest(audio=odd[1:]))
            carried = await call.read()
            assert carried.transcript == "heard 1602 samples"

            await call.write(pb.StreamingRequest(close=True))
            last = await call.read()
            assert last.is_final and last.is_last
            assert await call.read() == EOF
            assert await call.code() == grpc.StatusCode.OK

            session = worker.engine.sessions[-1]
            assert session.closed and session.finalized == 1
            np.testing.assert_array_equal(session.samples[-2:], np.array([0x1234, -2], np.float32) / 32768)
            await eventually(lambda: worker.app.gate.active(JobKind.STREAM) == 0)

    run(scenario())


def test_streaming_half_close_behaves_like_close_and_8khz_is_resampled() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            call = worker.open_stream()
            await call.write(stream_config(encoding=pb.FLOAT32, sample_rate=8000))
            tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype("<f4")
            await call.write(pb.StreamingRequest(audio=tone.tobytes()))
            await call.done_writing()
            responses = [response async for response in call]
            assert responses[-1].is_last and responses[-1].is_final
            assert all(not r.is_last for r in responses[:-1])
            session = worker.engine.sessions[-1]
            assert session.closed
            assert session.options.sample_rate == 16000
            assert abs(session.samples.size - 16000) <= 2

    run(scenario())


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"sample_rate": 4000}, "sample_rate"),
        ({"sample_rate": 96000}, "sample_rate"),
        ({"eou_timeout_ms": 50}, "eou_timeout_ms"),
        ({"eou_timeout_ms": 20000}, "eou_timeout_ms"),
        ({"encoding": 7}, "encoding"),
        ({"language": "xx"}, "UNSUPPORTED_LANGUAGE"),
    ],
)
def test_streaming_bad_config_is_invalid_argument(fields: dict[str, Any], expected: str) -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            call = worker.open_stream()
            await call.write(stream_config(**fields))
            await call.done_writing()
            assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert expected in (await call.details())
            assert worker.engine.sessions == []

    run(scenario())


def test_streaming_first_message_must_be_config() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            call = worker.open_stream()
            await call.write(pb.StreamingRequest(audio=b"\x00\x00"))
            assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "first message must be config" in await call.details()

    run(scenario())


def test_streaming_client_cancel_frees_the_slot() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            call = worker.open_stream()
            await call.write(stream_config())
            await call.write(pb.StreamingRequest(audio=int16_bytes([0] * 320)))
            assert (await call.read()).transcript == "heard 320 samples"
            assert worker.app.gate.active(JobKind.STREAM) == 1
            call.cancel()
            await eventually(lambda: worker.app.gate.in_flight == 0)
            assert metric_value(await worker.metrics(), "asr_active_streams") == 0.0

    run(scenario())


# --- drain ----------------------------------------------------------------------------------------


def test_drain_refuses_new_work_lets_in_flight_finish_then_stops() -> None:
    async def scenario() -> None:
        async with running_worker() as worker:
            audio = JFK_WAV.read_bytes()
            worker.engine.hold()
            in_flight = asyncio.ensure_future(worker.stub.Transcribe(transcribe_messages(audio)))
            await worker.engine.wait_in_flight(1)

            draining = asyncio.create_task(worker.app.drain())
            await eventually(lambda: worker.app.lifecycle.phase is Phase.DRAINING)
            assert await worker.health_status() == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await worker.health_status(SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
            reply = await worker.http_get("/health")
            assert (reply.status_code, reply.json()["reason"]) == (503, "draining")
            refused = await refused_upload(worker, transcribe_messages(audio))
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
            assert error_code(refused) == "SERVICE_UNAVAILABLE"
            assert not draining.done()

            worker.engine.release()
            assert (await in_flight).text == "fake transcript of 11.0 seconds."
            await draining
            with pytest.raises(httpx.ConnectError):
                await worker.http_get("/health")
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", worker.app.grpc_port), timeout=1).close()

    run(scenario())


def test_drain_cancels_work_still_running_after_the_grace_period() -> None:
    async def scenario() -> None:
        async with running_worker(drain_grace_s=0.2) as worker:
            worker.engine.hold()
            stuck = asyncio.ensure_future(worker.stub.Transcribe(transcribe_messages(JFK_WAV.read_bytes())))
            await worker.engine.wait_in_flight(1)
            await worker.app.drain()
            error = await expect_rpc_error(stuck)
            assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)

    run(scenario())


# --- serve(): the process entry point -------------------------------------------------------------


@pytest.fixture
def process_logging() -> Iterator[None]:
    """serve() configures logging globally (onto the captured stderr): put the defaults back after."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.usefixtures("process_logging")
def test_serve_exits_non_zero_when_the_engine_factory_fails(capsys: pytest.CaptureFixture[str]) -> None:
    def broken_factory(_settings: WorkerSettings) -> FakeEngine:
        raise ModelError("bundle checksum mismatch")

    settings = make_settings(log_format="text")
    assert asyncio.run(asyncio.wait_for(serve(settings, broken_factory), TEST_TIMEOUT_S)) == 1
    err = capsys.readouterr().err
    assert "CRITICAL: Worker failed to start: bundle checksum mismatch" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("process_logging")
def test_serve_reports_an_unexpected_factory_error_once_and_exits_non_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def crashing_factory(_settings: WorkerSettings) -> FakeEngine:
        raise RuntimeError("onnxruntime exploded")

    settings = make_settings(log_format="text")
    assert asyncio.run(asyncio.wait_for(serve(settings, crashing_factory), TEST_TIMEOUT_S)) == 1
    err = capsys.readouterr().err
    assert "CRITICAL: Worker failed to start: RuntimeError: onnxruntime exploded" in err
    assert err.count("Traceback") == 1


@pytest.mark.usefixtures("process_logging")
def test_serve_exits_non_zero_when_its_port_is_taken(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = make_settings(http_port=taken.getsockname()[1], log_format="text")
        assert asyncio.run(asyncio.wait_for(serve(settings, lambda _s: FakeEngine()), TEST_TIMEOUT_S)) == 1
    assert "CRITICAL: Cannot start servers" in capsys.readouterr().err


@pytest.mark.usefixtures("process_logging")
def test_serve_drains_and_exits_zero_on_sigterm(capsys: pytest.CaptureFixture[str]) -> None:
    grpc_port, http_port = _free_port(), _free_port()
    settings = make_settings(port=grpc_port, http_port=http_port, log_format="text")

    async def scenario() -> int:
        server = asyncio.create_task(serve(settings, lambda _s: FakeEngine()))

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(healthy, timeout_s=10)
        os.kill(os.getpid(), signal.SIGTERM)
        return await server

    assert asyncio.run(asyncio.wait_for(scenario(), TEST_TIMEOUT_S)) == 0
    err = capsys.readouterr().err
    assert f"INFO: Server ready on port {grpc_port}" in err
    assert "Draining" in err and "Worker stopped" in err


# --- Redis registry -------------------------------------------------------------------------------


def test_registry_publishes_refreshes_and_removes_the_worker(redis_server: str) -> None:
    worker_id = f"test-{secrets.token_hex(4)}"
    key = f"oyez:worker:{worker_id}"

    async def scenario() -> None:
        client = redis.Redis.from_url(redis_server, decode_responses=True)
        try:
            async with running_worker(
                redis_url=redis_server,
                worker_id=worker_id,
                advertise_address="10.0.0.7:2233",
                heartbeat_s=0.05,
                heartbeat_ttl_s=5,
            ) as worker:
                registry = worker.app.registry
                assert registry is not None
                fields = await client.hgetall(key)
                assert fields["address"] == "10.0.0.7:2233"
                assert fields["model"] == FAKE_MODEL_NAME
                assert fields["languages"] == "en,de,fr"
                assert fields["capacity"] == "4"
                assert fields["in_flight"] == "0"
                assert fields["state"] == "ready"
                assert float(fields["started_at"]) <= float(fields["heartbeat_at"]) <= time.time()
                assert await client.sismember(REGISTRY_SET_KEY, worker_id)
                assert 0 < await client.ttl(key) <= 5

                worker.engine.hold()
                request = asyncio.ensure_future(
                    worker.stub.Transcribe(transcribe_messages(JFK_WAV.read_bytes()))
                )
                await worker.engine.wait_in_flight(1)
                await client.expire(key, 1)
                await registry.next_beat()
                refreshed = await client.hgetall(key)
                assert refreshed["in_flight"] == "1"
                assert float(refreshed["heartbeat_at"]) > float(fields["heartbeat_at"])
                assert await client.ttl(key) > 1

                worker.engine.release()
                await request
                await worker.app.drain()
                assert not await client.exists(key)
                assert not await client.sismember(REGISTRY_SET_KEY, worker_id)
        finally:
            await client.aclose()

    run(scenario())


def test_worker_serves_without_redis_and_warns() -> None:
    async def scenario() -> None:
        dead_url = f"redis://127.0.0.1:{_free_port()}/0"
        with structlog.testing.capture_logs() as logs:
            async with running_worker(redis_url=dead_url, heartbeat_s=0.05) as worker:
                assert await worker.health_status() == health_pb2.HealthCheckResponse.SERVING
                reply = await worker.stub.Transcribe(transcribe_messages(JFK_WAV.read_bytes()))
                assert reply.text.startswith("fake transcript")
        warnings = [
            e for e in logs if e["log_level"] == "warning" and "Redis registry unavailable" in e["event"]
        ]
        assert len(warnings) == 1  # one warning, not one per retry

    run(scenario())
