"""``python -m bench.run``: real-time factor and throughput of three runners, in one run.

For every (model, precision, concurrency) the same request list (the committed real-speech clips,
cycled) goes through the ``oyez worker`` over gRPC, the bare ONNX graphs (no service, no batcher)
and faster-whisper. Prints a markdown table and rewrites the generated part of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .cpu import CpuMeter, wait_for_quiet
from .report import BUSY_SHARE, derived_comparisons, make_rows, observations, results_table, write_results
from .runners import (
    WORKER_BATCH_CAP,
    DirectRunner,
    FasterWhisperRunner,
    Runner,
    WorkerRunner,
    ct2_model_dir,
    worker_batch_size,
)
from .workload import Clip, RunResult, build_requests, load_clips, warmup_requests

DEFAULT_MODELS = ("whisper-tiny.en", "whisper-base")
DEFAULT_PRECISIONS = ("fp32", "int8")
DEFAULT_CONCURRENCY = (1, 4, 16)
RUNNERS = ("worker", "direct", "faster-whisper")
DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"
SETTLE_S = 0.5  # lets the previous runner's spinning thread pools go idle before the next one
QUIET_SHARE = 0.10  # wait (a little) for the machine to be at most this busy before a timed list
QUIET_WAIT_S = 20.0


@dataclass(frozen=True)
class Plan:
    models: list[str]
    precisions: list[str]
    concurrency: list[int]
    runners: list[str]
    cache_dir: Path
    out: Path | None
    json_out: Path | None
    retries: int
    direct_intra_op: int
    require_gpu: bool = False
    batch_cap: int = WORKER_BATCH_CAP


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_args(argv: Sequence[str] | None = None) -> Plan:
    from asr_worker.model.build import default_cache_dir

    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--precisions", default=",".join(DEFAULT_PRECISIONS))
    parser.add_argument("--concurrency", default=",".join(map(str, DEFAULT_CONCURRENCY)))
    parser.add_argument("--runners", default=",".join(RUNNERS), help="subset of worker,direct,faster-whisper")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny.en fp32, c=1,4; writes no file")
    parser.add_argument("--cache-dir", type=Path, default=None, help="model bundle cache (default: oyez's)")
    parser.add_argument("--out", type=Path, default=None, help=f"results file (default: {DEFAULT_OUT})")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the results file alone")
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="re-time a point up to N times when other processes took over 10%% of the CPU (default 1)",
    )
    parser.add_argument(
        "--direct-intra-op",
        type=int,
        default=0,
        help="ORT intra_op_num_threads of the direct runner (default 0: the runtime default)",
    )
    parser.add_argument(
        "--require-gpu",
        action="store_true",
        help="worker: OYEZ_REQUIRE_GPU=true; direct runner: require_gpu (CUDA or fail, no CPU fallback)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=WORKER_BATCH_CAP,
        help=f"cap of the worker's OYEZ_MAX_BATCH_SIZE (min(cap, c); default {WORKER_BATCH_CAP})",
    )
    parser.add_argument("--json", type=Path, default=None, help="also dump every request's outcome here")
    args = parser.parse_args(argv)
    models, precisions = _csv(args.models), _csv(args.precisions)
    concurrency = [int(c) for c in _csv(args.concurrency)]
    if args.quick:
        models, precisions, concurrency = ["whisper-tiny.en"], ["fp32"], [1, 4]
    runners = _csv(args.runners)
    unknown = sorted(set(runners) - set(RUNNERS)) + sorted(set(precisions) - set(DEFAULT_PRECISIONS))
    if unknown or any(c < 1 for c in concurrency):
        parser.error(f"bad --runners/--precisions/--concurrency value(s): {unknown or concurrency}")
    out = None if args.no_write or (args.quick and args.out is None) else (args.out or DEFAULT_OUT)
    cache_dir = args.cache_dir or default_cache_dir()
    return Plan(
        models,
        precisions,
        concurrency,
        runners,
        cache_dir,
        out,
        args.json,
        max(0, args.retries),
        max(0, args.direct_intra_op),
        args.require_gpu,
        max(1, args.max_batch),
    )


def _peer_versions() -> str:
    try:
        import ctranslate2
        import faster_whisper
    except ImportError:
        return "not installed (faster-whisper runner unavailable)"
    return f"{ctranslate2.__version__} / {faster_whisper.__version__}"


def machine_facts() -> list[tuple[str, str]]:
    import onnxruntime

    from asr_worker.engine.onnx_model import CUDA, describe_cpu, describe_gpu

    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    available = onnxruntime.get_available_providers()
    providers = ", ".join(available)
    gpu = describe_gpu(int(os.environ.get("GPU_DEVICE_ID", "0"))) if CUDA in available else "no GPU"
    return [
        ("date (UTC)", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")),
        ("CPU", f"{describe_cpu()}; {gpu}"),
        ("Python", platform.python_version()),
        ("onnxruntime", f"{onnxruntime.__version__} (providers: {providers})"),
        ("ctranslate2 / faster-whisper", _peer_versions()),
        (
            "ORT threads",
            "intra_op_num_threads=0 (runtime default: one thread per physical core), same in the worker "
            "(OYEZ_INTRA_OP_THREADS unset) and the direct runner",
        ),
        (
            "CT2 threads",
            f"cpu_threads=0 (CTranslate2 default) per worker, num_workers = c; OMP_NUM_THREADS={omp}",
        ),
    ]


def _load_runners(
    names: Sequence[str], model: str, precision: str, plan: Plan, ct2_dir: Path
) -> list[Runner]:
    from asr_worker.model.build import build_model

    bundle = build_model(model, int8=precision == "int8", cache_dir=plan.cache_dir, progress=False)
    runners: list[Runner] = []
    for name in names:
        if name == "worker":
            runners.append(WorkerRunner(bundle, plan.cache_dir, plan.require_gpu, plan.batch_cap))
        elif name == "direct":
            runners.append(DirectRunner(bundle, plan.direct_intra_op, plan.require_gpu))
        else:
            runners.append(FasterWhisperRunner(ct2_dir, precision))
    return runners


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Collected:
    results: list[RunResult]
    startups: list[tuple[str, str, int, float]]
    failures: list[str]


def timed_list(runner: Runner, clips: Sequence[Clip], model: str, precision: str, c: int) -> RunResult:
    """One timed pass over the point's request list, with CPU accounting around it."""
    wait_for_quiet(QUIET_SHARE, QUIET_WAIT_S)
    meter = CpuMeter(runner.pids())
    outcomes, wall = runner.run(build_requests(clips, c), c)
    return RunResult(runner.name, model, precision, c, wall, outcomes, meter.stop())


