"""Who spoke when (pure logic: no I/O, no model). The engine feeds it speech regions from the VAD
and one speaker embedding per window; it returns speaker turns and per-word speakers.

1. Windows: each speech region is covered by 1.6 s windows every 0.5 s (a shorter region gets one
   window of its own length, if it is at least 0.4 s long).
2. Clustering: average-linkage agglomerative clustering on cosine similarity. With many windows,
   neighbours in the same region are pooled first (at most ``MAX_CLUSTER_ITEMS`` items), the pooled
   items are clustered, and every window then goes to the nearest cluster centroid.
   - Without ``num_speakers``: merging stops when the most similar pair of clusters is below
     ``SAME_SPEAKER_SIMILARITY`` (0.62), and a cluster heard in a single window only joins its
     nearest neighbour (one short noise is not a speaker).
   - With ``num_speakers``: merging stops at that many clusters, except that clusters more similar
     than ``SURELY_SAME_SPEAKER`` (0.70) are still merged, and a single-window cluster whose centroid
     is within ``LONE_WINDOW_SAME_SPEAKER`` (0.6) of another joins it: ``num_speakers=3`` on a
     one-person recording stays one speaker; ``num_speakers`` is a ceiling the audio must support.
   The numbers were chosen on conversations built from the real clips in tests/data/speech (5
   speakers): thresholds 0.62 to 0.65 gave the same, lowest error; 0.60 merged two speakers;
   tests/integration/test_diarization.py and bench/RESULTS.md hold the measurements.
3. Turns: each 10 ms frame of speech takes the label of the nearest window centre in its region;
   runs of one label become turns; a turn shorter than ``MIN_TURN_S`` joins its longer neighbour.
4. Labels are renumbered by first appearance (SPEAKER_00 speaks first).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FRAME_S = 0.01
WINDOW_FRAMES = 160  # 1.6 s: what the encoder was trained on
STEP_FRAMES = 50  # 0.5 s
MIN_WINDOW_FRAMES = 40  # a region shorter than 0.4 s gets no window of its own
MAX_CLUSTER_ITEMS = 300
SAME_SPEAKER_SIMILARITY = 0.62
SURELY_SAME_SPEAKER = 0.70
MIN_TURN_S = 0.5
MIN_SPEAKER_WINDOWS = 2  # a "speaker" heard in one window only (<~2 s) is usually noise...
LONE_WINDOW_SAME_SPEAKER = 0.6  # ...and with num_speakers, merged when its centroid is this close

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SpeakerWindow:
    region: int  # index of the speech region it lies in
    start: int  # frame (10 ms) where it starts
    end: int  # frame where it ends (exclusive)

    @property
    def centre(self) -> float:
        return (self.start + self.end) / 2


@dataclass(frozen=True)
class Turn:
    speaker: int
    start: float  # seconds
    end: float


def plan_speaker_windows(regions: Sequence[tuple[float, float]]) -> list[SpeakerWindow]:
    """Windows over the speech regions (seconds), in time order."""
    windows: list[SpeakerWindow] = []
    for index, (start_s, end_s) in enumerate(regions):
        start, end = round(start_s / FRAME_S), round(end_s / FRAME_S)
        length = end - start
        if length < MIN_WINDOW_FRAMES:
            continue
        if length <= WINDOW_FRAMES:
            windows.append(SpeakerWindow(index, start, end))
            continue
        offsets = list(range(0, length - WINDOW_FRAMES + 1, STEP_FRAMES))
        if offsets[-1] + WINDOW_FRAMES < length:
            offsets.append(length - WINDOW_FRAMES)  # the last window ends with the region
        windows += [SpeakerWindow(index, start + o, start + o + WINDOW_FRAMES) for o in offsets]
    return windows


def normalise(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalised: FloatArray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalised


def _pool(
    windows: Sequence[SpeakerWindow], embeddings: FloatArray, limit: int
) -> tuple[FloatArray, list[int]]:
    """At most ``limit`` items: runs of neighbouring windows in one region averaged together.
    Returns the item embeddings and, per window, its item."""
    n = len(windows)
    group = max(1, -(-n // limit))
    while True:
        owner: list[int] = []
        items: list[FloatArray] = []
        run_start = 0
        for i in range(1, n + 1):
            if i == n or windows[i].region != windows[run_start].region or i - run_start == group:
                items.append(embeddings[run_start:i].mean(axis=0))
                owner += [len(items) - 1] * (i - run_start)
                run_start = i
        if len(items) <= limit:
            return normalise(np.stack(items)), owner
        group += 1


def agglomerate(items: FloatArray, num_speakers: int | None) -> npt.NDArray[np.int64]:
    """Average-linkage clustering of L2-normalised embeddings; a label per item."""
    n = items.shape[0]
    labels = np.arange(n)
    if n <= 1:
        return np.zeros(n, dtype=np.int64)
    sums = items.astype(np.float64).copy()
    sizes = np.ones(n)
    similarity = sums @ sums.T
    np.fill_diagonal(similarity, -np.inf)
    alive = np.ones(n, dtype=bool)
    clusters = n
    while clusters > 1:
        flat = int(np.argmax(similarity))
        a, b = divmod(flat, n)
        best = similarity[a, b]
        if num_speakers is None:
            if best < SAME_SPEAKER_SIMILARITY:
                break
        elif clusters <= num_speakers and best < SURELY_SAME_SPEAKER:
            break
        # Merge b into a. For unit vectors, the average pairwise similarity of two clusters is the
        # dot product of their sums over the product of their sizes: exact average linkage.
        sums[a] += sums[b]
        sizes[a] += sizes[b]
        alive[b] = False
        labels[labels == b] = a
        row = (sums @ sums[a]) / (sizes * sizes[a])
        row[~alive] = -np.inf
        row[a] = -np.inf
        similarity[a, :] = row
        similarity[:, a] = row
        similarity[b, :] = -np.inf
        similarity[:, b] = -np.inf
        clusters -= 1
    _, dense = np.unique(labels, return_inverse=True)
    return dense.astype(np.int64)


def cluster_windows(
    windows: Sequence[SpeakerWindow], embeddings: FloatArray, num_speakers: int | None
) -> npt.NDArray[np.int64]:
    """A speaker label per window."""
    if not windows:
        return np.zeros(0, dtype=np.int64)
    unit = normalise(embeddings)
    items, owner = _pool(windows, unit, MAX_CLUSTER_ITEMS)
    item_labels = agglomerate(items, num_speakers)
    labels = item_labels[np.array(owner)]
    if len(items) < len(windows):
        # Pooled: every window goes to its nearest centroid, which keeps turn boundaries sharp.
        k = int(labels.max()) + 1
        centroids = normalise(np.stack([unit[labels == c].mean(axis=0) for c in range(k)]))
        labels = np.argmax(unit @ centroids.T, axis=1).astype(np.int64)
    labels = drop_rare_speakers(unit, labels, -1.0 if num_speakers is None else LONE_WINDOW_SAME_SPEAKER)
    _, dense = np.unique(labels, return_inverse=True)
    result: npt.NDArray[np.int64] = dense.astype(np.int64)
    return result


def drop_rare_speakers(
    unit: FloatArray, labels: npt.NDArray[np.int64], min_similarity: float
) -> npt.NDArray[np.int64]:
    """A cluster heard in fewer than MIN_SPEAKER_WINDOWS windows joins the nearest other cluster when
    its centroid is at least ``min_similarity`` from that cluster's."""
    counts = np.bincount(labels)
    keep = np.flatnonzero(counts >= MIN_SPEAKER_WINDOWS)
    if len(keep) == 0 or len(keep) == len(counts):
        return labels
    centroids = normalise(np.stack([unit[labels == c].mean(axis=0) for c in keep]))
    moved = labels.copy()
    for rare in np.flatnonzero(counts < MIN_SPEAKER_WINDOWS):
        members = labels == rare
        centre = normalise(unit[members].mean(axis=0, keepdims=True))[0]
        similarity = centroids @ centre
        if similarity.max() >= min_similarity:
            moved[members] = keep[int(np.argmax(similarity))]
    return moved


