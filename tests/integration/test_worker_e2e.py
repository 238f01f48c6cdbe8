"""``oyez worker`` as users run it: a real process, the real model, real sockets, a real Redis.

One worker process serves the module (loading a model takes seconds); the drain test starts its
own, because it ends the process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import redis
import soundfile as sf
import soxr
from grpc_health.v1 import health_pb2, health_pb2_grpc

from oyez.constants import REGISTRY_SET_KEY, REGISTRY_WORKER_KEY_PREFIX
from oyez.proto import asr_v1_pb2 as pb
from oyez.proto import asr_v1_pb2_grpc as pb_grpc
from tests.speech_data import SPEECH_DIR, corpus_wer, speech_clip

START_TIMEOUT_S = 180
CHUNK_BYTES = 256 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[str]
    grpc_port: int
    http_port: int
    worker_id: str
    lines: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")

    def wait_for_line(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return
            time.sleep(0.05)
        raise AssertionError(f"log line {text!r} not seen; log:\n{self.log}")


def start_worker(bundle: Path, redis_url: str | None, **env: str) -> WorkerProcess:
    grpc_port, http_port = _free_port(), _free_port()
    worker_id = f"e2e-{grpc_port}"
    environment = {
        **os.environ,
        "MODEL_URL": str(bundle),
        "PORT": str(grpc_port),
        "OYEZ_HTTP_PORT": str(http_port),
        "OYEZ_HOST": "127.0.0.1",
        "OYEZ_WORKER_ID": worker_id,
        "OYEZ_ADVERTISE_ADDRESS": f"127.0.0.1:{grpc_port}",
        "OYEZ_LOG_FORMAT": "text",
        "OYEZ_MAX_BATCH_SIZE": "4",
        "OYEZ_HEARTBEAT_S": "0.5",
        "OYEZ_HEARTBEAT_TTL_S": "5",
        **env,
    }
    if redis_url:
        environment["REDIS_URL"] = redis_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "oyez.cli", "worker"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    worker = WorkerProcess(proc, grpc_port, http_port, worker_id)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            worker.lines.append(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return worker


def wait_ready(worker: WorkerProcess) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited with {worker.proc.returncode}:\n{worker.log}")
        try:
            if httpx.get(f"http://127.0.0.1:{worker.http_port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"worker not ready in {START_TIMEOUT_S}s:\n{worker.log}")


def stop_worker(worker: WorkerProcess) -> int:
    if worker.proc.poll() is None:
        worker.proc.send_signal(signal.SIGTERM)
    try:
        return worker.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        return worker.proc.wait()


@pytest.fixture(scope="module")
def worker(tiny_bundle: Path, redis_server: str) -> Iterator[WorkerProcess]:
    process = start_worker(tiny_bundle, redis_server)
    try:
        wait_ready(process)
        yield process
    finally:
        stop_worker(process)


def _upload(path: Path, request_id: str, **options: object) -> Iterator[pb.TranscribeRequest]:
    data = path.read_bytes()
    config = pb.TranscribeConfig(
        request_id=request_id, options=pb.TranscriptionOptions(**options), total_bytes=len(data)
    )
    yield pb.TranscribeRequest(config=config)
    for offset in range(0, len(data), CHUNK_BYTES):
        yield pb.TranscribeRequest(audio_chunk=data[offset : offset + CHUNK_BYTES])


def test_startup_logs_the_documented_lines(worker: WorkerProcess) -> None:
    # /health turns 200 when the engine is ready; the worker registers in Redis and only then logs
    # "Server ready", so the line may still be on its way through the pipe.
    worker.wait_for_line(f"INFO: Server ready on port {worker.grpc_port}")
    log = worker.log
    assert "INFO: No GPU detected, running on CPU:" in log  # the CPU twin of "GPU detected: <name> (<N>GB)"
    assert "INFO: Model loaded successfully (whisper-tiny.en fp32," in log
    assert "INFO: Warmup completed in " in log
    assert f"INFO: Server ready on port {worker.grpc_port}" in log
    order = [log.index(s) for s in ("Model loaded successfully", "Warmup completed", "Server ready on port")]
    assert order == sorted(order)


def test_grpc_health_is_serving(worker: WorkerProcess) -> None:
    with worker.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "oyez.asr.v1.AsrWorker"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_transcribe_over_grpc(worker: WorkerProcess) -> None:
    clip = speech_clip("jfk")
    with worker.channel() as channel:
        stub = pb_grpc.AsrWorkerStub(channel)
        reply = stub.Transcribe(_upload(clip.path, "req_e2e_jfk", timestamps=True), timeout=60)
    assert reply.request_id == "req_e2e_jfk"
    assert corpus_wer([clip.text], [reply.text]) <= 0.05, reply.text
    assert reply.duration == pytest.approx(11.0, abs=0.01)
    assert reply.language == "en" and reply.model == "whisper-tiny.en-fp32"
    assert 0.5 < reply.confidence <= 1.0
    assert len(reply.words) >= 20 and all(w.start <= w.end for w in reply.words)
    assert reply.real_time_factor > 0
    worker.wait_for_line("INFO: Request received: req_e2e_jfk")
    worker.wait_for_line("INFO: Transcription completed in ")
    assert "(RTF: " in worker.log


def test_bad_inputs_get_typed_errors(worker: WorkerProcess, tmp_path: Path) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("this is not audio " * 50)
    with worker.channel() as channel:
        stub = pb_grpc.AsrWorkerStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Transcribe(_upload(text_file, "req_e2e_bad"), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "UNSUPPORTED_FORMAT" in (info.value.details() or "")
        with pytest.raises(grpc.RpcError) as info:
            stub.Transcribe(_upload(speech_clip("jfk").path, "req_e2e_de", language="de"), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "UNSUPPORTED_LANGUAGE" in (info.value.details() or "")


def test_streaming_recognize_at_8khz(worker: WorkerProcess) -> None:
    clip = speech_clip("jfk")
    audio, rate = sf.read(clip.path, dtype="float32")
    telephony = soxr.resample(audio, rate, 8000)
    pcm = (np.clip(telephony, -1, 1) * 32767).astype("<i2").tobytes() + bytes(8000 * 2)  # + 1 s silence

    def requests() -> Iterator[pb.StreamingRequest]:
        yield pb.StreamingRequest(
            config=pb.StreamingConfig(
                request_id="req_e2e_stream", encoding=pb.LINEAR16, sample_rate=8000, eou_timeout_ms=600
            )
        )
        frame = 4096 + 1  # odd sizes split samples across frames
        for offset in range(0, len(pcm), frame):
            yield pb.StreamingRequest(audio=pcm[offset : offset + frame])
        yield pb.StreamingRequest(close=True)

    with worker.channel() as channel:
        responses = list(pb_grpc.AsrWorkerStub(channel).StreamingRecognize(requests(), timeout=120))
    finals = [r for r in responses if r.is_final]
    assert any(not r.is_final for r in responses), "no interim results"
    assert responses[-1].is_final and responses[-1].is_last
    assert corpus_wer([clip.text], [" ".join(r.transcript for r in finals if r.transcript)]) <= 0.15


def test_registry_and_metrics(worker: WorkerProcess, redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    key = f"{REGISTRY_WORKER_KEY_PREFIX}{worker.worker_id}"
    record = client.hgetall(key)
    assert record["address"] == f"127.0.0.1:{worker.grpc_port}"
    assert record["model"] == "whisper-tiny.en-fp32"
    assert record["languages"] == "en" and record["state"] == "ready"
    assert client.sismember(REGISTRY_SET_KEY, worker.worker_id)
    assert 0 < client.ttl(key) <= 5
    metrics = httpx.get(f"http://127.0.0.1:{worker.http_port}/metrics", timeout=5).text
    assert "asr_active_requests 0.0" in metrics
    assert "asr_real_time_factor_count" in metrics and "total_requests_total" in metrics


def test_sigterm_drains_in_flight_work_then_exits_zero(
    tiny_bundle: Path, redis_server: str, tmp_path: Path
) -> None:
    worker = start_worker(tiny_bundle, redis_server, OYEZ_DRAIN_GRACE_S="60")
    try:
        wait_ready(worker)
        long_audio = np.concatenate([sf.read(SPEECH_DIR / "jfk.wav", dtype="float32")[0]] * 5)
        long_file = tmp_path / "long.wav"
        sf.write(long_file, long_audio, 16000)
        result: dict[str, object] = {}

        def call() -> None:
            with worker.channel() as channel:
                try:
                    result["reply"] = pb_grpc.AsrWorkerStub(channel).Transcribe(
                        _upload(long_file, "req_e2e_drain"), timeout=120
                    )
                except grpc.RpcError as exc:
                    result["error"] = exc

        thread = threading.Thread(target=call)
        thread.start()
        worker.wait_for_line("Request received: req_e2e_drain")
        worker.proc.send_signal(signal.SIGTERM)
        # Health flips at once, while the request is still running.
        deadline = time.monotonic() + 10
        status = 200
        while time.monotonic() < deadline and status == 200:
            status = httpx.get(f"http://127.0.0.1:{worker.http_port}/health", timeout=2).status_code
        assert status == 503
        with worker.channel() as channel, pytest.raises(grpc.RpcError) as refused:
            pb_grpc.AsrWorkerStub(channel).Transcribe(
                _upload(SPEECH_DIR / "jfk.wav", "req_e2e_late"), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        thread.join(timeout=120)
        assert "error" not in result, result.get("error")
        reply = result["reply"]
        assert isinstance(reply, pb.TranscribeResponse) and reply.text.lower().count("americans") == 5
        assert worker.proc.wait(timeout=60) == 0
        assert not redis.Redis.from_url(redis_server).exists(
            f"{REGISTRY_WORKER_KEY_PREFIX}{worker.worker_id}"
        )
    finally:
        stop_worker(worker)


def test_require_gpu_without_cuda_fails_fast(tiny_bundle: Path) -> None:
    worker = start_worker(tiny_bundle, None, OYEZ_REQUIRE_GPU="true")
    code = worker.proc.wait(timeout=120)
    time.sleep(0.2)
    assert code != 0
    assert "CRITICAL: Cannot initialize GPU, exiting" in worker.log
    assert "Server ready" not in worker.log