def _disturbance(result: RunResult) -> float:
    return result.cpu.others_share if result.cpu is not None else 0.0


def measure_point(
    runner: Runner, clips: Sequence[Clip], model: str, precision: str, c: int, retries: int
) -> RunResult:
    """Prepare, warm up (untimed), then time the request list; re-time it while foreign load disturbed it.

    Keeps the least disturbed of at most ``1 + retries`` timed lists and records how many ran.
    """
    runner.prepare(c)
    runner.run(warmup_requests(clips, c), c)
    time.sleep(SETTLE_S)
    best = timed_list(runner, clips, model, precision, c)
    attempts = 1
    while _disturbance(best) > BUSY_SHARE and attempts <= retries:
        _progress(f"  {runner.name} c={c}: other processes used {_disturbance(best):.0%} of the CPU; again")
        again = timed_list(runner, clips, model, precision, c)
        attempts += 1
        best = min(best, again, key=_disturbance)
    result = replace(best, attempts=attempts)
    _progress(_summary_line(result))
    return result


def _summary_line(r: RunResult) -> str:
    load = f"  cpu ours {r.cpu.ours_share:4.0%} others {r.cpu.others_share:4.0%}" if r.cpu else ""
    return (
        f"  {r.runner:<14} {r.model} {r.precision} c={r.concurrency:<3} {r.requests} req  "
        f"wall {r.wall_s:6.2f} s  {r.throughput:5.2f} audio s/s  errors {r.errors}{load}"
    )


