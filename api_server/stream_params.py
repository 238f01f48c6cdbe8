"""``/v1/listen/stream`` query parameters and audio encodings (pure; no I/O).

Everything is validated before the WebSocket upgrade, so a bad value is an HTTP 400 that names the
parameter. Audio arrives in the client's encoding and is turned into what the worker reads: 16-bit
PCM (``linear16``, and G.711 ``mulaw``/``alaw`` expanded here) or 32-bit float PCM (``linear32``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from api_server.listen_options import parse_bool, parse_language, parse_num_speakers
from api_server.opus_stream import OggOpusDecoder, OpusDecoder
from oyez.errors import InvalidParameter

SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
ENCODINGS = ("linear16", "linear32", "mulaw", "alaw", "opus", "ogg_opus")
# ``opus``: one raw Opus packet per binary message; ``ogg_opus``: an Ogg Opus stream, split anywhere.
EOU_RANGE_MS = (100, 10000)
KNOWN_PARAMS = (
    "language",
    "encoding",
    "sample_rate",
    "word_timestamps",
    "sentence_timestamps",
    "diarize",
    "num_speakers",
    "full_transcript",
    "punctuate",
    "eou_timeout_ms",
    "vad_events",
)


@dataclass(frozen=True)
class StreamParams:
    language: str = "en"
    encoding: str = "linear16"
    sample_rate: int = 16000
    word_timestamps: bool = False
    sentence_timestamps: bool = False
    full_transcript: bool = False
    punctuate: bool = True
    eou_timeout_ms: int = 800
    vad_events: bool = False
    diarize: bool = False
    num_speakers: int | None = None  # an Oyez extension: at most this many speakers in the session

    @property
    def worker_rate(self) -> int:
        """The rate the worker receives: Opus is decoded here at 48 kHz, whatever was declared."""
        return 48000 if self.encoding in ("opus", "ogg_opus") else self.sample_rate

    @property
    def worker_float(self) -> bool:
        """True when the worker receives 32-bit float PCM, else 16-bit PCM."""
        return self.encoding == "linear32"

    @property
    def bytes_per_second(self) -> int:
        """Bytes per second of the audio as the worker receives it (after expansion)."""
        return self.worker_rate * (4 if self.worker_float else 2)

    @property
    def needs_word_times(self) -> bool:
        return self.word_timestamps or self.sentence_timestamps

    def features(self) -> list[str]:
        used = ["streaming"]
        if self.needs_word_times:
            used.append("timestamps")
        if self.punctuate:
            used.append("punctuation")
        if self.diarize:
            used.append("diarization")
        return used


def _int(name: str, value: str) -> int:
    text = value.strip()
    if not text.isdigit():
        raise InvalidParameter(f"{name} must be a whole number, got {value!r}")
    return int(text)


def parse_stream_params(query: Mapping[str, str]) -> StreamParams:
    unknown = sorted(set(query) - set(KNOWN_PARAMS))
    if unknown:
        raise InvalidParameter(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(KNOWN_PARAMS)}")
    encoding = query.get("encoding", "linear16").strip().lower()
    if encoding not in ENCODINGS:
        raise InvalidParameter(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    rate = _int("sample_rate", query.get("sample_rate", "16000"))
    if rate not in SAMPLE_RATES:
        raise InvalidParameter(f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))}, got {rate}")
    if encoding in ("mulaw", "alaw") and rate != 8000:
        raise InvalidParameter(
            f"encoding={encoding} is telephony audio: sample_rate must be 8000, got {rate}"
        )
    eou = _int("eou_timeout_ms", query.get("eou_timeout_ms", "800"))
    if not EOU_RANGE_MS[0] <= eou <= EOU_RANGE_MS[1]:
        raise InvalidParameter(f"eou_timeout_ms must be {EOU_RANGE_MS[0]}..{EOU_RANGE_MS[1]}, got {eou}")

    def flag(name: str, default: str = "false") -> bool:
        return parse_bool(name, query.get(name, default))

    diarize = flag("diarize")
    num_speakers = parse_num_speakers(query["num_speakers"]) if "num_speakers" in query else None
    if num_speakers is not None and not diarize:
        raise InvalidParameter("num_speakers needs diarize=true (it caps the speakers of the session)")

    return StreamParams(
        language=parse_language(query.get("language", "en")),
        encoding=encoding,
        sample_rate=rate,
        word_timestamps=flag("word_timestamps"),
        sentence_timestamps=flag("sentence_timestamps"),
        full_transcript=flag("full_transcript"),
        punctuate=flag("punctuate", "true"),
        eou_timeout_ms=eou,
        vad_events=flag("vad_events"),
        diarize=diarize,
        num_speakers=num_speakers,
    )


# --- G.711 ----------------------------------------------------------------------------------------
def _mulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


_MULAW = _mulaw_table()
_ALAW = _alaw_table()


class FrameConverter:
    """Client frames -> worker bytes; keeps a trailing partial sample across frames."""

    def __init__(self, params: StreamParams) -> None:
        self._encoding = params.encoding
        self._width = {"linear16": 2, "linear32": 4}.get(params.encoding, 1)
        self._carry = b""
        self._opus: OpusDecoder | OggOpusDecoder | None = None
        if params.encoding == "opus":
            self._opus = OpusDecoder()
        elif params.encoding == "ogg_opus":
            self._opus = OggOpusDecoder()

    def convert(self, frame: bytes) -> bytes:
        if self._opus is not None:
            return self._opus.decode(frame)
        data = self._carry + frame
        usable = len(data) - len(data) % self._width
        self._carry = data[usable:]
        data = data[:usable]
        if self._encoding == "mulaw":
            return _MULAW[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()
        if self._encoding == "alaw":
            return _ALAW[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()
        return data
