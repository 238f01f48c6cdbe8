"""``python -m bench.diarization``: what diarization adds per audio minute, measured in one run.

The audio is a conversation built from the committed real-speech clips of two speakers (the
LibriVox reader and the CMU "cards" speaker, alternating, half-second pauses), repeated to the
length asked for. Each model transcribes it without diarization (the baseline, same run), with
``diarize=true``, and with ``diarize=true, num_speakers=2``; the speaker pipeline alone (VAD regions
-> embeddings -> clustering -> turns) is also timed on its own. Wall and process CPU seconds per
audio minute are the median of ``--repeats`` runs. Prints a markdown table.

Streams (``--runs stream``): the same conversation is pushed through a live stream in 100 ms
frames, as fast as the engine takes it, with word timestamps, without and with ``diarize`` (the
baseline is the plain stream, same run). Besides seconds per audio minute, the table gives the
time of the pushes that returned a final (the latency a final adds: decoding it, and with
``diarize`` its speaker windows), median and 90th percentile over the conversation's finals.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import soundfile as sf

from asr_worker.engine.transcriber import EngineConfig, WhisperEngine
from asr_worker.engine.types import StreamOptions, TranscribeOptions
from asr_worker.model.build import build_model
from tests.speech_data import speech_clip

SAMPLE_RATE = 16000
SPEAKER_A = ["librivox_0870", "librivox_0880", "librivox_0890", "librivox_0920", "librivox_0930"]
SPEAKER_B = ["cards_001", "cards_002", "cards_003", "cards_004", "cards_005"]


def conversation(seconds: float) -> np.ndarray:
    parts: list[np.ndarray] = []
    total = 0
    turn = 0
    while total < seconds * SAMPLE_RATE:
        clip_id = (SPEAKER_A if turn % 2 == 0 else SPEAKER_B)[(turn // 2) % 5]
        audio, rate = sf.read(speech_clip(clip_id).path, dtype="float32")
        assert rate == SAMPLE_RATE
        parts += [audio, np.zeros(SAMPLE_RATE // 2, dtype=np.float32)]
        total += len(audio) + SAMPLE_RATE // 2
        turn += 1
    return np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]


def measure(action: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median (wall s, process CPU s) of ``repeats`` runs after one warm-up."""
    action()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        action()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def bench_model(model: str, audio: np.ndarray, minutes: float, repeats: int) -> list[str]:
    engine = WhisperEngine(build_model(model, progress=False), EngineConfig(max_batch=8))
    rows = []
    try:
        plan = engine.plan(audio)
        runs: dict[str, Callable[[], object]] = {
            "transcribe (baseline)": partial(engine.transcribe_sync, audio, TranscribeOptions()),
            "transcribe + diarize": partial(engine.transcribe_sync, audio, TranscribeOptions(diarize=True)),
            "transcribe + diarize, num_speakers=2": partial(
                engine.transcribe_sync, audio, TranscribeOptions(diarize=True, num_speakers=2)
            ),
            "speaker pipeline alone": partial(engine.speaker_turns, audio, plan, None),
        }
        baseline = 0.0
        for name, action in runs.items():
            wall, cpu = measure(action, repeats)
            wall_min, cpu_min = wall / minutes, cpu / minutes
            if name == "transcribe (baseline)":
                baseline, added = wall_min, ""
            elif name == "speaker pipeline alone":
                added = f"{wall_min:.2f} (on its own)"
            else:
                added = f"{wall_min - baseline:+.2f}"
            rows.append(f"| {model} | {name} | {wall_min:.2f} | {cpu_min:.2f} | {added} |")
    finally:
        engine.close()
    return rows


async def _stream_once(engine: WhisperEngine, audio: np.ndarray, options: StreamOptions) -> list[float]:
    """Push ``audio`` through a stream in 100 ms frames; the seconds of each push that gave a final."""
    session = engine.open_stream(options)
    final_pushes = []
    frame = SAMPLE_RATE // 10
    for offset in range(0, audio.size, frame):
        started = time.perf_counter()
        results = await session.push(audio[offset : offset + frame])
        if any(r.is_final for r in results):
            final_pushes.append(time.perf_counter() - started)
    await session.close()
    return final_pushes


def bench_stream(model: str, audio: np.ndarray, minutes: float, repeats: int) -> list[str]:
    engine = WhisperEngine(build_model(model, progress=False), EngineConfig(max_batch=8))
    rows = []
    try:
        engine.warmup()
        baseline = 0.0
        for name, options in {
            "stream (baseline)": StreamOptions(timestamps=True),
            "stream + diarize": StreamOptions(timestamps=True, diarize=True),
        }.items():
            pushes: list[float] = []

            def run(options: StreamOptions = options, pushes: list[float] = pushes) -> None:
                pushes[:] = asyncio.run(_stream_once(engine, audio, options))

            wall, cpu = measure(run, repeats)
            wall_min, cpu_min = wall / minutes, cpu / minutes
            added = "" if name == "stream (baseline)" else f"{wall_min - baseline:+.2f}"
            baseline = wall_min if name == "stream (baseline)" else baseline
            median, p90 = statistics.median(pushes), float(np.percentile(pushes, 90))
            rows.append(
                f"| {model} | {name} | {wall_min:.2f} | {cpu_min:.2f} | {added} | {len(pushes)} "
                f"| {median * 1000:.0f} | {p90 * 1000:.0f} |"
            )
    finally:
        engine.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["whisper-tiny.en", "whisper-base"])
    parser.add_argument("--seconds", type=float, default=120.0, help="conversation length")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", nargs="+", choices=["batch", "stream"], default=["batch", "stream"])
    args = parser.parse_args()

    audio = conversation(args.seconds)
    minutes = len(audio) / SAMPLE_RATE / 60
    print(
        f"Diarization cost: {minutes:.1f} min two-speaker conversation, median of {args.repeats}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}\n"
    )
    if "batch" in args.runs:
        print("| model | run | wall s / audio min | CPU s / audio min | added wall s / audio min |")
        print("|---|---|---|---|---|")
        for model in args.models:
            for row in bench_model(model, audio, minutes, args.repeats):
                print(row)
        print()
    if "stream" in args.runs:
        print(
            "| model | run | wall s / audio min | CPU s / audio min | added wall s / audio min "
            "| finals | final push median ms | final push p90 ms |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for model in args.models:
            for row in bench_stream(model, audio, minutes, args.repeats):
                print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
