"""Diarization error rate and speaker-attributed WER for tests and benchmarks.

DER is frame based (10 ms), over the reference speech: (missed speech + false alarm + speaker
confusion) / reference speech, after the best one-to-one mapping of hypothesis speakers to
reference speakers (all permutations: conversations here have at most a handful of speakers).
A collar (seconds) around each reference boundary is not scored, as is usual.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

FRAME = 0.01

Segment = tuple[int, float, float]  # speaker, start s, end s


def _frames(segments: Sequence[Segment], n: int) -> np.ndarray:
    labels = np.full(n, -1, dtype=np.int64)
    for speaker, start, end in segments:
        labels[round(start / FRAME) : round(end / FRAME)] = speaker
    return labels


def diarization_error_rate(
    reference: Sequence[Segment], hypothesis: Sequence[Segment], *, collar: float = 0.25
) -> float:
    end = max([e for _, _, e in [*reference, *hypothesis]], default=0.0)
    n = round(end / FRAME) + 1
    ref, hyp = _frames(reference, n), _frames(hypothesis, n)
    scored = np.ones(n, dtype=bool)
    margin = round(collar / FRAME)
    for _, start, stop in reference:
        for edge in (round(start / FRAME), round(stop / FRAME)):
            scored[max(0, edge - margin) : edge + margin] = False
    ref, hyp = ref[scored], hyp[scored]
    total = int((ref >= 0).sum())
    if total == 0:
        return 0.0 if (hyp < 0).all() else 1.0
    missed = int(((ref >= 0) & (hyp < 0)).sum())
    false_alarm = int(((ref < 0) & (hyp >= 0)).sum())
    both = (ref >= 0) & (hyp >= 0)
    ref_speakers = sorted(set(ref[ref >= 0].tolist()))
    hyp_speakers = sorted(set(hyp[hyp >= 0].tolist()))
    best_correct = 0
    size = max(len(ref_speakers), len(hyp_speakers))
    padded_ref = ref_speakers + [-2] * (size - len(ref_speakers))
    for perm in itertools.permutations(padded_ref, len(hyp_speakers)):
        mapping = dict(zip(hyp_speakers, perm, strict=True))
        mapped = np.array([mapping.get(h, -3) for h in hyp[both].tolist()])
        best_correct = max(best_correct, int((mapped == ref[both]).sum()))
    confusion = int(both.sum()) - best_correct
    return (missed + false_alarm + confusion) / total
