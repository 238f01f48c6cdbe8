"""PcmStreamConverter: sample splitting across chunks, float32 input, streaming resampling."""

from __future__ import annotations

import numpy as np
import soxr

from asr_worker.service.pcm_stream import PcmStreamConverter
from oyez.proto import asr_v1_pb2 as pb


def test_linear16_odd_bytes_are_carried_not_dropped() -> None:
    raw = np.array([1, -1, 32767, -32768, 256], dtype="<i2").tobytes()
    converter = PcmStreamConverter(pb.LINEAR16, 16000)
    pieces = [converter.feed(raw[i : i + 3]) for i in range(0, len(raw), 3)]
    out = np.concatenate(pieces)
    expected = np.array([1, -1, 32767, -32768, 256], dtype=np.float32) / 32768
    np.testing.assert_array_equal(out, expected)
    assert [piece.size for piece in pieces] == [1, 2, 1, 1]
    assert all(piece.dtype == np.float32 for piece in pieces)


def test_unspecified_encoding_means_linear16() -> None:
    converter = PcmStreamConverter(pb.AUDIO_ENCODING_UNSPECIFIED, 16000)
    np.testing.assert_array_equal(converter.feed(b"\x00\x40"), np.array([0.5], dtype=np.float32))


def test_float32_is_split_on_four_bytes_and_sanitised() -> None:
    values = np.array([0.25, -0.5, np.nan, 3.0], dtype="<f4").tobytes()
    converter = PcmStreamConverter(pb.FLOAT32, 16000)
    first = converter.feed(values[:6])
    second = converter.feed(values[6:])
    np.testing.assert_array_equal(first, np.array([0.25], dtype=np.float32))
    np.testing.assert_array_equal(second, np.array([-0.5, 0.0, 1.0], dtype=np.float32))


def test_finalize_flush_keeps_a_carried_half_sample() -> None:
    converter = PcmStreamConverter(pb.LINEAR16, 16000)
    assert converter.feed(b"\x00").size == 0
    assert converter.flush().size == 0
    np.testing.assert_array_equal(converter.feed(b"\x40"), np.array([0.5], dtype=np.float32))


def test_8khz_chunks_resample_exactly_like_the_whole_signal() -> None:
    tone = 0.5 * np.sin(2 * np.pi * 300 * np.arange(8000) / 8000)
    pcm = (tone * 32767).astype("<i2")
    raw = pcm.tobytes()
    converter = PcmStreamConverter(pb.LINEAR16, 8000)
    chunks = [converter.feed(raw[i : i + 801]) for i in range(0, len(raw), 801)]  # odd sizes on purpose
    out = np.concatenate([*chunks, converter.flush()])
    # Resampling each chunk on its own would deviate at every boundary (by about 1e-2 here).
    whole = soxr.resample(pcm.astype(np.float32) / 32768, 8000, 16000, quality="HQ")
    assert out.dtype == np.float32
    assert out.size == whole.size == 16000
    np.testing.assert_allclose(out, whole, atol=1e-6)
