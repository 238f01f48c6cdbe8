"""``python -m bench.api``: what the API server adds on top of the worker, measured in one run.

Starts the real local stack with ``oyez up`` (redis-server, license server + proxy, one tiny.en
worker, the API) in a scratch state directory, with a development key whose limits do not throttle
the run. Then, for the same WAV payloads:

- latency, one request at a time: ``POST /v1/listen`` (multipart upload, auth, limits in Redis,
  usage event, gRPC to the worker) against the worker's ``Transcribe`` called directly over gRPC
  (the baseline), for a 5 s and a 60 s clip; p50/p95 and the API's overhead = API p50 - direct p50;
- throughput at concurrency 1/8/32 (5 s clips), both paths: audio seconds per wall second.

Prints markdown tables and replaces the API section of ``bench/RESULTS.md`` (``--no-write`` not to).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import numpy as np
import soundfile as sf

from oyez.proto import asr_v1_pb2 as pb
from oyez.proto import asr_v1_pb2_grpc as pb_grpc

SPEECH = Path(__file__).resolve().parent.parent / "tests" / "data" / "speech"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BEGIN, END = "<!-- bench:api:begin -->", "<!-- bench:api:end -->"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Payload:
    name: str
    wav: bytes
    seconds: float


def make_payload(name: str, seconds: float) -> Payload:
    """Real speech clips, back to back with 0.3 s pauses, cut to ``seconds``."""
    pieces: list[np.ndarray] = []
    total = 0
    target = int(seconds * 16000)
    clips = sorted(SPEECH.glob("*.wav"))
    while total < target:
        for path in clips:
            samples, _ = sf.read(path, dtype="float32")
            pieces += [samples, np.zeros(4800, dtype=np.float32)]
            total += len(samples) + 4800
    audio = np.concatenate(pieces)[:target]
    buffer = io.BytesIO()
    sf.write(buffer, audio, 16000, format="WAV", subtype="PCM_16")
    return Payload(name, buffer.getvalue(), seconds)


# --- the stack --------------------------------------------------------------------------------------
@dataclass
class RunningStack:
    proc: subprocess.Popen[bytes]
    url: str
    key: str
    worker: str


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_stack(state: Path, *, concurrent_requests: int = 10_000) -> RunningStack:
    from license_proxy.issuer import development_key_pair
    from license_proxy.keys import issue_key

    key = issue_key(
        development_key_pair(),
        customer="Benchmark",
        now=datetime.now(UTC),
        valid_for=timedelta(days=30),  # oyez up renews keys within 7 days of expiry
        features=["batch", "streaming", "timestamps", "punctuation"],
        limits={
            "requests_per_minute": 1_000_000,
            "concurrent_requests": concurrent_requests,
            "audio_hours_per_day": 10_000,
        },
    )
    state.mkdir(parents=True, exist_ok=True)
    key_file = state / "license.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    port = _free_port()
    log = (state / "up.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "oyez.cli",
            "up",
            "--port",
            str(port),
            "--state-dir",
            str(state),
            "--no-progress",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"oyez up exited ({proc.returncode}); see {state / 'up.log'}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    else:
        raise SystemExit("the stack was not ready within 300 s")
    workers = httpx.get(f"{url}/health/asr", timeout=5).json()["detail"]["workers"]
    return RunningStack(proc, url, key, workers[0]["address"])


def stop_stack(stack: RunningStack) -> None:
    stack.proc.send_signal(signal.SIGINT)
    try:
        stack.proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        stack.proc.kill()


# --- the two paths ------------------------------------------------------------------------------
def api_caller(stack: RunningStack) -> Callable[[Payload], float]:
    local = threading.local()

    def call(payload: Payload) -> float:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=600)
        started = time.perf_counter()
        response = client.post(
            f"{stack.url}/v1/listen",
            headers={"Authorization": f"Token {stack.key}"},
            files={"audio": ("clip.wav", payload.wav, "audio/wav")},
        )
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"API answered {response.status_code}: {response.text[:200]}")
        return elapsed

    return call


def direct_caller(stack: RunningStack) -> Callable[[Payload], float]:
    channel = grpc.insecure_channel(stack.worker, options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = pb_grpc.AsrWorkerStub(channel)

    def requests(payload: Payload) -> Iterator[pb.TranscribeRequest]:
        yield pb.TranscribeRequest(
            config=pb.TranscribeConfig(
                options=pb.TranscriptionOptions(language="en"), total_bytes=len(payload.wav)
            )
        )
        for offset in range(0, len(payload.wav), CHUNK):
            yield pb.TranscribeRequest(audio_chunk=payload.wav[offset : offset + CHUNK])

    def call(payload: Payload) -> float:
        started = time.perf_counter()
        stub.Transcribe(requests(payload), timeout=600)
        return time.perf_counter() - started

    return call


def alternating(
    first: Callable[[Payload], float], second: Callable[[Payload], float], payload: Payload, count: int
) -> tuple[list[float], list[float]]:
    """``count`` calls of each, interleaved, so drift in machine load falls on both alike."""
    first(payload)  # warm connections and caches
    second(payload)
    a: list[float] = []
    b: list[float] = []
    for _ in range(count):
        a.append(first(payload))
        b.append(second(payload))
    return a, b


def concurrent(call: Callable[[Payload], float], payload: Payload, concurrency: int, total: int) -> float:
    """Audio seconds per wall second for ``total`` requests from ``concurrency`` threads."""
    remaining = iter(range(total))
    lock = threading.Lock()
    errors: list[str] = []

    def client() -> None:
        while True:
            with lock:
                if next(remaining, None) is None:
                    return
            try:
                call(payload)
            except Exception as exc:  # noqa: BLE001 - recorded and reported
                errors.append(str(exc))

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return total * payload.seconds / wall


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


# --- report ---------------------------------------------------------------------------------------
def latency_table(rows: list[tuple[Payload, list[float], list[float]]]) -> str:
    lines = [
        "| clip | n | direct p50 ms | direct p95 ms | API p50 ms | API p95 ms | API overhead p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for payload, direct, api in rows:
        d50, d95 = statistics.median(direct) * 1000, percentile(direct, 95) * 1000
        a50, a95 = statistics.median(api) * 1000, percentile(api, 95) * 1000
        lines.append(
            f"| {payload.name} ({payload.seconds:g} s) | {len(api)} | {d50:.0f} | {d95:.0f} | {a50:.0f} | "
            f"{a95:.0f} | {a50 - d50:+.0f} |"
        )
    return "\n".join(lines)


def throughput_table(rows: list[tuple[int, int, float, float]]) -> str:
    lines = [
        "| concurrency | requests | direct audio s/s | API audio s/s | API / direct |",
        "|---|---|---|---|---|",
    ]
    for concurrency, total, direct, api in rows:
        lines.append(f"| {concurrency} | {total} | {direct:.1f} | {api:.1f} | {api / direct:.2f} |")
    return "\n".join(lines)


def write_section(text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the part of RESULTS.md between ``begin`` and ``end`` (append it the first time)."""
    current = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else "# Benchmarks\n"
    block = f"{begin}\n{text.strip()}\n{end}"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        tail = rest.split(end, 1)[1]
        current = f"{head}{block}{tail}"
    else:
        current = f"{current.rstrip()}\n\n{block}\n"
    RESULTS.write_text(current, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=20, help="sequential requests per clip and path")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    short, long = make_payload("speech", 5.0), make_payload("speech", 60.0)
    with tempfile.TemporaryDirectory(prefix="oyez-bench-api-") as scratch:
        stack = start_stack(Path(scratch) / "state")
        try:
            api, direct = api_caller(stack), direct_caller(stack)
            latency = []
            for payload, repeats in ((short, args.repeats), (long, max(3, args.repeats // 4))):
                latency.append((payload, *alternating(direct, api, payload, repeats)))
            throughput = []
            for concurrency in levels:
                total = max(2 * concurrency, 16)
                throughput.append(
                    (
                        concurrency,
                        total,
                        concurrent(direct, short, concurrency, total),
                        concurrent(api, short, concurrency, total),
                    )
                )
        finally:
            stop_stack(stack)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    text = (
        f"## API server overhead (`python -m bench.api`, {when}; {machine})\n\n"
        "Whisper tiny.en fp32 worker (one process) behind the API, everything on this machine. "
        "Baseline: the same worker's `Transcribe` called directly over gRPC with the same WAV bytes.\n\n"
        f"### Latency, one request at a time\n\n{latency_table(latency)}\n\n"
        f"### Throughput, 5 s clips\n\n{throughput_table(throughput)}\n"
    )
    print(text)
    if not args.no_write:
        write_section(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