def speaker_turns(
    regions: Sequence[tuple[float, float]],
    windows: Sequence[SpeakerWindow],
    labels: npt.NDArray[np.int64],
    *,
    renumber: bool = True,
) -> list[Turn]:
    """Turns over the speech regions; speakers numbered by first appearance unless ``renumber`` is
    false (a stream's labels are the session's)."""
    by_region: dict[int, list[int]] = {}
    for index, window in enumerate(windows):
        by_region.setdefault(window.region, []).append(index)
    raw: list[Turn] = []
    for region, (start_s, end_s) in enumerate(regions):
        members = by_region.get(region)
        start, end = round(start_s / FRAME_S), round(end_s / FRAME_S)
        if end <= start:
            continue
        if not members:
            raw.append(Turn(-1, start_s, end_s))  # too short to tell: decided by its neighbours
            continue
        centres = np.array([windows[i].centre for i in members])
        frames = np.arange(start, end) + 0.5
        nearest = np.argmin(np.abs(frames[:, None] - centres[None, :]), axis=1)
        frame_labels = labels[np.array(members)][nearest]
        changes = np.flatnonzero(np.diff(frame_labels)) + 1
        bounds = [0, *changes.tolist(), len(frame_labels)]
        for lo, hi in itertools.pairwise(bounds):
            raw.append(Turn(int(frame_labels[lo]), (start + lo) * FRAME_S, (start + hi) * FRAME_S))
    turns = _absorb_short(_fill_unknown(raw))
    return _renumber(turns) if renumber else turns


