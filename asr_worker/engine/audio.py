"""Decode uploaded audio to what the engine eats: 16 kHz mono float32 in [-1, 1].

Containers are recognised by content (``oyez.audio_format``). WAV, FLAC and Ogg Vorbis go through
libsndfile (``soundfile``); MP3, M4A/AAC, Ogg Opus, and anything libsndfile refuses go through
FFmpeg (PyAV). Channels are averaged to mono and the rate converted with soxr, block by block, so
memory stays proportional to the 16 kHz output and decoding stops as soon as the duration limit is
passed. Every failure is one of the typed errors in ``oyez.errors``, with a message that says what
to fix; no ``av`` or ``soundfile`` exception escapes.

The streaming path (raw ``linear16`` PCM at 8-48 kHz) uses ``pcm16_to_float32`` and ``resample``.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Final

import av
import av.error
import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from asr_worker.engine.types import Samples
from oyez import constants
from oyez.audio_format import describe_unsupported, ogg_codec, parse_wav_header, sniff_format
from oyez.errors import AudioTooLong, CorruptAudio, EmptyAudio, InvalidParameter, OyezError, UnsupportedFormat

__all__ = [
    "TARGET_SAMPLE_RATE",
    "DecodedAudio",
    "check_sample_rate",
    "decode_audio",
    "decode_audio_file",
    "pcm16_to_float32",
    "resample",
]

TARGET_SAMPLE_RATE: Final = constants.SAMPLE_RATE
RESAMPLE_QUALITY: Final = "HQ"
_BLOCK_SECONDS: Final = 10  # libsndfile read size; bounds the transient float32 buffer
_CONVERT_HINT: Final = "for example `ffmpeg -i INPUT -ar 16000 -ac 1 output.wav`"
_UNKNOWN_FRAMES: Final = 1 << 62  # libsndfile reports SF_COUNT_MAX when a header has no length


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded audio plus what the source declared."""

    samples: Samples
    """Mono float32 in [-1, 1] at 16 kHz."""
    duration: float
    """Seconds of audio decoded from the source."""
    source_sample_rate: int
    source_channels: int
    format: str
    """Container as sniffed: ``wav``, ``mp3``, ``flac``, ``ogg``, ``m4a`` or ``aac`` (raw ADTS)."""


def decode_audio(data: bytes, *, max_seconds: float = constants.MAX_AUDIO_SECONDS) -> DecodedAudio:
    """Decode a whole audio file held in memory to 16 kHz mono float32.

    Raises ``EmptyAudio`` (no bytes or no samples), ``UnsupportedFormat`` (unknown container, or a
    sample rate below ``constants.MIN_SAMPLE_RATE``), ``CorruptAudio`` (recognised container whose
    data cannot be decoded) or ``AudioTooLong`` (more than ``max_seconds``; checked from the header
    first where it declares a length, and enforced while decoding).
    """
    if not data:
        raise EmptyAudio("The audio is empty (0 bytes). Send a file that contains recorded audio.")
    fmt = sniff_format(data)
    if fmt is None:
        raise _unsupported_container(data)
    try:
        return _decode(bytes(data), fmt, max_seconds)
    except (OyezError, MemoryError):
        raise
    except Exception as exc:  # last line of defence: no backend exception may escape
        raise _corrupt(fmt, str(exc)) from exc


def decode_audio_file(
    path: str | os.PathLike[str], *, max_seconds: float = constants.MAX_AUDIO_SECONDS
) -> DecodedAudio:
    """``decode_audio`` on a file's bytes (``OSError`` if the file cannot be read)."""
    with open(path, "rb") as fh:
        data = fh.read()
    return decode_audio(data, max_seconds=max_seconds)


def pcm16_to_float32(raw: bytes) -> Samples:
    """Little-endian signed 16-bit PCM bytes -> float32 in [-1, 1) (``InvalidParameter`` if odd)."""
    if len(raw) % 2:
        raise InvalidParameter(
            f"linear16 audio must have an even number of bytes (2 per sample); got {len(raw)}. "
            "Send whole samples in each chunk."
        )
    pcm = np.frombuffer(raw, dtype="<i2")
    return (pcm.astype(np.float32) / np.float32(32768.0)).astype(np.float32, copy=False)


def resample(samples: npt.ArrayLike, from_rate: int, to_rate: int = TARGET_SAMPLE_RATE) -> Samples:
    """Resample mono audio with soxr (one shot, high quality); a no-op copy when the rates match."""
    if from_rate <= 0 or to_rate <= 0:
        raise InvalidParameter(f"Sample rates must be positive; got {from_rate} Hz -> {to_rate} Hz.")
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise InvalidParameter(f"resample expects mono (1-D) samples; got shape {x.shape}.")
    if from_rate == to_rate or x.size == 0:
        return x.copy()
    return np.asarray(soxr.resample(x, from_rate, to_rate, quality=RESAMPLE_QUALITY), dtype=np.float32)


