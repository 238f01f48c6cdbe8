"""``python -m bench.stream``: live-streaming latency through the API, against the worker called
directly over gRPC (the baseline), at 1, 10 and 50 concurrent real-time streams.

Every stream plays the same audio at real-time pace in 100 ms frames: 1 s of silence, the JFK clip
(11 s) and 0.3 s of silence, then ``finalize`` and ``close_stream``. Measured per stream:

- first interim: from sending the first speech frame to the first interim result;
- final after speech ends: from sending ``finalize`` (0.3 s after the last word) to its final,
  i.e. the server's own delay once the client says the utterance is over (with the default
  end-of-utterance detection the configured ``eou_timeout_ms`` silence comes on top).

Then the number of real-time streams one worker sustains: the largest concurrency whose p50 final
latency stays under 1 s. Prints tables and replaces the streaming section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import soundfile as sf
from websockets.sync.client import connect

from bench.api import SPEECH, start_stack, stop_stack, write_section
from oyez.proto import asr_v1_pb2 as pb
from oyez.proto import asr_v1_pb2_grpc as pb_grpc

BEGIN, END = "<!-- bench:stream:begin -->", "<!-- bench:stream:end -->"
SR = 16000
FRAME = SR // 10  # 100 ms
LEAD_S, SPEECH_END_S = 1.0, 1.0 + 11.0  # jfk.wav: speech from ~1.15 s to ~11.3 s after the lead


@dataclass
class StreamTimes:
    first_interim: float | None = None
    eou_final: float | None = None
    error: str | None = None


def audio() -> bytes:
    jfk, _ = sf.read(SPEECH / "jfk.wav", dtype="int16")
    silence = np.zeros(int(LEAD_S * SR), dtype=np.int16)
    tail = np.zeros(int(0.3 * SR), dtype=np.int16)
    return np.concatenate([silence, jfk, tail]).astype("<i2").tobytes()


def speech_span(pcm: bytes) -> tuple[float, float]:
    samples = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
    loud = np.flatnonzero(samples > 1000)
    return loud[0] / SR, loud[-1] / SR


Session = Callable[[bytes, float, float], StreamTimes]


def api_session(url: str, key: str) -> Session:
    def run(pcm: bytes, speech_start: float, speech_end: float) -> StreamTimes:
        times = StreamTimes()
        sent_at: dict[int, float] = {}
        finalize_sent: list[float] = []
        with connect(f"{url}/v1/listen/stream", additional_headers={"Authorization": f"Token {key}"}) as ws:
            done = threading.Event()

            def receive() -> None:
                try:
                    while True:
                        message = json.loads(ws.recv(timeout=120))
                        now = time.perf_counter()
                        if message.get("type") == "error":
                            times.error = str(message.get("message"))
                            return
                        if message.get("type") != "transcription":
                            continue
                        if not message["is_final"] and times.first_interim is None and message["transcript"]:
                            times.first_interim = now - sent_at[int(speech_start * 10)]
                        if message.get("from_finalize") and times.eou_final is None:
                            times.eou_final = now - finalize_sent[0]
                        if message.get("is_last"):
                            return
                except Exception as exc:  # noqa: BLE001 - e.g. no result within the time limit
                    times.error = f"{type(exc).__name__}: {exc}"
                finally:
                    done.set()

            receiver = threading.Thread(target=receive, daemon=True)
            receiver.start()
            started = time.perf_counter()
            for index, offset in enumerate(range(0, len(pcm), 2 * FRAME)):
                ws.send(pcm[offset : offset + 2 * FRAME])
                sent_at[index] = time.perf_counter()
                time.sleep(max(0.0, started + (index + 1) * 0.1 - time.perf_counter()))
            finalize_sent.append(time.perf_counter())
            ws.send(json.dumps({"type": "finalize"}))
            ws.send(json.dumps({"type": "close_stream"}))
            done.wait(120)
        return times

    return run


def direct_session(address: str) -> Session:
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.AsrWorkerStub(channel)

    def run(pcm: bytes, speech_start: float, speech_end: float) -> StreamTimes:
        times = StreamTimes()
        sent_at: dict[int, float] = {}
        finalize_sent: list[float] = []

        def requests() -> Any:
            yield pb.StreamingRequest(
                config=pb.StreamingConfig(options=pb.TranscriptionOptions(language="en"), sample_rate=SR)
            )
            started = time.perf_counter()
            for index, offset in enumerate(range(0, len(pcm), 2 * FRAME)):
                yield pb.StreamingRequest(audio=pcm[offset : offset + 2 * FRAME])
                sent_at[index] = time.perf_counter()
                time.sleep(max(0.0, started + (index + 1) * 0.1 - time.perf_counter()))
            finalize_sent.append(time.perf_counter())
            yield pb.StreamingRequest(finalize=True)
            yield pb.StreamingRequest(close=True)

        for response in stub.StreamingRecognize(requests(), timeout=300):
            now = time.perf_counter()
            if not response.is_final and times.first_interim is None and response.transcript:
                times.first_interim = now - sent_at[int(speech_start * 10)]
            if response.from_finalize and times.eou_final is None:
                times.eou_final = now - finalize_sent[0]
        return times

    return run


def run_level(session: Session, concurrency: int, pcm: bytes) -> list[StreamTimes]:
    start, end = speech_span(pcm)
    results: list[StreamTimes] = []
    lock = threading.Lock()

    def one(delay: float) -> None:
        time.sleep(delay)
        try:
            times = session(pcm, start, end)
        except Exception as exc:  # noqa: BLE001 - reported as a failed stream
            times = StreamTimes(error=f"{type(exc).__name__}: {exc}")
        with lock:
            results.append(times)

    # Streams start spread over one second, as independent callers would.
    threads = [threading.Thread(target=one, args=(i / max(concurrency, 1),)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _ms(values: list[float], q: float) -> str:
    return f"{np.percentile(np.array(values), q) * 1000:.0f}" if values else "—"


def row(path: str, concurrency: int, results: list[StreamTimes]) -> tuple[str, float | None]:
    interims = [r.first_interim for r in results if r.first_interim is not None]
    finals = [r.eou_final for r in results if r.eou_final is not None]
    failed = sum(1 for r in results if r.error or r.eou_final is None)
    p50 = statistics.median(finals) if finals else None
    return (
        f"| {path} | {concurrency} | {_ms(interims, 50)} | {_ms(interims, 95)} | {_ms(finals, 50)} | "
        f"{_ms(finals, 95)} | {failed} |",
        p50,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Streaming latency through the API vs the worker directly")
    parser.add_argument("--concurrency", default="1,2,4,10,50")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    pcm = audio()
    lines = [
        "| path | streams | first interim p50 ms | p95 | final after finalize p50 ms | p95 "
        "| no final in 120 s |",
        "|---|---|---|---|---|---|---|",
    ]
    sustained = 0
    with tempfile.TemporaryDirectory(prefix="oyez-bench-stream-") as scratch:
        stack = start_stack(Path(scratch) / "state")
        try:
            api, direct = (
                api_session(stack.url.replace("http://", "ws://"), stack.key),
                direct_session(stack.worker),
            )
            text, _ = row("worker direct (gRPC)", 1, run_level(direct, 1, pcm))
            lines.append(text)
            for concurrency in levels:
                text, p50 = row("API WebSocket", concurrency, run_level(api, concurrency, pcm))
                lines.append(text)
                if p50 is not None and p50 <= 1.0:
                    sustained = max(sustained, concurrency)
                print(text, flush=True)
        finally:
            stop_stack(stack)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    report = (
        f"## Streaming latency (`python -m bench.stream`, {when})\n\n"
        "One tiny.en fp32 worker behind the API on this 2-vCPU machine; every stream plays JFK (11 s) "
        f"at real-time pace in 100 ms frames; First interim: from the first "
        "speech frame sent. Final: from sending `finalize` 0.3 s after the last word to the final it "
        "produces (the server's own delay).\n\n" + "\n".join(lines) + "\n\n"
        f"Highest tested concurrency with p50 final latency ≤ 1 s: **{sustained}** real-time streams.\n"
    )
    print(report)
    if not args.no_write:
        write_section(report, BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
