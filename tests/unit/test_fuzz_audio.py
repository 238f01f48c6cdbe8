"""Hostile audio: the upload decoder, the format sniffers and the live-stream decoders fed random
bytes and mutated real files (hypothesis). Every input gives audio or a documented error, never
another exception, a crash or a hang; decoded audio is always finite 16 kHz mono float32 within the
length limit."""

from __future__ import annotations

import io
from functools import cache

import av
import numpy as np
import pytest
import soundfile as sf
from hypothesis import given
from hypothesis import strategies as st

from api_server.opus_stream import MAX_OPUS_PACKET_BYTES, OggOpusDecoder, OggPacketReader, OpusDecoder
from api_server.stream_params import ENCODINGS, FrameConverter, StreamParams
from asr_worker.engine.audio import DecodedAudio, decode_audio
from oyez.audio_format import describe_unsupported, ogg_codec, parse_wav_header, sniff_format
from oyez.errors import AudioTooLong, CorruptAudio, EmptyAudio, InvalidParameter, UnsupportedFormat
from tests.fuzzing import fuzz_settings
from tests.speech_data import speech_clip

MAGICS = [b"RIFF", b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"\x00\x00\x00\x20ftypM4A "]
DOCUMENTED = (UnsupportedFormat, CorruptAudio, EmptyAudio, AudioTooLong)
MAX_SECONDS = 5.0
SR = 16000


def _speech(seconds: float = 1.0) -> np.ndarray:
    audio, rate = sf.read(speech_clip("jfk").path, dtype="float32")
    assert rate == SR
    return audio[int(2 * SR) : int((2 + seconds) * SR)]


def _soundfile_bytes(fmt: str, subtype: str | None = None) -> bytes:
    out = io.BytesIO()
    sf.write(out, _speech(), SR, format=fmt, subtype=subtype)
    return out.getvalue()


def _av_bytes(container: str, codec: str, rate: int) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format=container) as sink:
        stream = sink.add_stream(codec, rate=rate)
        stream.layout = "mono"  # type: ignore[union-attr]
        samples = (_speech() * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SR
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)  # type: ignore[union-attr]
        for converted in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(converted):  # type: ignore[union-attr]
                sink.mux(packet)
        for packet in stream.encode(None):  # type: ignore[union-attr]
            sink.mux(packet)
    return out.getvalue()