def check_sample_rate(rate: int) -> None:
    """Raise ``UnsupportedFormat`` unless ``rate`` is at least ``constants.MIN_SAMPLE_RATE``."""
    if rate < constants.MIN_SAMPLE_RATE:
        raise UnsupportedFormat(
            f"The audio's sample rate is {rate} Hz; the minimum is {constants.MIN_SAMPLE_RATE} Hz. "
            f"Record or export at {constants.MIN_SAMPLE_RATE} Hz or more (16000 Hz recommended).",
            supported_formats=list(constants.SUPPORTED_FORMATS),
        )


# --- errors -----------------------------------------------------------------------------------


def _supported_list() -> str:
    return ", ".join(constants.SUPPORTED_FORMATS)


def _unsupported_container(data: bytes) -> UnsupportedFormat:
    what = describe_unsupported(data)
    found = f"This looks like {what}" if what else "The data is not a recognised audio container"
    return UnsupportedFormat(
        f"Unsupported audio format. {found}; supported formats are {_supported_list()}. "
        f"Convert the file to one of them, {_CONVERT_HINT}.",
        supported_formats=list(constants.SUPPORTED_FORMATS),
    )


def _corrupt(fmt: str, reason: str) -> CorruptAudio:
    detail = f" ({reason.strip()})" if reason.strip() else ""
    return CorruptAudio(
        f"The file looks like {fmt.upper()} but its audio data cannot be decoded{detail}; it may be "
        f"truncated or damaged. Check that the upload completed, or re-export it, {_CONVERT_HINT}."
    )


def _too_long(max_seconds: float, what: str) -> AudioTooLong:
    limit = _format_seconds(max_seconds)
    return AudioTooLong(
        f"Audio too long: {what}; the limit is {limit}. Split it into parts of at most {limit} "
        "(for example `ffmpeg -i INPUT -f segment -segment_time 3600 -c copy part%03d.EXT`) "
        "and send each part.",
        max_duration_s=int(max_seconds) if float(max_seconds).is_integer() else max_seconds,
    )


