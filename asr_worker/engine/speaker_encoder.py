"""The speaker encoder (``speaker.onnx`` in the bundle) and the diarizer that uses it.

:class:`SpeakerEncoder` turns windows of speaker mels into L2-normalised 256-d embeddings on ONNX
Runtime (CPU: the model is small, and it keeps the GPU for Whisper). :class:`Diarizer` runs the
pure pipeline of :mod:`.diarization` over one file's speech regions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .diarization import (
    WINDOW_FRAMES,
    SpeakerWindow,
    Turn,
    cluster_windows,
    plan_speaker_windows,
    speaker_turns,
)
from .speaker_features import normalize_volume, speaker_mels
from .types import Samples

BATCH = 64


class SpeakerEncoder:
    def __init__(self, model_path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """One embedding per mel window (``[frames, 40]``; equal lengths are batched together)."""
        out = np.zeros((len(windows), 256), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for index, window in enumerate(windows):
            by_length.setdefault(window.shape[0], []).append(index)
        for indices in by_length.values():
            for lo in range(0, len(indices), BATCH):
                chunk = indices[lo : lo + BATCH]
                batch = np.stack([windows[i] for i in chunk]).astype(np.float32)
                result: list[Any] = self._session.run(["embeddings"], {"mels": batch})
                out[chunk] = result[0]
        return out


class Diarizer:
    def __init__(self, encoder: SpeakerEncoder) -> None:
        self._encoder = encoder

    def turns(
        self, samples: Samples, regions: Sequence[tuple[float, float]], num_speakers: int | None
    ) -> list[Turn]:
        """Speaker turns of ``samples`` (16 kHz) within its speech ``regions`` (seconds)."""
        windows = plan_speaker_windows(regions)
        if not windows:
            return speaker_turns(regions, windows, np.zeros(0, dtype=np.int64))
        embeddings = self.embed_windows(samples, windows)
        labels = cluster_windows(windows, embeddings, num_speakers)
        return speaker_turns(regions, windows, labels)

    def embed_windows(self, samples: Samples, windows: Sequence[SpeakerWindow]) -> np.ndarray:
        """One embedding per window of ``samples`` (16 kHz); a window past the end is zero-padded."""
        mels = speaker_mels(normalize_volume(samples))
        crops = []
        for window in windows:
            crop = mels[window.start : window.end]
            if crop.shape[0] < window.end - window.start:  # the audio ends inside the window
                crop = np.pad(crop, ((0, window.end - window.start - crop.shape[0]), (0, 0)))
            crops.append(crop)
        return self._encoder.embed(crops)

    def warm(self) -> None:
        """Run the encoder once, so the first diarized request does not pay for initialisation."""
        self._encoder.embed([np.zeros((WINDOW_FRAMES, 40), dtype=np.float32)])
