"""Speaker-encoder features in numpy: what Resemblyzer's voice encoder was trained on.

40 Slaney mel bins of the power spectrum (not log), 25 ms Hann windows every 10 ms at 16 kHz,
frames centred (reflect padding), after raising quiet audio to -30 dBFS. ``[frames, 40]`` float32.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .features import HOP_LENGTH, N_FFT, mel_filterbank

SAMPLE_RATE = 16000
MEL_CHANNELS = 40
FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE  # 10 ms
TARGET_DBFS = -30.0
_INT16_MAX = 2**15 - 1

FloatArray = npt.NDArray[np.float32]


def normalize_volume(samples: FloatArray) -> FloatArray:
    """Raise (never lower) the level to -30 dBFS, as the encoder's training audio was."""
    if samples.size == 0:
        return samples
    rms = float(np.sqrt(np.mean((samples.astype(np.float64) * _INT16_MAX) ** 2)))
    if rms <= 0.0:
        return samples
    change_db = TARGET_DBFS - 20.0 * np.log10(rms / _INT16_MAX)
    if change_db <= 0:
        return samples
    raised: FloatArray = (samples * (10.0 ** (change_db / 20.0))).astype(np.float32)
    return raised


def speaker_mels(samples: FloatArray) -> FloatArray:
    """Mel power frames of 16 kHz audio, one per 10 ms: ``[1 + len // 160, 40]``."""
    audio = samples.astype(np.float64)
    if audio.size < 2:
        audio = np.pad(audio, (0, 2 - audio.size))
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    spectrum = np.fft.rfft(frames * window, axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    mels: FloatArray = (power @ mel_filterbank(MEL_CHANNELS).T).astype(np.float32)
    return mels
