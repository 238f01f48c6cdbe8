"""Pure parts of streaming: query parameters, G.711 expansion, frame conversion, the in-memory
session store, and the stream client's formatting."""

from __future__ import annotations

import argparse
import asyncio
import warnings

import numpy as np
import pytest

from api_server.errors import FeatureNotAvailable
from api_server.stream_params import FrameConverter, StreamParams, parse_stream_params
from api_server.stream_state import MemorySessionStore
from oyez.errors import InvalidParameter
from oyez.stream_client import format_message, stream_url

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the reference G.711 codec of Python <= 3.12


def test_defaults_and_full_parse() -> None:
    assert parse_stream_params({}) == StreamParams()
    params = parse_stream_params(
        {"encoding": "LINEAR32", "sample_rate": "48000", "word_timestamps": "true", "eou_timeout_ms": "300",
         "vad_events": "1", "punctuate": "false"}
    )  # fmt: skip
    assert params.worker_float and params.bytes_per_second == 48000 * 4
    assert params.features() == ["streaming", "timestamps"]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"sample_rate": "11025"}, "sample_rate must be one of"),
        ({"sample_rate": "16k"}, "whole number"),
        ({"encoding": "flac"}, "encoding must be one of"),
        ({"eou_timeout_ms": "99"}, "100..10000"),
        ({"eou_timeout_ms": "10001"}, "100..10000"),
        ({"encoding": "alaw", "sample_rate": "16000"}, "sample_rate must be 8000"),
        ({"token": "abc"}, "unknown parameter(s) token"),
        ({"word_timestamps": "maybe"}, "word_timestamps must be true or false"),
    ],
)
def test_bad_parameters_name_the_problem(query: dict[str, str], fragment: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse_stream_params(query)
    assert fragment in caught.value.message


def test_language_detection_is_not_available_yet() -> None:
    with pytest.raises(FeatureNotAvailable):
        parse_stream_params({"language": "multi"})


def test_diarize_with_an_optional_speaker_cap() -> None:
    plain = parse_stream_params({})
    assert (plain.diarize, plain.num_speakers) == (False, None)
    assert "diarization" not in plain.features()
    diarized = parse_stream_params({"diarize": "true", "num_speakers": "3"})
    assert (diarized.diarize, diarized.num_speakers) == (True, 3)
    assert "diarization" in diarized.features()
    assert parse_stream_params({"diarize": "true"}).num_speakers is None


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"num_speakers": "2"}, "num_speakers needs diarize=true"),
        ({"diarize": "false", "num_speakers": "2"}, "num_speakers needs diarize=true"),
        ({"diarize": "true", "num_speakers": "0"}, "from 1 to 32"),
        ({"diarize": "true", "num_speakers": "33"}, "from 1 to 32"),
        ({"diarize": "true", "num_speakers": "two"}, "from 1 to 32"),
        ({"diarize": "maybe"}, "diarize must be true or false"),
    ],
)
def test_bad_diarization_parameters_name_the_problem(query: dict[str, str], fragment: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse_stream_params(query)
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    ("encoding", "encode", "decode"), [("mulaw", "lin2ulaw", "ulaw2lin"), ("alaw", "lin2alaw", "alaw2lin")]
)
def test_g711_expansion_matches_the_reference_codec(encoding: str, encode: str, decode: str) -> None:
    pcm = np.random.default_rng(7).normal(0, 6000, 8000).clip(-32768, 32767).astype("<i2").tobytes()
    coded = getattr(audioop, encode)(pcm, 2)
    converter = FrameConverter(parse_stream_params({"encoding": encoding, "sample_rate": "8000"}))
    assert converter.convert(coded) == getattr(audioop, decode)(coded, 2)


def test_frames_split_inside_a_sample_are_joined() -> None:
    converter = FrameConverter(StreamParams())
    data = np.arange(100, dtype="<i2").tobytes()
    pieces = [data[:3], data[3:50], data[50:51], data[51:]]
    assert b"".join(converter.convert(piece) for piece in pieces) == data


