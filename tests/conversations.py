"""Conversations built from the real clips of different speakers in tests/data/speech, and the
speaker-attributed WER used to score diarization (batch and streaming)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import soundfile as sf

from tests.diarization_metrics import Segment
from tests.speech_data import SpeechClip, corpus_wer

SAMPLE_RATE = 16000
# Speakers in the data: the LibriVox reader (5 clips), the CMU "cards" speaker (5 clips),
# J. F. Kennedy, the "forever" speaker, and the pocketsphinx maintainer's clips.
SPEAKERS = {
    "A": ["librivox_0870", "librivox_0880", "librivox_0890", "librivox_0920", "librivox_0930"],
    "B": ["cards_001", "cards_002", "cards_003", "cards_004", "cards_005"],
    "C": ["jfk"],
    "D": ["forever_2"],
    "E": ["goforward", "tidigits_2934z"],
}


class Conversation:
    def __init__(self, clips: dict[str, SpeechClip], order: str, gap_s: float) -> None:
        parts, self.truth, self.texts = [], [], []
        used = dict.fromkeys(SPEAKERS, 0)
        t = 0.0
        for speaker in order:
            clip = clips[SPEAKERS[speaker][used[speaker] % len(SPEAKERS[speaker])]]
            used[speaker] += 1
            audio, rate = sf.read(clip.path, dtype="float32")
            assert rate == SAMPLE_RATE
            parts += [audio, np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)]
            self.truth.append((speaker, t, t + len(audio) / SAMPLE_RATE))
            self.texts.append((speaker, clip.text))
            t += len(audio) / SAMPLE_RATE + gap_s
        self.audio = np.concatenate(parts)
        self.speakers = len(set(order))

    def reference(self, speech: list[tuple[float, float]]) -> list[Segment]:
        names: dict[str, int] = {}
        out = []
        for speaker, start, end in self.truth:
            label = names.setdefault(speaker, len(names))
            for lo, hi in speech:
                if min(end, hi) > max(start, lo):
                    out.append((label, max(start, lo), min(end, hi)))
        return out


def speaker_attributed_wer(
    talk: Conversation,
    segments: Sequence[tuple[int, float, float]],
    words: Sequence[tuple[str, int | None]],
) -> float:
    """Per reference speaker, all of their text against the words given to the hypothesis speaker
    whose ``(speaker, start, end)`` segments overlap them most; pooled into one WER (a cpWER in the
    spirit of CHiME-6). ``words`` are ``(word, speaker)`` in order."""
    overlap: dict[tuple[str, int], float] = {}
    for speaker, start, end in talk.truth:
        for label, seg_start, seg_end in segments:
            shared = min(end, seg_end) - max(start, seg_start)
            if shared > 0:
                overlap[(speaker, label)] = overlap.get((speaker, label), 0.0) + shared
    references, hypotheses = [], []
    for speaker in sorted({s for s, _ in talk.texts}):
        mine = {h: v for (r, h), v in overlap.items() if r == speaker}
        chosen = max(mine, key=lambda h: mine[h]) if mine else -1
        references.append(" ".join(text for s, text in talk.texts if s == speaker))
        hypotheses.append(" ".join(word for word, label in words if label == chosen))
    return corpus_wer(references, hypotheses)
