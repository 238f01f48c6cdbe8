"""Raw PCM from a live stream -> float32 16 kHz mono samples for the stream engine.

Chunks may split a sample anywhere: the incomplete tail is carried to the next chunk, never
dropped. Rates other than 16 kHz go through a *streaming* soxr resampler, which keeps its filter
state across chunks: the engine's one-shot ``resample`` would click at every chunk boundary.
"""

from __future__ import annotations

import numpy as np
import soxr

from asr_worker.engine.audio import RESAMPLE_QUALITY, pcm16_to_float32
from asr_worker.engine.types import Samples
from oyez.constants import SAMPLE_RATE
from oyez.proto import asr_v1_pb2 as pb

_EMPTY: Samples = np.zeros(0, dtype=np.float32)


def _float32_le(raw: bytes) -> Samples:
    samples = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    return np.clip(np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)


class PcmStreamConverter:
    """Stateful converter for one stream: ``feed`` chunks, ``flush`` before a finalize or the end."""

    def __init__(self, encoding: pb.AudioEncoding.ValueType, sample_rate: int) -> None:
        self._float = encoding == pb.FLOAT32
        self._width = 4 if self._float else 2
        self._rate = sample_rate
        self._carry = b""
        self._resampler = self._new_resampler()

    def _new_resampler(self) -> soxr.ResampleStream | None:
        if self._rate == SAMPLE_RATE:
            return None
        return soxr.ResampleStream(self._rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)

    def feed(self, raw: bytes) -> Samples:
        """Convert every complete sample in ``carry + raw``; keep the incomplete tail for later."""
        data = self._carry + raw
        usable = len(data) - len(data) % self._width
        self._carry = data[usable:]
        if usable == 0:
            return _EMPTY
        chunk = data[:usable]
        samples = _float32_le(chunk) if self._float else pcm16_to_float32(chunk)
        if self._resampler is None:
            return samples
        return np.asarray(self._resampler.resample_chunk(samples), dtype=np.float32)

    def flush(self) -> Samples:
        """Emit what the resampler still holds (its filter delay) and start a fresh one.

        An incomplete sample stays carried: the next chunk may complete it.
        """
        if self._resampler is None:
            return _EMPTY
        tail = np.asarray(self._resampler.resample_chunk(_EMPTY, last=True), dtype=np.float32)
        self._resampler = self._new_resampler()
        return tail
