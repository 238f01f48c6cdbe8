"""``python -m bench.load``: a bounded load against the local stack, for a fixed duration.

Starts the real local stack (``oyez up``: redis-server, license server and proxy, one worker, the
API) and runs, for ``--duration`` seconds:

- ``--batch-clients`` closed-loop clients, each posting a payload (short 5 s, medium 20 s or long
  60 s of real speech, in turn) to ``POST /v1/listen`` as soon as its previous answer arrives;
- ``--streams`` clients, each playing JFK (11 s) at real-time pace over ``/v1/listen/stream``, then
  ``close_stream``, and starting again; a stream's latency is from ``close_stream`` to the terminal
  final (``is_last``).

Every ``--sample-s`` it samples the resident memory (RSS) of each stack process. At the end it
prints:

- per kind, the count, audio seconds per wall second, latency p50/p95/p99 and errors by status;
- memory over time per component;
- the memory growth of each component from the first sample after warm-up to the last, which must
  stay flat over a soak (``--duration 600``).

Below the admitted capacity there must be no errors. Above it, requests are refused cleanly with
503 (queue full or timeout) or 429 (the key's limits, see ``--concurrent-limit``), and never 500.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from websockets.sync.client import connect

from bench.api import RunningStack, make_payload, start_stack, stop_stack
from bench.stream import audio as stream_audio
from bench.workload import percentile


@dataclass
class Tally:
    """What one kind of client saw: latencies of successes, statuses of failures, audio served."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    audio_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, latency: float, audio_s: float) -> None:
        with self.lock:
            self.latencies.append(latency)
            self.statuses["ok"] += 1
            self.audio_s += audio_s

    def failed(self, status: str) -> None:
        with self.lock:
            self.statuses[status] += 1


def summary_row(kind: str, tally: Tally, wall_s: float) -> str:
    errors = {k: v for k, v in tally.statuses.items() if k != "ok"}
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "none"

    def ms(q: float) -> str:
        return f"{percentile(tally.latencies, q) * 1000:.0f}" if tally.latencies else "—"

    return (
        f"| {kind} | {tally.statuses['ok']} | {tally.audio_s / wall_s:.2f} | {ms(50)} | {ms(95)} | {ms(99)} "
        f"| {shown} |"
    )


def memory_growth(samples: Sequence[tuple[float, dict[str, float]]], warmup_s: float) -> dict[str, float]:
    """Per component: RSS (MiB) of the last sample minus the first sample taken after ``warmup_s``."""
    settled = [(t, rss) for t, rss in samples if t >= warmup_s]
    if len(settled) < 2:
        return {}
    first, last = settled[0][1], settled[-1][1]
    return {name: last[name] - first[name] for name in first if name in last}


FLAT_MIB = 16.0  # absolute allowance over a soak: allocator noise, caches filling
FLAT_FRACTION = 0.03  # relative allowance, of the component's mean RSS


def memory_trend(samples: Sequence[tuple[float, dict[str, float]]], warmup_s: float) -> dict[str, float]:
    """Per component: the least-squares slope of RSS (MiB per minute) over the samples after
    ``warmup_s``; one spike moves it far less than it moves last-minus-first."""
    settled = [(t, rss) for t, rss in samples if t >= warmup_s]
    if len(settled) < 3:
        return {}
    trends: dict[str, float] = {}
    for name in settled[0][1]:
        points = [(t, rss[name]) for t, rss in settled if name in rss]
        mean_t = sum(t for t, _ in points) / len(points)
        mean_m = sum(m for _, m in points) / len(points)
        spread = sum((t - mean_t) ** 2 for t, _ in points)
        if spread > 0:
            trends[name] = 60.0 * sum((t - mean_t) * (m - mean_m) for t, m in points) / spread
    return trends


def memory_verdict(
    samples: Sequence[tuple[float, dict[str, float]]], warmup_s: float
) -> dict[str, tuple[float, bool]]:
    """Per component: (the trend's growth over the settled window in MiB, flat?). Flat means under
    ``FLAT_MIB`` or ``FLAT_FRACTION`` of its mean RSS, whichever is larger."""
    settled = [(t, rss) for t, rss in samples if t >= warmup_s]
    if len(settled) < 3:
        return {}
    minutes = (settled[-1][0] - settled[0][0]) / 60.0
    verdict: dict[str, tuple[float, bool]] = {}
    for name, slope in memory_trend(samples, warmup_s).items():
        values = [rss[name] for _, rss in settled if name in rss]
        allowance = max(FLAT_MIB, FLAT_FRACTION * sum(values) / len(values))
        growth = slope * minutes
        verdict[name] = (growth, growth <= allowance)
    return verdict


def _component(process: psutil.Process) -> str:
    command = " ".join(process.cmdline())
    for needle, name in (
        ("redis-server", "redis"),
        ("worker", "worker"),
        ("license-proxy", "license proxy"),
        ("license-server", "license server"),
        ("license proxy", "license proxy"),
        ("api", "api"),
    ):
        if needle in command:
            return name
    return str(process.name())


def sample_memory(root: int) -> dict[str, float]:
    """RSS in MiB of every process under ``root`` (``oyez up``), by component."""
    totals: dict[str, float] = {}
    try:
        parent = psutil.Process(root)
        for process in [parent, *parent.children(recursive=True)]:
            try:
                name = "oyez up" if process.pid == root else _component(process)
                totals[name] = totals.get(name, 0.0) + process.memory_info().rss / 2**20
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    return totals