def measure_model(
    clips: Sequence[Clip], model: str, precision: str, plan: Plan, ct2_dir: Path, out: Collected
) -> None:
    runners = _load_runners(plan.runners, model, precision, plan, ct2_dir)
    try:
        for c in plan.concurrency:
            for runner in list(runners):
                try:
                    out.results.append(measure_point(runner, clips, model, precision, c, plan.retries))
                except (RuntimeError, TimeoutError, OSError) as exc:
                    out.failures.append(f"{runner.name} {model} {precision} c={c}: {exc}")
                    _progress(f"  {runner.name} failed: {exc}")
                    runner.close()
                    runners.remove(runner)
    finally:
        for runner in runners:
            if isinstance(runner, WorkerRunner):
                out.startups += [(model, precision, batch, s) for batch, s in runner.startups]
            runner.close()


def run_plan(plan: Plan, clips: Sequence[Clip]) -> Collected:
    collected = Collected([], [], [])
    for model in plan.models:
        with tempfile.TemporaryDirectory(prefix="oyez-bench-ct2-") as tmp:
            ct2_dir = ct2_model_dir(model, Path(tmp)) if "faster-whisper" in plan.runners else Path(tmp)
            for precision in plan.precisions:
                _progress(f"{model} {precision}")
                measure_model(clips, model, precision, plan, ct2_dir, collected)
    return collected


def how_to_run() -> str:
    return "\n".join(
        [
            "```bash",
            ". .venv/bin/activate",
            "python -m bench.run                 # full run: tiny.en + base, fp32 + int8, c = 1, 4, 16",
            "python -m bench.run --quick         # smoke: tiny.en fp32, c = 1, 4 (prints, writes nothing)",
            "python -m bench.run --models whisper-tiny.en --precisions int8 --concurrency 1,16 --no-write",
            "python -m bench.run --runners direct --direct-intra-op 1 --concurrency 1,2,16 --no-write",
            "python -m bench.batch_cost          # encoder/decoder cost per window at batch 1 vs 8",
            "```",
            "",
            "Options: `--cache-dir` (model bundles; default `$OYEZ_MODEL_CACHE_DIR` or the user cache), "
            "`--runners worker,direct,faster-whisper`, `--direct-intra-op N`, `--retries N`, `--json FILE` "
            "(every request's transcript and latency), `--out FILE`, `--require-gpu` (CUDA or fail, see "
            "the GPU section), `--max-batch N` (the worker's batch cap, default 8). Bundles are built on "
            "first use "
            "(`oyez model build`); faster-whisper loads the same pinned CTranslate2 weights the bundles "
            "are converted from.",
        ]
    )


