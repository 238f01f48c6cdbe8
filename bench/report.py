"""Markdown for the benchmark: the results table, derived comparisons, observations, RESULTS.md.

``RESULTS.md`` keeps a generated block between two markers, rewritten by every run, and whatever
text follows the end marker (the hand-written reading of the numbers), which a run leaves alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .workload import Clip, RunResult, clip_wer, first_transcripts, unstable_clips

BEGIN = "<!-- bench:generated:begin -->"
END = "<!-- bench:generated:end -->"
RUNNER_ORDER = ("worker", "direct", "faster-whisper")
BUSY_SHARE = 0.10  # other processes' CPU share above which a point is flagged as disturbed


@dataclass(frozen=True)
class Row:
    """A :class:`RunResult` with its WER, ready to print."""

    result: RunResult
    wer: float
    unstable: list[str]

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.result.model, self.result.precision, self.result.concurrency)


def make_rows(results: Sequence[RunResult], clips: Sequence[Clip]) -> list[Row]:
    rows = []
    for result in results:
        used = {o.clip_id for o in result.outcomes}
        scored = [clip for clip in clips if clip.id in used]
        rows.append(Row(result, clip_wer(scored, result.outcomes), unstable_clips(result.outcomes)))
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{value * 100:+.1f} %"


def results_table(rows: Sequence[Row]) -> str:
    header = (
        "| runner | model | precision | c | requests | audio s | wall s | throughput (audio s/s) "
        "| RTF¹ | p50 s | p95 s | WER | errors | CPU used² | others² |"
    )
    lines = [header, "|" + "---|" * 15]
    for row in rows:
        r = row.result
        lines.append(
            f"| {r.runner} | {r.model} | {r.precision} | {r.concurrency} | {r.requests} "
            f"| {_fmt(r.audio_s, 1)} | {_fmt(r.wall_s)} | {_fmt(r.throughput)} | {_fmt(r.rtf, 3)} "
            f"| {_fmt(r.latency_percentile(50))} | {_fmt(r.latency_percentile(95))} "
            f"| {row.wer * 100:.2f} % | {r.errors} | {_share(r, 'ours')} | {_share(r, 'others')} |"
        )
    lines.append("")
    lines.append(
        "¹ c = 1: wall × c / audio. c > 1: per-request RTF = mean request latency / mean request audio "
        "(Σ latency / Σ audio), which includes time spent queued behind the other clients.  "
    )
    lines.append(
        "² Share of the machine's CPU capacity (all cores × wall) during the timed list, from /proc: "
        "*CPU used* by the runner (benchmark process + worker subprocess), *others* by every other "
        f"process. Points where others exceed {BUSY_SHARE:.0%} were disturbed by foreign load."
    )
    return "\n".join(lines)


def _share(result: RunResult, which: str) -> str:
    if result.cpu is None:
        return "–"
    share = result.cpu.ours_share if which == "ours" else result.cpu.others_share
    return f"{share * 100:.0f} %"


def _by_runner(rows: Sequence[Row]) -> dict[tuple[str, str, int], dict[str, Row]]:
    points: dict[tuple[str, str, int], dict[str, Row]] = {}
    for row in rows:
        points.setdefault(row.key, {})[row.result.runner] = row
    return points


def overhead(worker: RunResult, direct: RunResult) -> float:
    """Throughput the worker loses against direct: (direct − worker) / direct; negative = worker faster."""
    return (direct.throughput - worker.throughput) / direct.throughput


def derived_comparisons(rows: Sequence[Row]) -> str:
    points = _by_runner(rows)
    lines = [
        "**Worker overhead vs direct** (throughput-based: (direct − worker) / direct; "
        "negative means the worker is faster):",
        "",
        "| model | precision | c | worker audio s/s | direct audio s/s | overhead "
        "| worker p50 s | direct p50 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (model, precision, c), runners in points.items():
        if "worker" in runners and "direct" in runners:
            w, d = runners["worker"].result, runners["direct"].result
            lines.append(
                f"| {model} | {precision} | {c} | {_fmt(w.throughput)} | {_fmt(d.throughput)} "
                f"| {_pct(overhead(w, d))} | {_fmt(w.latency_percentile(50))} "
                f"| {_fmt(d.latency_percentile(50))} |"
            )
    top = max((key[2] for key in points), default=0)
    lines += [
        "",
        f"**Worker vs faster-whisper at c = {top}** (throughput ratio worker / faster-whisper):",
        "",
        "| model | precision | worker audio s/s | faster-whisper audio s/s | worker / faster-whisper |",
        "|---|---|---|---|---|",
    ]
    for (model, precision, c), runners in points.items():
        if c == top and "worker" in runners and "faster-whisper" in runners:
            w, f = runners["worker"].result, runners["faster-whisper"].result
            ratio = w.throughput / f.throughput
            lines.append(
                f"| {model} | {precision} | {_fmt(w.throughput)} | {_fmt(f.throughput)} | {ratio:.2f}× |"
            )
    return "\n".join(lines)


def observations(rows: Sequence[Row], worker_startups: Sequence[tuple[str, str, int, float]]) -> str:
    """Facts computed from this run: where worker time goes, WER spread, nondeterminism, errors."""
    parts = [
        _worker_time_split(rows),
        "\n".join(
            _disturbances(rows)
            + _wer_spread(rows)
            + _transcript_differences(rows)
            + _unstable_and_errors(rows)
            + _startups(worker_startups)
        ),
    ]
    return "\n\n".join(part for part in parts if part)


def _worker_time_split(rows: Sequence[Row]) -> str:
    """Client latency vs the worker's own ``processing_seconds`` (decode, VAD, queue, inference)."""
    lines = [
        "Where a worker request's time goes (means per request): *processing* is the worker's own "
        "`processing_seconds` (WAV decode + VAD + features + batch queue + inference); the rest is "
        "gRPC upload/response and admission.",
        "",
        "| model | precision | c | client latency s | worker processing s | outside processing s |",
        "|---|---|---|---|---|---|",
    ]
    found = False
    for row in rows:
        r, server = row.result, row.result.mean_server_s()
        if r.runner == "worker" and server is not None:
            found = True
            latency = r.mean_latency_s()
            lines.append(
                f"| {r.model} | {r.precision} | {r.concurrency} | {latency:.3f} | {server:.3f} "
                f"| {latency - server:.3f} |"
            )
    return "\n".join(lines) if found else ""