def _format_seconds(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return f"{hours} hour{'s' if hours != 1 else ''} ({seconds:g} s)"
    if seconds >= 60:
        minutes, secs = divmod(seconds, 60)
        hours, minutes = divmod(int(minutes), 60)
        clock = f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"
        return f"{clock} ({seconds:.1f} s)"
    return f"{seconds:g} s"


# --- accumulation: mono mix, streaming resample, duration limit ------------------------------


class _MonoAccumulator:
    """Collects decoded blocks as 16 kHz mono, enforcing the duration limit as it goes."""

    def __init__(self, max_seconds: float) -> None:
        self._max_seconds = max_seconds
        self._chunks: list[Samples] = []
        self._rate = 0
        self._resampler: soxr.ResampleStream | None = None
        self._seconds_before_rate = 0.0
        self._frames_at_rate = 0

    @property
    def seconds(self) -> float:
        return self._seconds_before_rate + (self._frames_at_rate / self._rate if self._rate else 0.0)

    def add(self, block: npt.NDArray[np.float32], rate: int) -> None:
        """Add ``(frames,)`` mono or ``(frames, channels)`` float32 audio at ``rate`` Hz."""
        mono = block if block.ndim == 1 else block.mean(axis=1, dtype=np.float32)
        if mono.size == 0:
            return
        if rate != self._rate:
            check_sample_rate(rate)
            self._flush()
            self._seconds_before_rate = self.seconds
            self._frames_at_rate = 0
            self._rate = rate
            if rate != TARGET_SAMPLE_RATE:
                self._resampler = soxr.ResampleStream(
                    rate, TARGET_SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY
                )
        self._frames_at_rate += mono.size
        if self.seconds > self._max_seconds:
            raise _too_long(self._max_seconds, "the audio continues past the limit")
        if self._resampler is None:
            self._chunks.append(np.ascontiguousarray(mono, dtype=np.float32))
        else:
            self._chunks.append(self._resampler.resample_chunk(np.ascontiguousarray(mono, np.float32)))

    def _flush(self) -> None:
        if self._resampler is not None:
            self._chunks.append(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            self._resampler = None

    def finish(self, fmt: str) -> Samples:
        """Return all samples, clipped to [-1, 1]; ``EmptyAudio`` if there are none."""
        self._flush()
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        if samples.size == 0:
            raise EmptyAudio(
                f"The {fmt.upper()} file contains no audio samples. Send a recording that is not empty."
            )
        samples = np.nan_to_num(
            samples.astype(np.float32, copy=False), copy=False, nan=0.0, posinf=1.0, neginf=-1.0
        )
        np.clip(samples, -1.0, 1.0, out=samples)
        return samples


# --- backends ---------------------------------------------------------------------------------


class _SoundfileRefusedError(Exception):
    """libsndfile cannot read this file; PyAV gets a try."""


def _decode(data: bytes, fmt: str, max_seconds: float) -> DecodedAudio:
    if fmt == "wav":
        _precheck_wav(data, max_seconds)
    if fmt in ("wav", "flac") or (fmt == "ogg" and ogg_codec(data) in ("vorbis", "flac")):
        try:
            return _decode_soundfile(data, fmt, max_seconds)
        except _SoundfileRefusedError:
            pass  # e.g. WAV holding MP3/GSM data, 32-bit FLAC: FFmpeg reads more codecs
    return _decode_av(data, fmt, max_seconds)


def _precheck_wav(data: bytes, max_seconds: float) -> None:
    """Reject from the WAV header alone: rate too low, or a declared length over the limit."""
    header = parse_wav_header(data[:65536])
    if header is None:
        return
    if header.sample_rate > 0:
        check_sample_rate(header.sample_rate)
    declared = header.declared_seconds
    if declared is not None and declared > max_seconds:
        raise _too_long(max_seconds, f"the WAV header declares {_format_seconds(declared)}")


def _decode_soundfile(data: bytes, fmt: str, max_seconds: float) -> DecodedAudio:
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise _SoundfileRefusedError(str(exc)) from exc
    with f:
        rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
        if frames <= 0:
            raise _SoundfileRefusedError("no frame count")  # let FFmpeg decide between empty and corrupt
        check_sample_rate(rate)
        if frames < _UNKNOWN_FRAMES and frames / rate > max_seconds:
            raise _too_long(
                max_seconds, f"the {fmt.upper()} header declares {_format_seconds(frames / rate)}"
            )
        acc = _MonoAccumulator(max_seconds)
        block_frames = rate * _BLOCK_SECONDS
        while True:
            try:
                block = f.read(block_frames, dtype="float32", always_2d=True)
            except (RuntimeError, ValueError) as exc:
                raise _SoundfileRefusedError(str(exc)) from exc
            if len(block) == 0:
                break
            acc.add(block, rate)
    samples = acc.finish(fmt)
    return DecodedAudio(samples, acc.seconds, rate, channels, fmt)


def _decode_av(data: bytes, fmt: str, max_seconds: float) -> DecodedAudio:
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise _corrupt(fmt, _av_reason(exc)) from exc
    with container:
        if not container.streams.audio:
            raise EmptyAudio(
                f"The {fmt.upper()} file has no audio track. Send a file that contains recorded audio."
            )
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or 0)
        channels = int(stream.codec_context.channels or 0)
        if rate <= 0:
            raise _corrupt(fmt, "no sample rate in the stream header")
        check_sample_rate(rate)
        if fmt == "m4a" and stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
            if declared > max_seconds:
                raise _too_long(max_seconds, f"the M4A header declares {_format_seconds(declared)}")
        acc = _MonoAccumulator(max_seconds)
        try:
            for frame in container.decode(stream):
                acc.add(_frame_to_float32(frame), int(frame.sample_rate))
        except av.error.FFmpegError as exc:
            raise _corrupt(fmt, _av_reason(exc)) from exc
    samples = acc.finish(fmt)
    return DecodedAudio(samples, acc.seconds, rate, channels, fmt)


def _frame_to_float32(frame: av.AudioFrame) -> npt.NDArray[np.float32]:
    """A decoded frame as ``(samples, channels)`` float32 in [-1, 1]."""
    array = frame.to_ndarray()
    channels = len(frame.layout.channels)
    interleaved = array.reshape(-1, channels) if not frame.format.is_planar else array.T
    kind, size = interleaved.dtype.kind, interleaved.dtype.itemsize
    if kind == "f":
        return interleaved.astype(np.float32, copy=False)
    if kind == "u":  # 8-bit unsigned PCM
        return ((interleaved.astype(np.float32) - 128.0) / 128.0).astype(np.float32, copy=False)
    scale = np.float32(2.0 ** (8 * size - 1))
    return (interleaved.astype(np.float32) / scale).astype(np.float32, copy=False)


def _av_reason(exc: BaseException) -> str:
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return str(exc)
