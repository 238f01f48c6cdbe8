"""The benchmark workload (the real speech clips as requests) and the numbers computed per run.

Everything here is pure apart from :func:`load_clips`, which reads the committed WAV files once so
that no runner pays for file I/O inside a timed section.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .cpu import CpuUsage

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Clip:
    """One request's payload: the WAV file's bytes (worker) and its decoded samples (in-process runners)."""

    id: str
    text: str
    wav_bytes: bytes
    samples: npt.NDArray[np.float32] = field(repr=False)

    @property
    def duration_s(self) -> float:
        return float(self.samples.shape[0]) / SAMPLE_RATE


@dataclass(frozen=True)
class Outcome:
    """What one request produced and how long the client waited for it."""

    clip_id: str
    audio_s: float
    latency_s: float
    text: str = ""
    error: str | None = None
    server_s: float | None = None  # the worker's own processing_seconds, when reported


@dataclass(frozen=True)
class RunResult:
    """One timed (runner, model, precision, concurrency) point."""

    runner: str
    model: str
    precision: str
    concurrency: int
    wall_s: float
    outcomes: list[Outcome]
    cpu: CpuUsage | None = None
    attempts: int = 1  # timed lists run for this point (repeated when foreign load disturbed one)

    @property
    def requests(self) -> int:
        return len(self.outcomes)

    @property
    def audio_s(self) -> float:
        return sum(o.audio_s for o in self.outcomes)

    @property
    def errors(self) -> int:
        return sum(1 for o in self.outcomes if o.error is not None)

    @property
    def throughput(self) -> float:
        """Audio seconds transcribed per wall second."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def rtf(self) -> float:
        """c=1: wall / audio. c>1: per-request RTF, total request latency / total request audio."""
        if self.concurrency == 1:
            return self.wall_s / self.audio_s
        return sum(o.latency_s for o in self.outcomes) / self.audio_s

    def latency_percentile(self, q: float) -> float:
        return percentile([o.latency_s for o in self.outcomes], q)

    def mean_server_s(self) -> float | None:
        values = [o.server_s for o in self.outcomes if o.server_s is not None]
        return sum(values) / len(values) if values else None

    def mean_latency_s(self) -> float:
        return sum(o.latency_s for o in self.outcomes) / len(self.outcomes)


def load_clips(manifest_path: Path | None = None) -> list[Clip]:
    """The committed real-speech clips (``tests/data/speech``), read and decoded once."""
    import soundfile as sf

    from tests.speech_data import MANIFEST_PATH, load_speech_manifest

    clips = []
    for entry in load_speech_manifest(manifest_path or MANIFEST_PATH):
        data = entry.path.read_bytes()
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
        if rate != SAMPLE_RATE or samples.ndim != 1:
            raise ValueError(f"{entry.path} is not 16 kHz mono (rate {rate}, shape {samples.shape})")
        clips.append(Clip(id=entry.id, text=entry.text, wav_bytes=data, samples=samples))
    return clips


def request_count(n_clips: int, concurrency: int) -> int:
    """At least one pass over the clips and at least two requests per concurrent client."""
    return max(n_clips, 2 * concurrency)


def build_requests(clips: Sequence[Clip], concurrency: int) -> list[Clip]:
    """The fixed request list of one concurrency point: the clips in manifest order, cycled."""
    if not clips:
        raise ValueError("no clips to build requests from")
    return [clips[i % len(clips)] for i in range(request_count(len(clips), concurrency))]


def warmup_requests(clips: Sequence[Clip], concurrency: int) -> list[Clip]:
    """One untimed request per client, on the shortest clip (the 30 s encoder window dominates)."""
    shortest = min(clips, key=lambda clip: clip.samples.shape[0])
    return [shortest] * max(concurrency, 1)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default method); ``q`` in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def first_transcripts(outcomes: Sequence[Outcome]) -> dict[str, str]:
    """The first successful transcript of each clip, in request order."""
    texts: dict[str, str] = {}
    for outcome in outcomes:
        if outcome.error is None:
            texts.setdefault(outcome.clip_id, outcome.text)
    return texts


def unstable_clips(outcomes: Sequence[Outcome]) -> list[str]:
    """Clips whose repeated requests did not all produce the same transcript."""
    seen: dict[str, set[str]] = {}
    for outcome in outcomes:
        if outcome.error is None:
            seen.setdefault(outcome.clip_id, set()).add(outcome.text.strip())
    return sorted(clip for clip, texts in seen.items() if len(texts) > 1)


def clip_wer(clips: Sequence[Clip], outcomes: Sequence[Outcome]) -> float:
    """Corpus WER (Whisper English normaliser) over each clip's first transcript in this run.

    A clip with no successful transcript counts as an empty hypothesis (every word deleted).
    """
    from tests.speech_data import corpus_wer

    texts = first_transcripts(outcomes)
    return corpus_wer([clip.text for clip in clips], [texts.get(clip.id, "") for clip in clips])