def batch_client(
    stack: RunningStack, tally: Tally, stop: threading.Event, payloads: list[bytes], seconds: list[float]
) -> None:
    with httpx.Client(timeout=600) as client:
        turn = 0
        while not stop.is_set():
            index = turn % len(payloads)
            turn += 1
            started = time.perf_counter()
            try:
                response = client.post(
                    f"{stack.url}/v1/listen",
                    content=payloads[index],
                    headers={"Authorization": f"Token {stack.key}", "Content-Type": "audio/wav"},
                )
            except httpx.HTTPError as exc:
                tally.failed(type(exc).__name__)
                continue
            if response.status_code == 200:
                tally.ok(time.perf_counter() - started, seconds[index])
            else:
                tally.failed(str(response.status_code))
                if response.status_code in (429, 503):
                    time.sleep(float(response.headers.get("Retry-After", "1")))


def stream_client(stack: RunningStack, tally: Tally, stop: threading.Event, pcm: bytes) -> None:
    url = stack.url.replace("http://", "ws://") + "/v1/listen/stream"
    frame = 3200  # 100 ms of 16 kHz linear16
    while not stop.is_set():
        try:
            with connect(
                url, additional_headers={"Authorization": f"Token {stack.key}"}, open_timeout=30
            ) as ws:
                started = time.perf_counter()
                for index, offset in enumerate(range(0, len(pcm), frame)):
                    ws.send(pcm[offset : offset + frame])
                    time.sleep(max(0.0, started + (index + 1) * 0.1 - time.perf_counter()))
                close_sent = time.perf_counter()
                ws.send(json.dumps({"type": "close_stream"}))
                while True:
                    message = json.loads(ws.recv(timeout=120))
                    if message.get("type") == "error":
                        tally.failed(message.get("code", "error"))
                        break
                    if message.get("is_last"):  # the terminal final: its delay after close_stream
                        tally.ok(time.perf_counter() - close_sent, len(pcm) / 32000)
                        break
        except Exception as exc:  # noqa: BLE001 - counted, the load goes on
            tally.failed(type(exc).__name__)
            time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (a soak: 600)")
    parser.add_argument("--batch-clients", type=int, default=2)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=30.0, help="memory growth is counted after this")
    parser.add_argument(
        "--concurrent-limit",
        type=int,
        default=10_000,
        help="the key's concurrent_requests: set it below the clients to load above the admitted capacity",
    )
    args = parser.parse_args(argv)

    payloads = [
        make_payload(name, seconds) for name, seconds in (("short", 5.0), ("medium", 20.0), ("long", 60.0))
    ]
    pcm = stream_audio()
    batch, streams = Tally(), Tally()
    samples: list[tuple[float, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="oyez-bench-load-") as scratch:
        stack = start_stack(Path(scratch) / "state", concurrent_requests=args.concurrent_limit)
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=batch_client,
                args=(stack, batch, stop, [p.wav for p in payloads], [p.seconds for p in payloads]),
            )
            for _ in range(args.batch_clients)
        ] + [
            threading.Thread(target=stream_client, args=(stack, streams, stop, pcm))
            for _ in range(args.streams)
        ]
        started = time.perf_counter()
        try:
            for thread in threads:
                thread.start()
            while (elapsed := time.perf_counter() - started) < args.duration:
                samples.append((elapsed, sample_memory(stack.proc.pid)))
                print(
                    f"  t={elapsed:5.0f}s ok: batch {batch.statuses['ok']}, streams {streams.statuses['ok']}",
                    flush=True,
                )
                time.sleep(args.sample_s)
            samples.append((time.perf_counter() - started, sample_memory(stack.proc.pid)))
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=180)
            wall = time.perf_counter() - started
            stop_stack(stack)
    print(
        f"\nLoad: {args.batch_clients} batch clients, {args.streams} real-time streams, {wall:.0f} s, "
        f"key concurrent_requests={args.concurrent_limit}\n"
    )
    print("| kind | ok | audio s/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    print(summary_row("batch (5/20/60 s)", batch, wall))
    print(summary_row("stream (11 s; last final after close)", streams, wall))
    components = sorted({name for _, rss in samples for name in rss})
    print("\n| t s | " + " | ".join(f"{c} MiB" for c in components) + " |")
    print("|---|" + "---|" * len(components))
    for t, rss in samples:
        print(f"| {t:.0f} | " + " | ".join(f"{rss.get(c, 0.0):.0f}" for c in components) + " |")
    growth = memory_growth(samples, args.warmup_s)
    print(
        "\nMemory growth after warm-up, last minus first (MiB): "
        + ", ".join(f"{k} {v:+.1f}" for k, v in sorted(growth.items()))
    )
    verdict = memory_verdict(samples, args.warmup_s)
    print(
        "Memory trend after warm-up (least squares, MiB over the window): "
        + ", ".join(
            f"{k} {g:+.1f} ({'flat' if flat else 'GROWING'})" for k, (g, flat) in sorted(verdict.items())
        )
    )
    errors = sum(v for t in (batch, streams) for k, v in t.statuses.items() if k != "ok")
    server_errors = sum(
        v for t in (batch, streams) for k, v in t.statuses.items() if k.startswith("5") and k != "503"
    )
    print(f"Errors: {errors}, of which server errors (5xx other than 503): {server_errors}")
    growing = [name for name, (_, flat) in verdict.items() if not flat]
    return 1 if server_errors or growing else 0


if __name__ == "__main__":
    raise SystemExit(main())
