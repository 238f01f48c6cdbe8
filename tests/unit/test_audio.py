"""Audio decoding: container sniffing, every supported format from real speech, and typed errors.

Inputs are generated from the committed JFK clip (``tests/data/speech/jfk.wav``) with PyAV's
bundled FFmpeg encoders and libsndfile, then decoded and compared with the original: rate, channel
count, duration, and the normalised cross-correlation of the waveforms at the best small lag.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
import soxr

from asr_worker.engine import audio
from asr_worker.engine.audio import (
    DecodedAudio,
    check_sample_rate,
    decode_audio,
    decode_audio_file,
    pcm16_to_float32,
    resample,
)
from oyez import constants
from oyez.audio_format import describe_unsupported, ogg_codec, parse_wav_header, sniff_format
from oyez.errors import (
    AudioTooLong,
    CorruptAudio,
    EmptyAudio,
    InvalidParameter,
    OyezError,
    UnsupportedFormat,
)
from tests.speech_data import SPEECH_DIR, load_speech_manifest, speech_clip

F32 = npt.NDArray[np.float32]
SR = constants.SAMPLE_RATE
SUPPORTED = ["wav", "mp3", "flac", "ogg", "m4a"]


# --- signal helpers ---------------------------------------------------------------------------


def best_ncc(reference: F32, test: F32, max_lag: int = 2400) -> float:
    """Normalised cross-correlation of two signals, maximised over lags within ``max_lag``."""
    n = max(len(reference), len(test))
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(test.astype(np.float64), size) * np.conj(np.fft.rfft(reference, size))
    corr = np.fft.irfft(spectrum, size)
    lags = np.concatenate([corr[: max_lag + 1], corr[-max_lag:]])
    denom = float(np.linalg.norm(reference) * np.linalg.norm(test))
    return float(np.max(lags) / denom) if denom else 0.0


def rms(x: F32) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def to_rate(x: F32, rate: int) -> F32:
    return x if rate == SR else np.asarray(soxr.resample(x, SR, rate, quality="VHQ"), dtype=np.float32)


def wav_bytes(x: F32 | npt.NDArray[np.int16], rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def encode_av(x: F32, rate: int, container: str, codec: str, bit_rate: int | None = None) -> bytes:
    """Encode ``(frames,)`` or ``(frames, channels)`` float audio with PyAV/FFmpeg."""
    planar = np.ascontiguousarray(x[None, :] if x.ndim == 1 else x.T, dtype=np.float32)
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[planar.shape[0]]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        if bit_rate:
            stream.bit_rate = bit_rate
        for start in range(0, planar.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planar[:, start : start + 4096]), format="fltp", layout=layout
            )
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def wav_header(rate: int, channels: int, bits: int, data_bytes: int) -> bytes:
    """A canonical 44-byte PCM WAV header declaring ``data_bytes`` of sample data."""
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * align, align, bits)
    return (
        b"RIFF"
        + struct.pack("<I", min(36 + data_bytes, 0xFFFFFFFF))
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", data_bytes))
    )


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jfk() -> F32:
    """The JFK clip at 16 kHz, float32 (11.0 s)."""
    samples, rate = sf.read(speech_clip("jfk").path, dtype="float32")
    assert rate == SR
    return np.asarray(samples, dtype=np.float32)


@dataclass(frozen=True)
class Variant:
    """How to build one encoded file from the reference, and what decoding it must report."""

    build: Callable[[F32], bytes]
    fmt: str
    rate: int
    channels: int
    duration_tol: float = 1e-3
    min_ncc: float = 0.999


def _stereo(x: F32) -> F32:
    """Left = x, right = x/2: a mean downmix gives 0.75 x (a left-only pick would give x)."""
    return np.stack([x, 0.5 * x], axis=1).astype(np.float32)


VARIANTS: dict[str, Variant] = {
    "wav_8k": Variant(lambda x: wav_bytes(to_rate(x, 8000), 8000), "wav", 8000, 1, min_ncc=0.99),
    "wav_16k": Variant(lambda x: wav_bytes(x, SR), "wav", SR, 1, duration_tol=1e-6, min_ncc=0.9999),
    "wav_44k1_stereo": Variant(lambda x: wav_bytes(_stereo(to_rate(x, 44100)), 44100), "wav", 44100, 2),
    "wav_48k": Variant(lambda x: wav_bytes(to_rate(x, 48000), 48000), "wav", 48000, 1),
    "wav_24bit": Variant(lambda x: wav_bytes(to_rate(x, 44100), 44100, "PCM_24"), "wav", 44100, 1),
    "wav_float": Variant(lambda x: wav_bytes(to_rate(x, 22050), 22050, "FLOAT"), "wav", 22050, 1),
    "wav_u8": Variant(lambda x: wav_bytes(x, SR, "PCM_U8"), "wav", SR, 1, min_ncc=0.99),
    "wav_ulaw": Variant(lambda x: wav_bytes(x, SR, "ULAW"), "wav", SR, 1, min_ncc=0.99),
    "rf64": Variant(lambda x: wav_bytes(x, SR, "PCM_16", "RF64"), "wav", SR, 1, duration_tol=1e-6),
    # MP3 data in a WAV container: libsndfile refuses it, the FFmpeg fallback decodes it.
    "wav_holding_mp3": Variant(
        lambda x: encode_av(x, SR, "wav", "libmp3lame", 64000), "wav", SR, 1, duration_tol=0.1, min_ncc=0.98
    ),
    "mp3_44k1_stereo": Variant(
        lambda x: encode_av(_stereo(to_rate(x, 44100)), 44100, "mp3", "libmp3lame", 128000),
        "mp3",
        44100,
        2,
        duration_tol=0.03,
        min_ncc=0.98,
    ),
    "mp3_8k": Variant(
        lambda x: encode_av(to_rate(x, 8000), 8000, "mp3", "libmp3lame", 32000),
        "mp3",
        8000,
        1,
        duration_tol=0.03,
        min_ncc=0.98,
    ),
    "flac_16k": Variant(lambda x: encode_av(x, SR, "flac", "flac"), "flac", SR, 1, min_ncc=0.9999),
    "flac_24bit_48k": Variant(
        lambda x: wav_bytes(to_rate(x, 48000), 48000, "PCM_24", "FLAC"), "flac", 48000, 1
    ),
    "flac_5.1": Variant(
        lambda x: wav_bytes(np.repeat(x[:, None], 6, axis=1), SR, "PCM_16", "FLAC"), "flac", SR, 6
    ),
    "ogg_vorbis": Variant(
        lambda x: wav_bytes(to_rate(x, 44100), 44100, "VORBIS", "OGG"), "ogg", 44100, 1, min_ncc=0.98
    ),
    "ogg_opus": Variant(
        lambda x: encode_av(to_rate(x, 48000), 48000, "ogg", "libopus", 64000),
        "ogg",
        48000,
        1,
        duration_tol=0.03,
        min_ncc=0.98,
    ),
    "m4a_aac": Variant(
        lambda x: encode_av(_stereo(to_rate(x, 44100)), 44100, "ipod", "aac", 128000),
        "m4a",
        44100,
        2,
        duration_tol=0.03,
        min_ncc=0.98,
    ),
    "mp4_aac": Variant(
        lambda x: encode_av(x, SR, "mp4", "aac", 64000), "m4a", SR, 1, duration_tol=0.03, min_ncc=0.98
    ),
    # Raw ADTS has no edit list, so the encoder's priming samples (~1024 + padding) stay in.
    "adts_aac": Variant(
        lambda x: encode_av(x, SR, "adts", "aac", 64000), "aac", SR, 1, duration_tol=0.1, min_ncc=0.98
    ),
}
"""Lossless variants must match almost exactly (min_ncc 0.999 by default); lossy ones >= 0.98."""


@pytest.fixture(scope="module")
def encoded(jfk: F32) -> dict[str, bytes]:
    return {name: variant.build(jfk) for name, variant in VARIANTS.items()}


@pytest.fixture(scope="module")
def webm(jfk: F32) -> bytes:
    """A real (tiny) WebM: Opus in Matroska, which the product does not accept."""
    return encode_av(to_rate(jfk[: SR // 2], 48000), 48000, "webm", "libopus", 32000)


# --- decoding every supported format ----------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_decodes_format_to_16k_mono(name: str, encoded: dict[str, bytes], jfk: F32) -> None:
    variant = VARIANTS[name]
    data = encoded[name]
    assert sniff_format(data) == variant.fmt

    result = decode_audio(data)

    assert isinstance(result, DecodedAudio)
    assert result.format == variant.fmt
    assert result.source_sample_rate == variant.rate
    assert result.source_channels == variant.channels
    samples = result.samples
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert np.all(np.abs(samples) <= 1.0)
    assert result.duration == pytest.approx(len(jfk) / SR, abs=variant.duration_tol)
    assert len(samples) == pytest.approx(result.duration * SR, abs=64)  # output really is 16 kHz
    ncc = best_ncc(jfk, samples)
    assert ncc > variant.min_ncc, f"{name}: correlation with the original only {ncc:.4f}"


def test_pcm16_wav_at_16k_is_bit_exact(encoded: dict[str, bytes]) -> None:
    pcm = sf.read(speech_clip("jfk").path, dtype="int16")[0]
    result = decode_audio(encoded["wav_16k"])
    np.testing.assert_array_equal(result.samples, pcm.astype(np.float32) / 32768.0)


def test_stereo_is_averaged_not_one_channel(encoded: dict[str, bytes], jfk: F32) -> None:
    # left = x, right = x / 2 -> the mean is 0.75 x (0.5 or 1.0 would mean a single channel was kept).
    # FFmpeg's libmp3lame wrapper encodes at 0.95 of full scale, hence the MP3 expectation.
    for name, expected in (("wav_44k1_stereo", 0.75), ("m4a_aac", 0.75), ("mp3_44k1_stereo", 0.75 * 0.95)):
        ratio = rms(decode_audio(encoded[name]).samples) / rms(jfk)
        assert ratio == pytest.approx(expected, abs=0.02), name


def test_resampled_level_is_preserved(encoded: dict[str, bytes], jfk: F32) -> None:
    for name in ("wav_8k", "wav_48k", "wav_float", "ogg_vorbis"):
        ratio = rms(decode_audio(encoded[name]).samples) / rms(jfk)
        assert ratio == pytest.approx(1.0, abs=0.06), name


def test_correlation_measure_rejects_a_different_signal(jfk: F32) -> None:
    """The similarity thresholds above mean something: reversed speech scores far below them."""
    assert best_ncc(jfk, jfk) == pytest.approx(1.0, abs=1e-6)
    assert best_ncc(jfk, jfk[::-1].copy()) < 0.5
    noise = np.random.default_rng(0).standard_normal(len(jfk)).astype(np.float32)
    assert best_ncc(jfk, noise) < 0.1


def test_silent_file_is_valid_and_decodes_to_zeros() -> None:
    result = decode_audio(wav_bytes(np.zeros(SR, np.int16), SR))
    assert result.duration == pytest.approx(1.0)
    assert len(result.samples) == SR
    assert not np.any(result.samples)


def test_float_wav_out_of_range_is_clipped() -> None:
    loud = np.full(SR // 10, 3.0, np.float32)
    loud[::2] = -3.0
    result = decode_audio(wav_bytes(loud, SR, "FLOAT"))
    assert result.samples.max() == 1.0
    assert result.samples.min() == -1.0


def test_decode_audio_file_reads_a_path() -> None:
    clip = speech_clip("jfk")
    result = decode_audio_file(clip.path)
    assert result.format == "wav"
    assert result.duration == pytest.approx(clip.duration_s, abs=1e-3)


def test_minimum_rate_8k_is_accepted() -> None:
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.float32)
    result = decode_audio(wav_bytes(tone, constants.MIN_SAMPLE_RATE))
    assert result.source_sample_rate == 8000
    assert len(result.samples) == pytest.approx(SR, abs=2)


# --- bad input: each error type, with a message that says what to fix -----------------------


def test_empty_bytes() -> None:
    with pytest.raises(EmptyAudio) as info:
        decode_audio(b"")
    assert "empty" in info.value.message
    assert info.value.to_dict()["code"] == "EMPTY_AUDIO"


def test_random_bytes_are_unsupported() -> None:
    data = np.random.default_rng(1234).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    assert sniff_format(data) is None
    with pytest.raises(UnsupportedFormat) as info:
        decode_audio(data)
    assert "wav, mp3, flac, ogg, m4a" in info.value.message
    assert "ffmpeg" in info.value.message
    assert info.value.to_dict() == {
        "error": info.value.message,
        "code": "UNSUPPORTED_FORMAT",
        "supported_formats": SUPPORTED,
    }


def test_webm_is_unsupported_and_named(webm: bytes) -> None:
    assert webm[:4] == b"\x1a\x45\xdf\xa3"
    assert sniff_format(webm) is None
    with pytest.raises(UnsupportedFormat) as info:
        decode_audio(webm)
    assert "WebM" in info.value.message
    assert info.value.details["supported_formats"] == SUPPORTED


def test_text_file_is_unsupported() -> None:
    text = b"Meeting notes\nThe quarterly numbers are attached.\n" * 20
    with pytest.raises(UnsupportedFormat) as info:
        decode_audio(text)
    assert "text" in info.value.message


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(200), "PDF"),
        (b"FORM\x00\x00\x10\x00AIFFCOMM" + bytes(100), "AIFF"),
        (b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(100), "AVI"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00" + bytes(100), "heic"),
    ],
)
def test_other_non_audio_is_unsupported_and_named(data: bytes, named: str) -> None:
    with pytest.raises(UnsupportedFormat) as info:
        decode_audio(data)
    assert named in info.value.message


def test_truncated_wav_header_is_corrupt(encoded: dict[str, bytes]) -> None:
    data = encoded["wav_16k"][:30]  # cut inside the fmt chunk
    assert sniff_format(data) == "wav"
    with pytest.raises(CorruptAudio) as info:
        decode_audio(data)
    assert "WAV" in info.value.message
    assert "truncated" in info.value.message
    assert info.value.to_dict()["code"] == "CORRUPT_AUDIO"


@pytest.mark.parametrize(
    "magic",
    [b"fLaC", b"OggS", b"ID3\x04\x00\x00\x00\x00\x00\x00", b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00"],
    ids=["flac", "ogg", "mp3", "m4a"],
)
def test_recognised_container_with_garbage_is_corrupt(magic: bytes) -> None:
    garbage = np.random.default_rng(7).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    data = magic + garbage
    fmt = sniff_format(data)
    assert fmt is not None
    with pytest.raises(CorruptAudio) as info:
        decode_audio(data)
    assert "cannot be decoded" in info.value.message
    assert fmt.upper() in info.value.message


def test_wav_with_no_samples_is_empty() -> None:
    with pytest.raises(EmptyAudio) as info:
        decode_audio(wav_bytes(np.zeros(0, np.int16), SR))
    assert "no audio samples" in info.value.message


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_sample_rate_below_minimum_is_rejected(fmt: str, jfk: F32) -> None:
    data = wav_bytes(to_rate(jfk, 4000), 4000, "PCM_16", fmt)
    with pytest.raises(UnsupportedFormat) as info:
        decode_audio(data)
    assert "4000 Hz" in info.value.message
    assert "8000 Hz" in info.value.message
    assert info.value.details["supported_formats"] == SUPPORTED


def test_check_sample_rate() -> None:
    check_sample_rate(8000)
    check_sample_rate(48000)
    with pytest.raises(UnsupportedFormat, match="7999 Hz"):
        check_sample_rate(7999)


@pytest.mark.parametrize(
    "name", ["wav_16k", "flac_16k", "ogg_vorbis", "ogg_opus", "mp3_44k1_stereo", "m4a_aac"]
)
def test_longer_than_limit_is_rejected(name: str, encoded: dict[str, bytes]) -> None:
    with pytest.raises(AudioTooLong) as info:
        decode_audio(encoded[name], max_seconds=5)
    assert info.value.details == {"max_duration_s": 5}
    assert "limit is 5 s" in info.value.message
    assert "Split" in info.value.message
    assert info.value.to_dict()["code"] == "AUDIO_TOO_LONG"


def test_exactly_at_limit_is_accepted(encoded: dict[str, bytes]) -> None:
    assert decode_audio(encoded["wav_16k"], max_seconds=11).duration == pytest.approx(11.0)


def test_default_limit_is_two_hours() -> None:
    # Header says 2 h + 1 s of 16 kHz mono 16-bit; only the header is checked.
    data = wav_header(SR, 1, 16, (7201 * SR) * 2) + bytes(3200)
    with pytest.raises(AudioTooLong) as info:
        decode_audio(data)
    assert info.value.details == {"max_duration_s": 7200}
    assert "2 hours" in info.value.message


def test_huge_declared_wav_is_rejected_from_the_header(jfk: F32, monkeypatch: pytest.MonkeyPatch) -> None:
    """Header claims 1 GiB (9.3 h) but holds 1 s: only a header check can see it is too long."""
    pcm = (jfk[:SR] * 32767).astype("<i2").tobytes()
    data = wav_header(SR, 1, 16, 1 << 30) + pcm

    def no_decoding(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("decoder opened although the header already exceeded the limit")

    monkeypatch.setattr(sf, "SoundFile", no_decoding)
    monkeypatch.setattr(av, "open", no_decoding)
    with pytest.raises(AudioTooLong) as info:
        decode_audio(data)
    assert "header declares" in info.value.message
    assert info.value.details == {"max_duration_s": 7200}


def test_streaming_placeholder_size_is_not_taken_as_length(jfk: F32) -> None:
    """0xFFFFFFFF is what pipe writers leave as the data size: decode what is there."""
    pcm = (jfk[:SR] * 32767).astype("<i2").tobytes()
    result = decode_audio(wav_header(SR, 1, 16, 0xFFFFFFFF) + pcm)
    assert result.duration == pytest.approx(1.0, abs=1e-3)


def test_decoding_stops_once_the_limit_is_passed(jfk: F32, monkeypatch: pytest.MonkeyPatch) -> None:
    """An MP3 declares no exact length up front: decoding must stop just past the limit."""
    long_mp3 = encode_av(np.tile(jfk, 6), SR, "mp3", "libmp3lame", 32000)  # 66 s
    decoded_seconds: list[float] = []
    original_add = audio._MonoAccumulator.add

    def counting_add(self: audio._MonoAccumulator, block: F32, rate: int) -> None:
        decoded_seconds.append(len(block) / rate)
        original_add(self, block, rate)

    monkeypatch.setattr(audio._MonoAccumulator, "add", counting_add)
    with pytest.raises(AudioTooLong):
        decode_audio(long_mp3, max_seconds=3)
    assert 3.0 < sum(decoded_seconds) < 3.5


def test_no_backend_exception_escapes_on_damaged_files(encoded: dict[str, bytes]) -> None:
    """Truncated and bit-flipped files either decode or raise one of our typed errors."""
    rng = np.random.default_rng(99)
    for name in ("wav_16k", "mp3_44k1_stereo", "flac_16k", "ogg_vorbis", "ogg_opus", "m4a_aac", "adts_aac"):
        original = encoded[name]
        for cut in (0.02, 0.3, 0.7):
            _decode_or_typed_error(original[: max(1, int(len(original) * cut))])
        damaged = bytearray(original)
        positions = rng.integers(64, len(damaged), 200)
        damaged[positions[0] : positions[0] + 64] = bytes(64)
        for pos in positions:
            damaged[pos] ^= 0xFF
        _decode_or_typed_error(bytes(damaged))


def _decode_or_typed_error(data: bytes) -> None:
    try:
        result = decode_audio(data)
    except (CorruptAudio, EmptyAudio, UnsupportedFormat, AudioTooLong) as exc:
        assert exc.message
    else:
        assert result.samples.dtype == np.float32
        assert np.all(np.abs(result.samples) <= 1.0)


def test_unexpected_backend_failure_becomes_corrupt_audio(
    encoded: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_decode(*_args: object) -> DecodedAudio:
        raise IndexError("backend bug")

    monkeypatch.setattr(audio, "_decode", broken_decode)
    with pytest.raises(CorruptAudio) as info:
        decode_audio(encoded["mp3_44k1_stereo"])
    assert isinstance(info.value, OyezError)
    assert isinstance(info.value.__cause__, IndexError)


# --- sniffing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav"),
        (b"RF64\xff\xff\xff\xffWAVEds64", "wav"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"OggS\x00\x02" + bytes(30), "ogg"),
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00", "m4a"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00", "m4a"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", "mp3"),
        (b"\xff\xfb\x90\x64" + bytes(20), "mp3"),  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz
        (b"\xff\xf3\x48\xc4" + bytes(20), "mp3"),  # MPEG-2 layer III
        (b"\xff\xe3\x18\xc4" + bytes(20), "mp3"),  # MPEG-2.5 layer III (8 kHz)
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", "aac"),  # ADTS, MPEG-4 AAC: not MP3
        (b"\xff\xf9\x50\x80\x02\x1f\xfc", "aac"),  # ADTS, MPEG-2 AAC
        (b"\xff\xff\xff\xff" + bytes(20), None),  # bad bitrate/rate bits
        (b"\xff\xf9\xfc\x80\x02\x1f\xfc", None),  # ADTS with a reserved sampling index
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", None),  # WebM/Matroska
        (b"RIFF\x00\x00\x00\x00AVI LIST", None),
        (b"\x00\x00\x00\x18ftypheic", None),
        (b"RI", None),
        (b"", None),
    ],
)
def test_sniff_format_magic(head: bytes, expected: str | None) -> None:
    assert sniff_format(head) == expected


def test_sniff_format_looks_behind_id3(encoded: dict[str, bytes]) -> None:
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10)
    assert sniff_format(tag + encoded["flac_16k"]) == "flac"
    assert sniff_format(tag + encoded["adts_aac"]) == "aac"
    assert sniff_format(tag + encoded["mp3_8k"]) == "mp3"


def test_sniff_mpeg_requires_consistent_next_frame() -> None:
    frame = b"\xff\xfb\x90\x64"  # 417-byte frame at 128 kbit/s, 44.1 kHz, no padding
    assert sniff_format(frame + bytes(413) + frame) == "mp3"
    assert sniff_format(frame + bytes(413) + b"junk") is None


def test_sniff_raw_mp3_frames_without_tag(encoded: dict[str, bytes]) -> None:
    data = encoded["mp3_44k1_stereo"]
    assert data[:3] == b"ID3"
    tag_end = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])
    raw = data[tag_end:]
    assert sniff_format(raw) == "mp3"
    assert decode_audio(raw).format == "mp3"


def test_ogg_codec(encoded: dict[str, bytes]) -> None:
    assert ogg_codec(encoded["ogg_vorbis"]) == "vorbis"
    assert ogg_codec(encoded["ogg_opus"]) == "opus"
    assert ogg_codec(b"OggS") is None
    assert ogg_codec(encoded["wav_16k"]) is None


def test_describe_unsupported() -> None:
    assert describe_unsupported(b"\x1a\x45\xdf\xa3") == "WebM/Matroska"
    assert describe_unsupported(b"hello world\n") == "text, not audio"
    assert describe_unsupported(bytes(range(256))) is None


def test_parse_wav_header() -> None:
    header = parse_wav_header(wav_header(44100, 2, 16, 44100 * 4 * 3))
    assert header is not None
    assert (header.sample_rate, header.channels, header.bits_per_sample) == (44100, 2, 16)
    assert header.declared_seconds == pytest.approx(3.0)
    placeholder = parse_wav_header(wav_header(SR, 1, 16, 0xFFFFFFFF))
    assert placeholder is not None
    assert placeholder.data_bytes is None
    assert placeholder.declared_seconds is None
    assert parse_wav_header(wav_header(SR, 1, 16, 100)[:30]) is None
    assert parse_wav_header(b"fLaC" + bytes(40)) is None


def test_parse_rf64_header_uses_ds64(encoded: dict[str, bytes]) -> None:
    header = parse_wav_header(encoded["rf64"])
    assert header is not None
    assert header.declared_seconds == pytest.approx(11.0)


# --- helpers for the streaming path -----------------------------------------------------------


def test_pcm16_to_float32() -> None:
    raw = np.array([0, 16384, -32768, 32767, -1], dtype="<i2").tobytes()
    out = pcm16_to_float32(raw)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.5, -1.0, 32767 / 32768, -1 / 32768])
    assert pcm16_to_float32(b"").size == 0
    with pytest.raises(InvalidParameter, match="even number of bytes"):
        pcm16_to_float32(b"\x00\x01\x02")


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resample_keeps_frequency_and_length(rate: int) -> None:
    seconds = 2
    t = np.arange(rate * seconds) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = resample(tone, rate)
    assert out.dtype == np.float32
    assert len(out) == pytest.approx(SR * seconds, abs=1)
    spectrum = np.abs(np.fft.rfft(out))
    peak_hz = np.argmax(spectrum) * SR / len(out)
    assert peak_hz == pytest.approx(1000, abs=1)
    assert rms(out[SR // 10 : -SR // 10]) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_resample_same_rate_is_a_copy() -> None:
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    out = resample(x, SR)
    np.testing.assert_array_equal(out, x)
    assert out is not x


def test_resample_rejects_bad_input() -> None:
    with pytest.raises(InvalidParameter):
        resample(np.zeros(10, np.float32), 0)
    with pytest.raises(InvalidParameter):
        resample(np.zeros((10, 2), np.float32), 8000)


def test_streamed_pcm_matches_file_decoding(jfk: F32) -> None:
    """pcm16_to_float32 + resample on raw 8 kHz linear16 agrees with decoding the same as a WAV."""
    pcm8k = np.round(to_rate(jfk, 8000) * 32767).astype("<i2")
    streamed = resample(pcm16_to_float32(pcm8k.tobytes()), 8000)
    from_file = decode_audio(wav_bytes(pcm8k, 8000)).samples
    assert len(streamed) == pytest.approx(len(from_file), abs=2)
    assert best_ncc(from_file, streamed, max_lag=16) > 0.999


# --- the committed speech clips ---------------------------------------------------------------


def _clips() -> Iterator[str]:
    return iter(clip.id for clip in load_speech_manifest())


def test_speech_manifest_is_complete() -> None:
    clips = load_speech_manifest()
    ids = [clip.id for clip in clips]
    assert len(ids) == len(set(ids)) == 14
    assert {"jfk", "goforward", "forever_2", "tidigits_2934z", "librivox_0920", "cards_005"} <= set(ids)
    assert speech_clip("librivox_0920").text.startswith("had he married a more a amiable woman")
    total = sum(p.stat().st_size for p in SPEECH_DIR.iterdir())
    assert total < 3 * 1024 * 1024
    with pytest.raises(KeyError, match="known"):
        speech_clip("nope")


@pytest.mark.parametrize("clip_id", list(_clips()))
def test_speech_clip_decodes(clip_id: str) -> None:
    clip = speech_clip(clip_id)
    info = sf.info(clip.path)
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    assert clip.text.strip()
    result = decode_audio_file(clip.path)
    assert result.duration == pytest.approx(clip.duration_s, abs=1e-3)
    assert rms(result.samples) > 0.005  # real speech, not silence
