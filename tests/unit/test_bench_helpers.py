"""The benchmark's pure helpers: request lists, percentiles, derived numbers, the RESULTS.md merge."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.report import END, Row, derived_comparisons, overhead, results_table, write_results
from bench.run import parse_args
from bench.runners import rpc_error_text, worker_batch_size, worker_env
from bench.workload import (
    Clip,
    Outcome,
    RunResult,
    build_requests,
    first_transcripts,
    percentile,
    request_count,
    unstable_clips,
    warmup_requests,
)


def _clip(clip_id: str, seconds: float) -> Clip:
    return Clip(clip_id, "text", b"", np.zeros(int(seconds * 16000), dtype=np.float32))


def _result(runner: str, wall: float, latencies: list[float], concurrency: int = 1) -> RunResult:
    outcomes = [Outcome(f"c{i}", 2.0, latency, "hi") for i, latency in enumerate(latencies)]
    return RunResult(runner, "m", "fp32", concurrency, wall, outcomes)


def test_request_list_cycles_clips_to_twice_the_concurrency() -> None:
    clips = [_clip("a", 1), _clip("b", 2), _clip("c", 3)]
    assert request_count(14, 1) == 14
    assert request_count(14, 16) == 32
    assert [c.id for c in build_requests(clips, 4)] == ["a", "b", "c", "a", "b", "c", "a", "b"]
    assert [c.id for c in warmup_requests(clips, 3)] == ["a", "a", "a"]
    with pytest.raises(ValueError):
        build_requests([], 1)


def test_percentile_interpolates_like_numpy() -> None:
    values = [0.5, 0.1, 0.9, 0.3]
    for q in (0, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert math.isnan(percentile([], 50))


def test_rtf_is_wall_based_at_one_client_and_latency_based_above() -> None:
    single = _result("direct", wall=1.0, latencies=[0.4, 0.6])
    assert single.audio_s == 4.0
    assert single.throughput == pytest.approx(4.0)
    assert single.rtf == pytest.approx(0.25)
    many = _result("direct", wall=1.0, latencies=[0.8, 1.0], concurrency=2)
    assert many.rtf == pytest.approx(1.8 / 4.0)


def test_overhead_is_relative_throughput_loss() -> None:
    worker, direct = _result("worker", 2.0, [1.0]), _result("direct", 1.0, [1.0])
    assert overhead(worker, direct) == pytest.approx(0.5)
    assert overhead(direct, worker) == pytest.approx(-1.0)


def test_transcript_helpers() -> None:
    outcomes = [
        Outcome("a", 1, 0.1, "one"),
        Outcome("a", 1, 0.1, "one "),
        Outcome("b", 1, 0.1, "", error="boom"),
        Outcome("b", 1, 0.1, "two"),
        Outcome("b", 1, 0.1, "too"),
    ]
    assert first_transcripts(outcomes) == {"a": "one", "b": "two"}
    assert unstable_clips(outcomes) == ["b"]


def test_worker_batch_size_caps_at_eight() -> None:
    assert [worker_batch_size(c) for c in (1, 4, 8, 16)] == [1, 4, 8, 8]
    assert [worker_batch_size(c, cap=32) for c in (1, 16, 64)] == [1, 16, 32]


def test_worker_env_requires_the_gpu_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OYEZ_REQUIRE_GPU", "true")  # a developer's shell must not leak into a CPU run
    plain = worker_env(Path("/b"), 1, 2, 8, Path("/c"))
    assert "OYEZ_REQUIRE_GPU" not in plain
    assert worker_env(Path("/b"), 1, 2, 8, Path("/c"), require_gpu=True)["OYEZ_REQUIRE_GPU"] == "true"


def test_gpu_options_parse(tmp_path: Path) -> None:
    plan = parse_args(["--cache-dir", str(tmp_path), "--no-write"])
    assert (plan.require_gpu, plan.batch_cap) == (False, 8)
    plan = parse_args(["--cache-dir", str(tmp_path), "--no-write", "--require-gpu", "--max-batch", "32"])
    assert (plan.require_gpu, plan.batch_cap) == (True, 32)


def test_rpc_error_text_handles_plain_exceptions() -> None:
    assert rpc_error_text(ValueError("bad")) == "ValueError: bad"


def test_tables_and_results_file_keep_the_hand_written_tail(tmp_path: Path) -> None:
    rows = [
        Row(_result("worker", 2.0, [1.0], concurrency=16), 0.05, []),
        Row(_result("direct", 1.0, [1.0], concurrency=16), 0.05, []),
        Row(_result("faster-whisper", 1.0, [1.0], concurrency=16), 0.05, []),
    ]
    assert "| worker | m | fp32 | 16 | 1 |" in results_table(rows)
    derived = derived_comparisons(rows)
    assert "+50.0 %" in derived
    assert "0.50×" in derived
    out = tmp_path / "RESULTS.md"
    write_results(out, "T", [("A", "first")])
    out.write_text(out.read_text().replace("Not written yet", "My reading"))
    write_results(out, "T", [("A", "second")])
    text = out.read_text()
    assert "second" in text and "first" not in text
    assert text.split(END, 1)[1].count("My reading") == 1


def test_the_diarization_bench_conversation_alternates_two_real_speakers() -> None:
    from bench.diarization import SAMPLE_RATE, conversation

    audio = conversation(20.0)
    assert audio.dtype == np.float32 and len(audio) == 20 * SAMPLE_RATE
    assert float(np.abs(audio).max()) > 0.05, "real speech, not silence"


# --- bench.capacity -----------------------------------------------------------------------------
def test_a_batch_level_counts_only_answered_audio_and_its_latency_ratios() -> None:
    from bench.capacity import batch_level

    outcomes = [
        Outcome("a", 10.0, 2.0),
        Outcome("b", 20.0, 10.0),
        Outcome("c", 5.0, 30.0, error="StatusCode.UNAVAILABLE: gone"),
    ]
    level = batch_level(4, outcomes, wall_s=15.0)
    assert level.audio_per_second == pytest.approx(30.0 / 15.0)
    assert level.errors == 1
    assert level.p95_ratio == pytest.approx(percentile([0.2, 0.5], 95))
    assert level.p95_latency_s == pytest.approx(percentile([2.0, 10.0], 95))


def test_batch_capacity_is_the_best_throughput_within_budget_and_without_errors() -> None:
    from bench.capacity import BatchLevel, batch_capacity

    levels = [
        BatchLevel(1, 5.0, 0.2, 2.0, 0),
        BatchLevel(4, 9.0, 0.45, 4.0, 0),
        BatchLevel(8, 12.0, 0.9, 9.0, 0),  # faster, but over the 0.5 budget
        BatchLevel(16, 13.0, 0.4, 4.0, 2),  # within budget, but requests failed
    ]
    best = batch_capacity(levels, 0.5)
    assert best is not None and best.concurrency == 4
    assert batch_capacity(levels, 0.1) is None


def test_stream_capacity_stops_at_the_first_level_over_budget() -> None:
    from bench.capacity import StreamLevel, stream_capacity

    ramp = [
        StreamLevel(1, 300.0, 0),
        StreamLevel(2, 450.0, 0),
        StreamLevel(4, 1400.0, 0),
        StreamLevel(8, 900.0, 0),
    ]
    assert stream_capacity(ramp, 1000.0) == 2, "a lucky level after a failing one does not count"
    assert stream_capacity([StreamLevel(1, 200.0, 1)], 1000.0) == 0, "a failed stream is over budget"
    assert stream_capacity([StreamLevel(1, None, 0)], 1000.0) == 0


def test_record_tier_writes_the_measured_figure_and_its_source() -> None:
    from bench.capacity import BatchLevel, record_tier

    table: dict[str, object] = {"tiers": {"none": {"audio_hours_per_hour": 7.5, "source": "old"}}}
    record_tier(table, "none", "whisper-base", BatchLevel(8, 9.26, 0.4, 3.0, 0), 6, "one 2-vCPU worker")
    entry = table["tiers"]["none"]  # type: ignore[index]
    assert entry["audio_hours_per_hour"] == 9.3 and entry["realtime_streams"] == 6
    assert entry["source"].startswith("measured: one 2-vCPU worker, whisper-base fp32, 9.26 audio s/s at 8")


# --- bench.load ---------------------------------------------------------------------------------
def test_load_summary_counts_successes_audio_and_errors_by_status() -> None:
    from bench.load import Tally, summary_row

    tally = Tally()
    for latency in (0.5, 1.0, 1.5, 2.0):
        tally.ok(latency, 10.0)
    tally.failed("503")
    tally.failed("503")
    tally.failed("ReadTimeout")
    row = summary_row("batch", tally, wall_s=20.0)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:3] == ["batch", "4", "2.00"]
    assert cells[3] == f"{percentile([0.5, 1.0, 1.5, 2.0], 50) * 1000:.0f}"
    assert cells[-1] == "503: 2, ReadTimeout: 1"
    assert summary_row("idle", Tally(), 1.0).endswith("| — | — | — | none |")


def test_memory_growth_is_counted_from_the_first_sample_after_warmup() -> None:
    from bench.load import memory_growth

    samples = [
        (0.0, {"api": 50.0, "worker": 300.0}),
        (30.0, {"api": 80.0, "worker": 900.0}),
        (60.0, {"api": 82.0, "worker": 905.0}),
        (90.0, {"api": 81.0, "worker": 904.0, "redis": 10.0}),
    ]
    assert memory_growth(samples, warmup_s=30.0) == {"api": 1.0, "worker": 4.0}
    assert memory_growth(samples[:1], warmup_s=0.0) == {}, "one sample shows no growth"


def test_memory_verdict_uses_the_trend_and_a_relative_allowance() -> None:
    from bench.load import memory_trend, memory_verdict

    # api: flat with one spike; worker: a steady 1 MiB a minute leak over 10 minutes.
    samples = [
        (t, {"api": 100.0 + (30.0 if t == 300 else 0.0), "worker": 1000.0 + t / 60.0})
        for t in range(0, 660, 60)
    ]
    trend = memory_trend(samples, warmup_s=60.0)
    assert abs(trend["worker"] - 1.0) < 1e-9
    verdict = memory_verdict(samples, warmup_s=60.0)
    assert verdict["api"][1] is True, "a single spike is not growth"
    assert verdict["worker"] == (pytest.approx(9.0), True), "9 MiB on 1 GB is within 3 %"
    leaking = [(t, {"api": 100.0 + t / 20.0}) for t in range(0, 660, 60)]
    growth, flat = memory_verdict(leaking, warmup_s=60.0)["api"]
    assert growth == pytest.approx(27.0) and flat is False
    assert memory_verdict(samples[:2], warmup_s=0.0) == {}, "two samples make no trend"