def method_notes(plan: Plan, clips: Sequence[Clip]) -> str:
    audio = sum(clip.duration_s for clip in clips)
    counts = ", ".join(f"c={c}: {len(build_requests(clips, c))}" for c in plan.concurrency)
    batches = ", ".join(f"c={c}: {worker_batch_size(c, plan.batch_cap)}" for c in plan.concurrency)
    span = f"{min(c.duration_s for c in clips):.1f}–{max(c.duration_s for c in clips):.1f} s each"
    gpu_note = (
        "**Device**: worker (`OYEZ_REQUIRE_GPU=true`) and direct runner (`require_gpu`) on the CUDA "
        "execution provider, no CPU fallback; fp16 graphs and ORT I/O binding are **not measured here**."
        if plan.require_gpu
        else "**Not measured here**: this machine has no GPU, so the CUDA execution provider, fp16 graphs "
        "and ORT\n  I/O binding rows are **not measured here**. Every number below is CPU-only."
    )
    return f"""\
- **Workload**: the {len(clips)} real speech clips of `tests/data/speech` ({audio:.1f} s of audio,
  {span}). At concurrency c the request list is the clips in manifest order, cycled to
  max(14, 2·c) requests ({counts}); the same list goes to every runner. c clients each take the
  next request until the list is empty; wall time runs from the first request to the last answer.
  Before each timed list every runner gets one untimed warm-up pass of c concurrent requests (the
  shortest clip). The machine is shared, so each timed list first waits (≤ {QUIET_WAIT_S:.0f} s) for
  it to be under {QUIET_SHARE:.0%} busy, CPU time is accounted from /proc around the list, and a list
  during which other processes used over {BUSY_SHARE:.0%} of the CPU is timed again (up to
  `--retries`, default 1; the least disturbed list is kept).
- **worker**: the real `oyez worker` subprocess (bundle directory as `MODEL_URL`, gRPC on loopback,
  `OYEZ_MAX_BATCH_SIZE` = min({plan.batch_cap}, c) ({batches}), `OYEZ_MAX_BATCH_WAIT_MS` default 10 ms),
  restarted when the batch size changes and timed only after `/health` returns 200. Clients are grpc.aio tasks
  on one channel in the benchmark process, each sending `config` then the clip's WAV bytes as
  `audio_chunk`s (`punctuate=true`, `timestamps=false`). **Includes** gRPC upload and response, WAV
  decoding, Silero VAD, the VAD window plan, features, the dynamic batcher's queueing and batched
  encoder/decoder runs, text assembly. The client shares the {os.cpu_count()} cores with the worker.
- **direct** (the overhead baseline): the same bundle's ONNX graphs with raw onnxruntime in the
  benchmark process, one session pair shared by c threads: per request `log_mel_spectrogram` →
  `WhisperOnnx.encode` (batch 1) → `greedy_decode` (batch 1) → detokenise. **Excludes** the service,
  gRPC, WAV decoding (samples are decoded before timing), **VAD** (skipped: every clip is one ≤ 30 s
  window) and the batcher.
- **faster-whisper** (the peer): `WhisperModel(<CT2 dir>, device="cpu", compute_type="float32"|"int8",
  cpu_threads=0, num_workers=c)` on the pinned CTranslate2 weights, `transcribe(samples,
  language="en", beam_size=1, without_timestamps=True, vad_filter=False,
  condition_on_previous_text=False)` from c threads; includes its own feature extraction, excludes
  WAV decoding. int8 is CT2's own int8 (weights quantised at load), not the bundle's ONNX int8
  (ORT dynamic quantisation of the MatMul/Gemm weights, activations quantised per tensor at run time).
- **Metrics**: throughput = audio seconds / wall seconds. RTF at c = 1 is wall / audio; at c > 1 it is
  the per-request RTF Σ latency / Σ audio (queueing included). p50/p95 are request latencies seen by
  the client. WER is corpus WER (jiwer, Whisper English normaliser) over each clip's first transcript
  in the timed list; clips whose repeats disagree are listed under observations.
- {gpu_note}"""


def render(plan: Plan, clips: Sequence[Clip], collected: Collected) -> list[tuple[str, str]]:
    rows = make_rows(collected.results, clips)
    notes = observations(rows, collected.startups)
    if collected.failures:
        notes += "\n" + "\n".join(f"- FAILED: {failure}" for failure in collected.failures)
    machine = "\n".join(f"- **{label}**: {value}" for label, value in machine_facts())
    return [
        ("How to run", how_to_run()),
        ("Machine", machine),
        ("Method", method_notes(plan, clips)),
        ("Results", results_table(rows)),
        ("Derived comparisons", derived_comparisons(rows)),
        ("Observations (computed by the script from this run)", notes or "- none"),
    ]


def dump_json(path: Path, results: Sequence[RunResult]) -> None:
    """Every timed request (transcript, latency, worker processing time) for later inspection."""
    payload = [
        {
            **{k: v for k, v in asdict(result).items() if k != "outcomes"},
            "outcomes": [asdict(o) for o in result.outcomes],
        }
        for result in results
    ]
    path.write_text(json.dumps(payload, indent=1), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    from oyez.logs import configure_logging

    configure_logging("oyez-bench", fmt="text", level="WARNING", stream=sys.stderr)
    plan = parse_args(argv)
    clips = load_clips()
    for label, value in machine_facts():
        _progress(f"{label}: {value}")
    started = time.perf_counter()
    collected = run_plan(plan, clips)
    sections = render(plan, clips, collected)
    _progress(f"total benchmark time {time.perf_counter() - started:.0f} s")
    print("\n\n".join(f"## {title}\n\n{text}" for title, text in sections[1:]))
    if plan.json_out is not None:
        dump_json(plan.json_out, collected.results)
    if plan.out is not None:
        write_results(plan.out, "Benchmarks: the worker, direct ONNX Runtime and faster-whisper", sections)
        _progress(f"wrote {plan.out}")
    return 1 if collected.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
