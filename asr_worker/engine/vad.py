"""Silero VAD (ONNX, shipped in the bundle): speech probability per 32 ms of 16 kHz audio.

The model is recurrent. For whole files the audio is cut into independent lanes of up to 30 s
that run side by side as one batch, so a 2-hour file takes ~940 model calls, not 225 000; each
lane carries its own state and 64-sample context, as the model expects. :class:`VadStream` keeps one
lane's state across pushes for live audio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000
CHUNK = 512  # samples per probability (32 ms)
CONTEXT = 64  # samples of the previous chunk prepended to each input
LANE_CHUNKS = 937  # ~30 s per lane

FloatArray = npt.NDArray[np.float32]


class SileroVad:
    def __init__(self, model_path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def _step(self, chunk_with_context: FloatArray, state: FloatArray) -> tuple[FloatArray, FloatArray]:
        out: list[Any] = self._session.run(
            None, {"input": chunk_with_context, "state": state, "sr": self._sr}
        )
        return out[0][:, 0], out[1]

    def speech_probabilities(self, samples: FloatArray) -> FloatArray:
        """One probability per 512-sample chunk (the last chunk is zero-padded)."""
        n_chunks = -(-samples.shape[0] // CHUNK)
        if n_chunks == 0:
            return np.zeros(0, dtype=np.float32)
        lanes = -(-n_chunks // LANE_CHUNKS)
        steps = min(n_chunks, LANE_CHUNKS)
        padded = np.zeros(lanes * steps * CHUNK, dtype=np.float32)
        padded[: samples.shape[0]] = samples
        grid = padded.reshape(lanes, steps, CHUNK)
        state = np.zeros((2, lanes, 128), dtype=np.float32)
        context = np.zeros((lanes, CONTEXT), dtype=np.float32)
        probs = np.zeros((lanes, steps), dtype=np.float32)
        for step in range(steps):
            chunk = grid[:, step]
            probs[:, step], state = self._step(np.concatenate([context, chunk], axis=1), state)
            context = chunk[:, -CONTEXT:]
        return probs.reshape(-1)[:n_chunks]

    def stream(self) -> VadStream:
        return VadStream(self)


class VadStream:
    """Incremental VAD over live audio: push samples, get probabilities for each completed chunk."""

    def __init__(self, vad: SileroVad) -> None:
        self._vad = vad
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, CONTEXT), dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def snapshot(self) -> tuple[FloatArray, FloatArray]:
        """The recurrent state and the context: what the next chunk's probability depends on."""
        return self._state.copy(), self._context.copy()

    def restore(self, state: FloatArray, context: FloatArray) -> None:
        """Continue from :meth:`snapshot` (on another process); any partial chunk is dropped."""
        self._state = state.astype(np.float32).copy()
        self._context = context.astype(np.float32).copy()
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, samples: FloatArray) -> FloatArray:
        self._pending = np.concatenate([self._pending, samples.astype(np.float32)])
        count = self._pending.shape[0] // CHUNK
        probs = np.zeros(count, dtype=np.float32)
        for index in range(count):
            chunk = self._pending[index * CHUNK : (index + 1) * CHUNK][None, :]
            prob, self._state = self._vad._step(np.concatenate([self._context, chunk], axis=1), self._state)
            probs[index] = prob[0]
            self._context = chunk[:, -CONTEXT:]
        self._pending = self._pending[count * CHUNK :]
        return probs
