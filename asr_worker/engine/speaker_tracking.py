"""Who is speaking in a live stream (pure logic: no I/O, no model).

A stream cannot wait for the whole recording to cluster it, so each session keeps a *voice profile*
per speaker heard so far: the sum of the unit embeddings of that speaker's windows, and how many.
When an utterance is committed, its windows (the same 1.6 s / 0.5 s windows as batch diarization)
are first clustered among themselves, exactly as a file is (average linkage, threshold
``SAME_SPEAKER_SIMILARITY``; a voice heard in a single window joins its neighbour). Each cluster is
then compared with every profile by the same average-linkage similarity (the mean cosine similarity
over all window pairs: the dot product of the two sums over the product of the counts):

- at least ``SAME_SPEAKER_SIMILARITY`` to the best profile: it is that speaker;
- otherwise a new speaker, numbered in order of first appearance, unless the session already has
  ``limit`` speakers (``num_speakers``, else ``MAX_SPEAKERS``): then the nearest one.

The cluster's windows are then added to its profile, so profiles sharpen as the session goes on and
labels never change once given. ``confidence`` says how clear the decision was, in [0, 1]:

- a known speaker: the average-linkage similarity to that speaker's earlier speech;
- a new speaker: one minus the similarity to the nearest other speaker (1.0 for the first one);
- a guess (an utterance too short for any window): 0.0.

The profiles travel in the stream checkpoint, so a stream resumed on another worker keeps its labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from oyez.constants import MAX_SPEAKERS

from .diarization import (
    LONE_WINDOW_SAME_SPEAKER,
    SAME_SPEAKER_SIMILARITY,
    FloatArray,
    SpeakerWindow,
    Turn,
    agglomerate,
    drop_rare_speakers,
    normalise,
)

EMBEDDING_SIZE = 256


@dataclass(frozen=True)
class VoiceProfile:
    total: FloatArray  # sum of the unit embeddings of the speaker's windows, float32 [256]
    windows: int


@dataclass(frozen=True)
class UtteranceSpeakers:
    """The session speaker of each window of one utterance, and how sure, per speaker heard."""

    window_speakers: npt.NDArray[np.int64]
    confidence: dict[int, float]


class SessionSpeakers:
    """The voice profiles of one stream; ``assign`` labels an utterance's windows and learns them."""

    def __init__(self, limit: int | None = None, profiles: Sequence[VoiceProfile] = ()) -> None:
        self.limit = min(limit or MAX_SPEAKERS, MAX_SPEAKERS)
        self._profiles = list(profiles)

    @property
    def profiles(self) -> list[VoiceProfile]:
        return list(self._profiles)

    def assign(self, windows: Sequence[SpeakerWindow], embeddings: FloatArray) -> UtteranceSpeakers:
        """Label the windows of one utterance (``embeddings`` one per window) with session speakers."""
        if not windows:
            return UtteranceSpeakers(np.zeros(0, dtype=np.int64), {})
        unit = normalise(embeddings)
        local = drop_rare_speakers(unit, agglomerate(unit, None), LONE_WINDOW_SAME_SPEAKER)
        result = np.zeros(len(windows), dtype=np.int64)
        confidence: dict[int, list[tuple[float, int]]] = {}
        # Clusters in order of first appearance, so new speakers are numbered as they are heard.
        for cluster in dict.fromkeys(local.tolist()):
            members = local == cluster
            total = unit[members].sum(axis=0)
            count = int(members.sum())
            speaker, sure = self._place(total, count)
            result[members] = speaker
            confidence.setdefault(speaker, []).append((sure, count))
        return UtteranceSpeakers(
            result,
            {
                speaker: round(sum(c * n for c, n in parts) / sum(n for _, n in parts), 3)
                for speaker, parts in confidence.items()
            },
        )

    def closest(self, embedding: FloatArray | None) -> tuple[int, float]:
        """The nearest known speaker of an utterance too short for a window (``embedding`` of all of
        it, None when even that is too short), without learning from it: it is too little to
        describe a voice. With nothing to compare, speaker 0 as a guess (confidence 0)."""
        if embedding is None or not self._profiles:
            return 0, 0.0
        similarity = self._similarities(normalise(embedding[None, :])[0], 1)
        best = int(np.argmax(similarity))
        return best, round(float(np.clip(similarity[best], 0.0, 1.0)), 3)

    def _similarities(self, total: FloatArray, count: int) -> npt.NDArray[np.float64]:
        sums = np.stack([p.total for p in self._profiles]).astype(np.float64)
        sizes = np.array([p.windows for p in self._profiles], dtype=np.float64)
        similarities: npt.NDArray[np.float64] = (sums @ total.astype(np.float64)) / (sizes * count)
        return similarities

    def _place(self, total: FloatArray, count: int) -> tuple[int, float]:
        """The speaker of a cluster (sum ``total`` of ``count`` unit embeddings), and how sure."""
        if self._profiles:
            similarity = self._similarities(total, count)
            best = int(np.argmax(similarity))
            nearest = float(similarity[best])
            if nearest >= SAME_SPEAKER_SIMILARITY or len(self._profiles) >= self.limit:
                self._learn(best, total, count)
                return best, float(np.clip(nearest, 0.0, 1.0))
            sure = float(np.clip(1.0 - nearest, 0.0, 1.0))
        else:
            sure = 1.0
        self._profiles.append(VoiceProfile(np.zeros(EMBEDDING_SIZE, dtype=np.float32), 0))
        self._learn(len(self._profiles) - 1, total, count)
        return len(self._profiles) - 1, sure

    def _learn(self, speaker: int, total: FloatArray, count: int) -> None:
        profile = self._profiles[speaker]
        self._profiles[speaker] = VoiceProfile(
            (profile.total + total).astype(np.float32), profile.windows + count
        )


def main_speaker(turns: Sequence[Turn]) -> int | None:
    """The speaker with the most speech in ``turns`` (the earliest on a tie); None without turns."""
    spoken: dict[int, float] = {}
    for turn in turns:
        spoken[turn.speaker] = spoken.get(turn.speaker, 0.0) + turn.end - turn.start
    if not spoken:
        return None
    return max(spoken, key=lambda speaker: spoken[speaker])
