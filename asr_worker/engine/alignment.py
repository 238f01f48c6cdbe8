"""Word timestamps from cross-attention: normalise the alignment heads, median-filter, then DTW.

Whisper's alignment heads attend to the audio frames a token was heard in. Dynamic time warping
over (tokens x frames) gives a monotonic path; the frame where the path enters a word's first token
is its start, and where it enters the next word is its end. Pure numpy.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FRAMES_PER_SECOND = 50  # encoder frames: 1500 per 30 s
MEDIAN_WIDTH = 7

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def median_filter_last_axis(x: FloatArray, width: int = MEDIAN_WIDTH) -> FloatArray:
    if x.shape[-1] <= width // 2:
        return x
    pad = width // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    result: FloatArray = np.median(windows, axis=-1).astype(np.float32)
    return result


def dtw_path(cost: npt.NDArray[np.float64]) -> tuple[IntArray, IntArray]:
    """Minimum-cost monotonic path through ``cost [N, M]`` from (0, 0) to (N-1, M-1).

    Steps are diagonal, down (next token) or right (next frame). Cells are filled one anti-diagonal
    at a time, which vectorises the recurrence; ties prefer diagonal, then down, then right.
    """
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    total[0, 0] = 0.0
    trace = np.full((n + 1, m + 1), -1, dtype=np.int8)
    for diagonal in range(2, n + m + 1):
        i = np.arange(max(1, diagonal - m), min(n, diagonal - 1) + 1)
        j = diagonal - i
        options = np.stack([total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]])
        choice = np.argmin(options, axis=0)
        total[i, j] = cost[i - 1, j - 1] + options[choice, np.arange(i.size)]
        trace[i, j] = choice
    i, j = n, m
    tokens: list[int] = []
    frames: list[int] = []
    while i > 0 and j > 0:
        tokens.append(i - 1)
        frames.append(j - 1)
        step = trace[i, j]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    return np.array(tokens[::-1], dtype=np.int64), np.array(frames[::-1], dtype=np.int64)


def token_start_times(alignment: FloatArray, n_frames: int) -> npt.NDArray[np.float64]:
    """Seconds at which each row of ``alignment [A, rows, 1500]`` begins, from DTW over its heads.

    ``n_frames`` is the number of encoder frames holding real audio (the rest is padding).
    Returns ``rows + 1`` times: each row's entry time and, last, the end of the path.
    """
    n_frames = max(1, min(n_frames, alignment.shape[-1]))
    weights = alignment[:, :, :n_frames].astype(np.float64)
    weights = weights / np.maximum(weights.sum(axis=-1, keepdims=True), 1e-12)
    mean = weights.mean(axis=-2, keepdims=True)
    std = weights.std(axis=-2, keepdims=True)
    weights = (weights - mean) / np.maximum(std, 1e-8)
    matrix = median_filter_last_axis(weights.astype(np.float32)).mean(axis=0)
    token_index, frame_index = dtw_path(-matrix.astype(np.float64))
    rows = alignment.shape[1]
    starts = np.zeros(rows + 1, dtype=np.float64)
    jumps = np.flatnonzero(np.diff(np.concatenate([[-1], token_index])) > 0)
    starts[token_index[jumps]] = frame_index[jumps] / FRAMES_PER_SECOND
    starts[rows] = n_frames / FRAMES_PER_SECOND
    return starts
