"""``python -m bench.capacity``: what one worker sustains within a latency budget, per model.

Two measurements against a real ``oyez worker`` process over gRPC:

- **Batch.** N clients each send the committed real-speech clips back to back, for N = 1, 2, 4, 8,
  16. At each level the table records throughput (audio seconds per wall second, which is also
  audio hours per hour), the p95 *latency ratio* (a request's latency over its audio duration), and
  the error count. Capacity is the best throughput of a level with no errors whose p95 ratio is
  within ``--batch-budget`` (default 1.0: 95 % of requests come back within their own audio's
  duration, so every request keeps up with real time; a tighter SLA passes a smaller budget).
- **Streams.** N concurrent streams each play JFK (11 s) at real-time pace in 100 ms frames, then
  ``finalize``, for N = 1, 2, 4, 8, ... The table records the p95 time from ``finalize`` to its
  final. Capacity is the largest N with every stream finished and p95 within ``--stream-budget-ms``
  (default 1000). The ramp stops at the first level over budget.

The baseline for both is the same worker at concurrency 1, in the same run.

``--write`` records the batch capacity of ``--model-for-table`` (default whisper-base, the model
the operator's table is for) for ``--tier`` in ``oyez_operator/capacity.json``: ``none`` on a CPU
machine, a GPU tier (T4/L4/A10/A100) on such a machine. It also replaces the capacity section of
``bench/RESULTS.md``. The operator reads the file; the README's table is checked against it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.api import write_section
from bench.runners import WorkerRunner
from bench.stream import audio as stream_audio
from bench.stream import direct_session, run_level
from bench.workload import Clip, Outcome, build_requests, load_clips, percentile, warmup_requests

BEGIN, END = "<!-- bench:capacity:begin -->", "<!-- bench:capacity:end -->"
CAPACITY_FILE = Path(__file__).resolve().parents[1] / "oyez_operator" / "capacity.json"
TIERS = ("T4", "L4", "A10", "A100", "none")


@dataclass(frozen=True)
class BatchLevel:
    concurrency: int
    audio_per_second: float  # audio seconds per wall second = audio hours per hour
    p95_ratio: float  # p95 of latency / audio duration
    p95_latency_s: float
    errors: int


@dataclass(frozen=True)
class StreamLevel:
    streams: int
    p95_final_ms: float | None
    failed: int


def batch_level(concurrency: int, outcomes: Sequence[Outcome], wall_s: float) -> BatchLevel:
    ok = [o for o in outcomes if o.error is None]
    audio = sum(o.audio_s for o in ok)
    return BatchLevel(
        concurrency=concurrency,
        audio_per_second=audio / wall_s if wall_s > 0 else 0.0,
        p95_ratio=percentile([o.latency_s / o.audio_s for o in ok if o.audio_s > 0], 95),
        p95_latency_s=percentile([o.latency_s for o in ok], 95),
        errors=len(outcomes) - len(ok),
    )


def batch_capacity(levels: Sequence[BatchLevel], budget: float) -> BatchLevel | None:
    """The level with the best throughput among those without errors within the p95 budget."""
    fitting = [level for level in levels if level.errors == 0 and level.p95_ratio <= budget]
    return max(fitting, key=lambda level: level.audio_per_second, default=None)


def stream_capacity(levels: Sequence[StreamLevel], budget_ms: float) -> int:
    """The largest stream count, in ramp order, before the first level over budget or with failures."""
    sustained = 0
    for level in levels:
        if level.failed or level.p95_final_ms is None or level.p95_final_ms > budget_ms:
            break
        sustained = level.streams
    return sustained


def measure_batch(runner: WorkerRunner, clips: list[Clip], levels: Sequence[int]) -> list[BatchLevel]:
    results = []
    for concurrency in levels:
        runner.prepare(concurrency)
        runner.run(warmup_requests(clips, concurrency), concurrency)
        outcomes, wall = runner.run(build_requests(clips, concurrency), concurrency)
        level = batch_level(concurrency, outcomes, wall)
        print(
            f"  batch x{concurrency}: {level.audio_per_second:.2f} audio s/s, "
            f"p95 latency/audio {level.p95_ratio:.3f}, errors {level.errors}",
            flush=True,
        )
        results.append(level)
    return results


def measure_streams(runner: WorkerRunner, levels: Sequence[int], budget_ms: float) -> list[StreamLevel]:
    assert runner.process is not None
    session = direct_session(f"127.0.0.1:{runner.process.grpc_port}")
    pcm = stream_audio()
    results = []
    for streams in levels:
        times = run_level(session, streams, pcm)
        finals = [t.eou_final for t in times if t.eou_final is not None]
        failed = sum(1 for t in times if t.error or t.eou_final is None)
        p95 = percentile(finals, 95) * 1000 if finals else None
        level = StreamLevel(streams, p95, failed)
        shown = f"{p95:.0f} ms" if p95 is not None else "none"
        print(f"  streams x{streams}: p95 final after finalize {shown}, failed {failed}", flush=True)
        results.append(level)
        if stream_capacity(results, budget_ms) < streams:
            break  # over budget: more streams only get worse
    return results


def report(
    results: dict[str, tuple[list[BatchLevel], list[StreamLevel]]],
    batch_budget: float,
    stream_budget_ms: float,
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    lines = [
        f"## Worker capacity (`python -m bench.capacity`, {when})",
        "",
        f"One `oyez worker` (fp32, CPU execution provider, batch cap 8) on {machine}. Batch budget: p95 of "
        f"latency / audio duration ≤ {batch_budget:g}. Stream budget: p95 final after `finalize` ≤ "
        f"{stream_budget_ms:g} ms, every stream finished. Baseline: concurrency 1, same run.",
        "",
        "| model | batch clients | audio h/h | p95 latency / audio | p95 latency s | errors |",
        "|---|---|---|---|---|---|",
    ]
    for model, (batch, _) in results.items():
        for level in batch:
            lines.append(
                f"| {model} | {level.concurrency} | {level.audio_per_second:.2f} | {level.p95_ratio:.3f} "
                f"| {level.p95_latency_s:.2f} | {level.errors} |"
            )
    lines += ["", "| model | real-time streams | p95 final after finalize ms | failed |", "|---|---|---|---|"]
    for model, (_, streams) in results.items():
        for point in streams:
            shown = f"{point.p95_final_ms:.0f}" if point.p95_final_ms is not None else "—"
            lines.append(f"| {model} | {point.streams} | {shown} | {point.failed} |")
    lines += [
        "",
        "| model | batch capacity, audio h/h (clients) | vs 1 client | real-time streams |",
        "|---|---|---|---|",
    ]
    for model, (batch, streams) in results.items():
        best = batch_capacity(batch, batch_budget)
        single = next((level for level in batch if level.concurrency == 1), None)
        gain = f"{best.audio_per_second / single.audio_per_second:.2f}x" if best and single else "—"
        capacity = f"{best.audio_per_second:.2f} ({best.concurrency})" if best else "none within budget"
        lines.append(f"| {model} | {capacity} | {gain} | {stream_capacity(streams, stream_budget_ms)} |")
    return "\n".join(lines) + "\n"


def record_tier(
    table: dict[str, object], tier: str, model: str, best: BatchLevel, streams: int, note: str
) -> None:
    """Set ``tier``'s entry of the operator's capacity table (``capacity.json``'s content)."""
    tiers = table["tiers"]
    assert isinstance(tiers, dict)
    tiers[tier] = {
        "audio_hours_per_hour": round(best.audio_per_second, 1),
        "realtime_streams": streams,
        "source": f"measured: {note}, {model} fp32, {best.audio_per_second:.2f} audio s/s at "
        f"{best.concurrency} concurrent requests within the p95 budget (bench/capacity.py, bench/RESULTS.md)",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", nargs="+", default=["whisper-tiny.en", "whisper-base"])
    parser.add_argument("--batch-levels", default="1,2,4,8,16")
    parser.add_argument("--stream-levels", default="1,2,4,8,16,32")
    parser.add_argument("--batch-budget", type=float, default=1.0)
    parser.add_argument("--stream-budget-ms", type=float, default=1000.0)
    parser.add_argument("--tier", choices=TIERS, default="none")
    parser.add_argument("--model-for-table", default="whisper-base")
    parser.add_argument("--machine-note", default=f"one {os.cpu_count()}-vCPU worker")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)

    from asr_worker.model.build import build_model

    clips = load_clips()
    results: dict[str, tuple[list[BatchLevel], list[StreamLevel]]] = {}
    with tempfile.TemporaryDirectory(prefix="oyez-bench-capacity-") as scratch:
        for model in args.models:
            print(f"{model}:", flush=True)
            runner = WorkerRunner(build_model(model, progress=False), Path(scratch))
            try:
                batch = measure_batch(runner, clips, [int(n) for n in args.batch_levels.split(",")])
                runner.prepare(8)  # streams share the worker's batcher, as in production
                streams = measure_streams(
                    runner, [int(n) for n in args.stream_levels.split(",")], args.stream_budget_ms
                )
            finally:
                runner.close()
            results[model] = (batch, streams)
    text = report(results, args.batch_budget, args.stream_budget_ms)
    print(text)
    if args.write:
        write_section(text, BEGIN, END)
        batch, streams = results.get(args.model_for_table, ([], []))
        best = batch_capacity(batch, args.batch_budget)
        if best is None:
            print(f"not writing {CAPACITY_FILE.name}: no batch level of {args.model_for_table} within budget")
            return 1
        table = json.loads(CAPACITY_FILE.read_text(encoding="utf-8"))
        sustained = stream_capacity(streams, args.stream_budget_ms)
        record_tier(table, args.tier, args.model_for_table, best, sustained, args.machine_note)
        CAPACITY_FILE.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
        print(f"{CAPACITY_FILE}: tier {args.tier} = {best.audio_per_second:.1f} audio h/h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