def _fill_unknown(turns: list[Turn]) -> list[Turn]:
    """A region too short for a window takes the speaker of the nearer neighbouring turn."""
    known = [t for t in turns if t.speaker >= 0]
    if not known:
        return []
    filled = []
    for turn in turns:
        if turn.speaker >= 0:
            filled.append(turn)
            continue
        mid = (turn.start + turn.end) / 2
        nearest = min(known, key=lambda k: min(abs(k.start - mid), abs(k.end - mid)))
        filled.append(Turn(nearest.speaker, turn.start, turn.end))
    return filled


def _absorb_short(turns: list[Turn]) -> list[Turn]:
    """A turn shorter than MIN_TURN_S inside a stretch of speech (touching another turn) takes the
    speaker of its longer touching neighbour. Each change merges turns, so this ends."""
    merged = _merge_adjacent(turns)
    i = 0
    while i < len(merged):
        turn = merged[i]
        touching = [
            j
            for j in (i - 1, i + 1)
            if 0 <= j < len(merged)
            and min(abs(merged[j].end - turn.start), abs(turn.end - merged[j].start)) < 1e-9
        ]
        if turn.end - turn.start < MIN_TURN_S and touching:
            host = max(touching, key=lambda j: merged[j].end - merged[j].start)
            merged[i] = Turn(merged[host].speaker, turn.start, turn.end)
            merged = _merge_adjacent(merged)
            i = max(0, i - 1)
            continue
        i += 1
    return merged


def _merge_adjacent(turns: list[Turn], gap_s: float = 0.0) -> list[Turn]:
    out: list[Turn] = []
    for turn in turns:
        if out and out[-1].speaker == turn.speaker and turn.start - out[-1].end <= gap_s + 1e-9:
            out[-1] = Turn(turn.speaker, out[-1].start, turn.end)
        else:
            out.append(turn)
    return out


def _renumber(turns: list[Turn]) -> list[Turn]:
    order: dict[int, int] = {}
    for turn in turns:
        order.setdefault(turn.speaker, len(order))
    return [Turn(order[t.speaker], t.start, t.end) for t in turns]


def word_speakers(words: Sequence[tuple[float, float]], turns: Sequence[Turn]) -> list[int]:
    """The speaker of each (start, end) word: the turn it overlaps most, else the nearest turn."""
    if not turns:
        return [0] * len(words)
    starts = np.array([t.start for t in turns])
    ends = np.array([t.end for t in turns])
    speakers = np.array([t.speaker for t in turns])
    result = []
    for start, end in words:
        overlap = np.minimum(ends, max(end, start)) - np.maximum(starts, start)
        if overlap.max() > 0:
            result.append(int(speakers[int(np.argmax(overlap))]))
            continue
        mid = (start + end) / 2
        distance = np.maximum(starts - mid, 0) + np.maximum(mid - ends, 0)
        result.append(int(speakers[int(np.argmin(distance))]))
    return result


def speaker_label(speaker: int) -> str:
    return f"SPEAKER_{speaker:02d}"
