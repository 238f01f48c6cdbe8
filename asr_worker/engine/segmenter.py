"""Speech regions from VAD probabilities, and windows of at most 30 s cut at pauses. Pure logic.

Windows never cut inside a speech region unless a single region is longer than a window; then the
cut goes at the least speech-like 32 ms frame of the region's last third before the limit, which
in practice is the gap between two words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .vad import CHUNK

SAMPLE_RATE = 16000
MAX_WINDOW_SAMPLES = 30 * SAMPLE_RATE


@dataclass(frozen=True)
class VadConfig:
    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_speech_ms: int = 200
    min_silence_ms: int = 300
    speech_pad_ms: int = 200


@dataclass(frozen=True)
class Span:
    start: int  # samples
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def speech_regions(
    probs: npt.NDArray[np.float32], total_samples: int, config: VadConfig = VadConfig()
) -> list[Span]:
    """Hysteresis over the probabilities: speech starts above ``threshold`` and ends after
    ``min_silence_ms`` below ``neg_threshold``; short blips are dropped; regions are padded."""
    min_silence = int(config.min_silence_ms * SAMPLE_RATE / 1000 / CHUNK) or 1
    min_speech = config.min_speech_ms * SAMPLE_RATE // 1000
    pad = config.speech_pad_ms * SAMPLE_RATE // 1000
    regions: list[Span] = []
    start: int | None = None
    silent_run = 0
    for index, prob in enumerate(probs):
        if start is None:
            if prob >= config.threshold:
                start, silent_run = index, 0
            continue
        silent_run = silent_run + 1 if prob < config.neg_threshold else 0
        if silent_run >= min_silence:
            regions.append(Span(start * CHUNK, (index - silent_run + 1) * CHUNK))
            start = None
    if start is not None:
        regions.append(Span(start * CHUNK, total_samples))
    padded: list[Span] = []
    for region in regions:
        if region.length < min_speech:
            continue
        span = Span(max(0, region.start - pad), min(total_samples, region.end + pad))
        if padded and span.start <= padded[-1].end:
            padded[-1] = Span(padded[-1].start, max(padded[-1].end, span.end))
        else:
            padded.append(span)
    return padded


def _split_long(region: Span, probs: npt.NDArray[np.float32], max_samples: int) -> list[Span]:
    pieces: list[Span] = []
    start = region.start
    while region.end - start > max_samples:
        low = (start + (2 * max_samples) // 3) // CHUNK
        high = (start + max_samples) // CHUNK - 1
        window = probs[low:high] if high > low else np.zeros(0, dtype=np.float32)
        cut_chunk = low + int(np.argmin(window)) if window.size else high
        cut = min(max(cut_chunk * CHUNK + CHUNK // 2, start + CHUNK), start + max_samples)
        pieces.append(Span(start, cut))
        start = cut
    pieces.append(Span(start, region.end))
    return pieces


def plan_windows(
    regions: list[Span], probs: npt.NDArray[np.float32], max_samples: int = MAX_WINDOW_SAMPLES
) -> list[Span]:
    """Pack consecutive speech regions into windows of at most ``max_samples``, in order."""
    pieces: list[Span] = []
    for region in regions:
        pieces.extend(_split_long(region, probs, max_samples) if region.length > max_samples else [region])
    windows: list[Span] = []
    for piece in pieces:
        if windows and piece.end - windows[-1].start <= max_samples:
            windows[-1] = Span(windows[-1].start, piece.end)
        else:
            windows.append(piece)
    return windows


def widen_windows(
    windows: list[Span], total: int, pad: int, max_samples: int = MAX_WINDOW_SAMPLES
) -> list[Span]:
    """Give each window up to ``pad`` samples of context on both sides, without overlapping a
    neighbour (each side stops at the midpoint of the gap) or growing past ``max_samples``."""
    widened: list[Span] = []
    for index, window in enumerate(windows):
        left_limit = (windows[index - 1].end + window.start) // 2 if index else 0
        right_limit = (window.end + windows[index + 1].start) // 2 if index + 1 < len(windows) else total
        room = max(0, max_samples - window.length)
        left = min(pad, window.start - left_limit, room // 2)
        right = min(pad, right_limit - window.end, room - left)
        widened.append(Span(window.start - left, window.end + right))
    return widened


def plan_file_windows(
    probs: npt.NDArray[np.float32],
    total: int,
    config: VadConfig = VadConfig(),
    context_pad: int = SAMPLE_RATE // 2,
) -> list[Span]:
    """Windows for a whole file. No speech: none. Up to 30 s with speech: the whole file as one
    window (Whisper is trained on whole utterances, and trimming measurably costs accuracy).
    Longer: speech regions packed into windows cut at pauses, each given some context."""
    regions = speech_regions(probs, total, config)
    if not regions:
        return []
    if total <= MAX_WINDOW_SAMPLES:
        return [Span(0, total)]
    return widen_windows(plan_windows(regions, probs), total, context_pad)