@cache
def seeds() -> dict[str, bytes]:
    """One second of real speech in every container the upload path takes."""
    return {
        "wav": _soundfile_bytes("WAV", "PCM_16"),
        "wav-float": _soundfile_bytes("WAV", "FLOAT"),
        "flac": _soundfile_bytes("FLAC"),
        "ogg-vorbis": _soundfile_bytes("OGG", "VORBIS"),
        "mp3": _soundfile_bytes("MP3"),
        "m4a": _av_bytes("mp4", "aac", 16000),
        "ogg-opus": _av_bytes("ogg", "libopus", 48000),
    }


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real file with a few byte flips, overwritten runs, insertions and a possible truncation;
    the header region is hit most, where the parsers decide what to believe."""
    name = draw(st.sampled_from(sorted(seeds())))
    data = bytearray(seeds()[name])
    for _ in range(draw(st.integers(1, 6))):
        limit = len(data) - 1 if draw(st.booleans()) else min(len(data) - 1, 96)
        if limit < 1:
            break
        at = draw(st.integers(0, limit))
        action = draw(st.sampled_from(["flip", "overwrite", "insert", "delete"]))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            del data[at : at + draw(st.integers(1, 64))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def check_decode(data: bytes) -> None:
    try:
        decoded = decode_audio(data, max_seconds=MAX_SECONDS)
    except DOCUMENTED as exc:
        assert exc.code and exc.message, "an error names the problem"
        return
    assert isinstance(decoded, DecodedAudio)
    assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    assert np.isfinite(decoded.samples).all()
    assert decoded.samples.size <= MAX_SECONDS * SR + SR  # enforced while decoding (one block slack)


def test_every_seed_decodes() -> None:
    """The mutation seeds are real, decodable files (else the mutations would test nothing)."""
    for name, data in seeds().items():
        decoded = decode_audio(data, max_seconds=MAX_SECONDS)
        assert 0.8 <= decoded.samples.size / SR <= 1.2, name


@fuzz_settings(150)
@given(mutated())
def test_mutated_real_files_decode_or_fail_cleanly(data: bytes) -> None:
    check_decode(data)


@fuzz_settings(100)
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.tuples(st.sampled_from(MAGICS), st.binary(max_size=1024)).map(lambda parts: parts[0] + parts[1]),
    )
)
def test_random_bytes_decode_or_fail_cleanly(data: bytes) -> None:
    check_decode(data)


@fuzz_settings(200)
@given(st.binary(max_size=512))
def test_sniffers_never_raise(head: bytes) -> None:
    assert sniff_format(head) in {None, "wav", "mp3", "flac", "ogg", "m4a", "aac"}
    described = describe_unsupported(head)
    assert described is None or isinstance(described, str)
    assert ogg_codec(head) is None or isinstance(ogg_codec(head), str)
    header = parse_wav_header(head)
    if header is not None:
        seconds = header.declared_seconds
        assert seconds is None or seconds >= 0


# --- live-stream decoders -----------------------------------------------------------------------
@fuzz_settings(80)
@given(st.sampled_from(ENCODINGS), st.lists(st.binary(max_size=700), max_size=8))
def test_stream_frames_convert_or_fail_cleanly(encoding: str, frames: list[bytes]) -> None:
    rate = 8000 if encoding in ("mulaw", "alaw") else 16000
    params = StreamParams(encoding=encoding, sample_rate=rate)
    converter = FrameConverter(params)
    width = 4 if params.worker_float else 2
    try:
        out = b"".join(converter.convert(frame) for frame in frames)
    except InvalidParameter as exc:
        assert encoding in ("opus", "ogg_opus"), "only compressed streams can be undecodable"
        assert exc.message
        return
    assert len(out) % width == 0, "the worker always receives whole samples"


@fuzz_settings(80)
@given(st.data())
def test_a_real_ogg_opus_stream_split_and_damaged_anywhere(data: st.DataObject) -> None:
    stream = bytearray(seeds()["ogg-opus"])
    for _ in range(data.draw(st.integers(0, 3))):
        stream[data.draw(st.integers(0, len(stream) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = OggOpusDecoder()
    pcm = b""
    try:
        for lo, hi in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            pcm += decoder.decode(bytes(stream[lo:hi]))
    except InvalidParameter as exc:
        assert "ogg_opus" in exc.message or "Opus" in exc.message
        return
    assert len(pcm) % 2 == 0


@fuzz_settings(100)
@given(st.lists(st.binary(max_size=1500), max_size=6))
def test_raw_opus_packets_decode_or_fail_cleanly(packets: list[bytes]) -> None:
    decoder = OpusDecoder()
    for packet in packets:
        try:
            assert len(decoder.decode(packet)) % 2 == 0
        except InvalidParameter as exc:
            assert "Opus packet" in exc.message


def test_an_endless_ogg_packet_is_refused_not_buffered() -> None:
    """Pages whose every segment is 255 bytes continue one packet forever: past the largest packet
    Opus allows, the stream is refused instead of growing the buffer without bound."""
    header = b"OggS" + bytes([0, 0]) + bytes(8) + bytes(12) + bytes([255])
    page = header + bytes([255] * 255) + bytes(255 * 255)
    reader = OggPacketReader()
    with pytest.raises(InvalidParameter, match="larger than"):
        for _ in range(MAX_OPUS_PACKET_BYTES // (255 * 255) + 2):
            assert reader.feed(page) == []