def _disturbances(rows: Sequence[Row]) -> list[str]:
    lines = []
    for row in rows:
        r, cpu = row.result, row.result.cpu
        where = f"{r.runner} {r.model} {r.precision} c={r.concurrency}"
        if cpu is not None and cpu.others_share > BUSY_SHARE:
            lines.append(
                f"- DISTURBED: {where}: other processes used {cpu.others_share:.0%} of the CPU during "
                f"the kept timed list ({r.attempts} timed)."
            )
        elif r.attempts > 1:
            lines.append(f"- {where}: timed {r.attempts} times (foreign CPU load); the least disturbed kept.")
    if not lines:
        lines.append(
            f"- No timed list was disturbed: other processes used at most {BUSY_SHARE:.0%} of the CPU."
        )
    return lines


def _unstable_and_errors(rows: Sequence[Row]) -> list[str]:
    lines = []
    for row in rows:
        r = row.result
        where = f"{r.runner} {r.model} {r.precision} c={r.concurrency}"
        if row.unstable:
            lines.append(
                f"- {where}: repeated requests of {', '.join(row.unstable)} gave different transcripts "
                "within one timed list."
            )
        if r.errors:
            first = next(o.error for o in r.outcomes if o.error is not None)
            lines.append(f"- {where}: {r.errors} errors, the first: {first}")
    return lines


def _startups(worker_startups: Sequence[tuple[str, str, int, float]]) -> list[str]:
    if not worker_startups:
        return []
    items = ", ".join(
        f"{model} {precision} batch {batch}: {seconds:.1f} s"
        for model, precision, batch, seconds in worker_startups
    )
    return [f"- Worker start to `/health` 200 (model load + warm-up): {items}."]


def _wer_spread(rows: Sequence[Row]) -> list[str]:
    by_model: dict[tuple[str, str], dict[str, set[float]]] = {}
    for row in rows:
        key = (row.result.model, row.result.precision)
        by_model.setdefault(key, {}).setdefault(row.result.runner, set()).add(round(row.wer * 100, 2))
    lines = []
    for (model, precision), runners in by_model.items():
        parts = [
            f"{name} {'/'.join(f'{w:.2f}' for w in sorted(runners[name]))} %"
            for name in RUNNER_ORDER
            if name in runners
        ]
        lines.append(f"- WER {model} {precision} (over the concurrency points): " + "; ".join(parts) + ".")
    return lines


def _transcript_differences(rows: Sequence[Row]) -> list[str]:
    """Clips whose first transcript differs (raw text) from the direct runner's at the same point.

    Points of one runner/model/precision with the same differing clips are merged into one line.
    """
    merged: dict[tuple[str, str, str, tuple[str, ...]], list[int]] = {}
    for (model, precision, c), runners in _by_runner(rows).items():
        direct = runners.get("direct")
        if direct is None:
            continue
        reference = first_transcripts(direct.result.outcomes)
        for name in ("worker", "faster-whisper"):
            if name in runners:
                texts = first_transcripts(runners[name].result.outcomes)
                differ = tuple(
                    sorted(k for k, t in texts.items() if t.strip() != reference.get(k, "").strip())
                )
                merged.setdefault((name, model, precision, differ), []).append(c)
    lines = []
    for (name, model, precision, differ), points in merged.items():
        where = f"{name} {model} {precision} c={','.join(map(str, points))}"
        if differ:
            lines.append(
                f"- {where}: {len(differ)} clip transcripts differ from direct: {', '.join(differ)}."
            )
        elif name == "worker":
            lines.append(f"- {where}: every clip's transcript is identical to direct's.")
    return lines


def generated_block(sections: Sequence[tuple[str, str]]) -> str:
    body = "\n\n".join(f"## {title}\n\n{text.strip()}" for title, text in sections)
    return f"{BEGIN}\n{body}\n{END}"


DEFAULT_READING = (
    "\n\n## Reading\n\n"
    "(Not written yet: read the table above and describe where the worker wins or loses, and why.)\n"
)


def write_results(path: Path, title: str, sections: Sequence[tuple[str, str]]) -> None:
    """Replace the generated block of ``path`` (create the file if needed), keeping the text after it."""
    tail = DEFAULT_READING
    if path.is_file():
        existing = path.read_text(encoding="utf-8")
        if END in existing:
            tail = existing.split(END, 1)[1]
    path.write_text(f"# {title}\n\n{generated_block(sections)}{tail}", encoding="utf-8")