def test_memory_store_commits_and_replays() -> None:
    async def scenario() -> None:
        store = MemorySessionStore()
        await store.create("s", "lic", {})
        await store.append("s", b"0123456789")
        await store.commit("s", 4, b"token-at-4")
        await store.append("s", b"ab")
        pending = await store.uncommitted("s")
        assert (pending.base, pending.data, pending.resume_token) == (4, b"456789ab", b"token-at-4")
        await store.commit("s", 2, b"older")  # never moves backwards
        assert (await store.uncommitted("s")).base == 4
        await store.delete("s")

    asyncio.run(scenario())


def test_stream_client_formatting_and_url() -> None:
    args = argparse.Namespace(language="en", no_punctuate=False, timestamps=True)
    url = stream_url("https://api.example.com/", 8000, args)
    assert url.startswith("wss://api.example.com/v1/listen/stream?") and "sample_rate=8000" in url
    final = {"type": "transcription", "transcript": " Hello.", "is_final": True, "start": 0.5, "end": 1.25}
    assert format_message(final, tty=False) == "[   0.50-   1.25] Hello."
    assert format_message({**final, "is_final": False}, tty=False) == "~ Hello."
    assert format_message({"type": "speech_started"}, tty=False) is None
    assert format_message({"type": "error", "message": "idle"}, tty=False) == "error: idle"
    assert "diarize" not in url
    diarized = stream_url("http://h", 16000, argparse.Namespace(**vars(args), diarize=True, num_speakers=2))
    assert "diarize=true" in diarized and "num_speakers=2" in diarized
    assert format_message({**final, "speaker": 1}, tty=False) == "[   0.50-   1.25] SPEAKER_01: Hello."


def _ogg_opus_jfk() -> tuple[bytes, float]:
    import soundfile as sf

    from tests.speech_data import SPEECH_DIR
    from tests.unit.test_audio import encode_av

    samples, rate = sf.read(SPEECH_DIR / "jfk.wav", dtype="float32")
    import soxr

    return encode_av(soxr.resample(samples, rate, 48000), 48000, "ogg", "libopus", 32000), len(samples) / rate


def test_ogg_opus_stream_split_anywhere_decodes_to_the_whole_clip() -> None:
    ogg, seconds = _ogg_opus_jfk()
    converter = FrameConverter(parse_stream_params({"encoding": "ogg_opus", "sample_rate": "48000"}))
    rng = np.random.default_rng(3)
    cuts = sorted(rng.choice(np.arange(1, len(ogg)), size=40, replace=False))
    pieces = [ogg[a:b] for a, b in zip([0, *cuts], [*cuts, len(ogg)], strict=True)]
    pcm = b"".join(converter.convert(piece) for piece in pieces)
    assert abs(len(pcm) / 2 / 48000 - seconds) < 0.1
    assert np.abs(np.frombuffer(pcm, dtype="<i2")).max() > 3000  # speech, not silence


def test_raw_opus_packets_and_bad_input() -> None:
    converter = FrameConverter(parse_stream_params({"encoding": "ogg_opus"}))
    with pytest.raises(InvalidParameter, match="not Ogg"):
        converter.convert(b"RIFF" + bytes(100))
    from api_server.opus_stream import OggPacketReader

    ogg, _ = _ogg_opus_jfk()
    packets = OggPacketReader().feed(ogg)
    assert packets[0].startswith(b"OpusHead") and packets[1].startswith(b"OpusTags")
    raw = FrameConverter(parse_stream_params({"encoding": "opus"}))
    pcm = b"".join(raw.convert(packet) for packet in packets[2:])
    assert len(pcm) > 48000 * 2 * 10  # about 11 s of 48 kHz audio


def test_close_reasons_fit_a_close_frame_in_whole_characters() -> None:
    from api_server.routes_stream import close_reason

    assert close_reason("short") == "short"
    long_ascii = close_reason("x" * 500)
    assert long_ascii == "x" * 123
    wide = close_reason("unknown control message '" + "\U00014400" * 60 + "'")
    assert len(wide.encode("utf-8")) <= 123
    assert wide.startswith("unknown control message '") and "\ufffd" not in wide
