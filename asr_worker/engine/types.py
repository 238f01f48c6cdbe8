"""Value types and the engine interface the service shell talks to.

The gRPC service, the CLI and the benchmarks depend only on these, never on how the engine works.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float32]
"""Mono float32 audio in [-1, 1] at 16 kHz."""


@dataclass(frozen=True)
class TranscribeOptions:
    language: str = "en"
    punctuate: bool = True
    timestamps: bool = False
    diarize: bool = False
    num_speakers: int | None = None  # with diarize: the expected number of speakers


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float
    speaker: int | None = None  # with diarize: 0, 1, ... in order of first appearance
    speaker_confidence: float = 0.0  # streams only: see speaker_tracking


@dataclass(frozen=True)
class SpeakerSegment:
    """Consecutive words of one speaker (with diarize)."""

    speaker: int
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Transcript:
    text: str
    words: list[Word]
    confidence: float
    duration: float
    language: str
    speakers: list[SpeakerSegment] = field(default_factory=list)


@dataclass(frozen=True)
class StreamOptions:
    language: str = "en"
    punctuate: bool = True
    timestamps: bool = False
    sample_rate: int = 16000
    eou_timeout_ms: int = 800
    interim_interval_ms: int = 700
    vad_events: bool = False
    diarize: bool = False  # finals (and their words) carry session speakers
    num_speakers: int | None = None  # with diarize: at most this many speakers in the session
    resume_token: bytes = b""  # continue a stream another worker began (see stream_checkpoint)


@dataclass(frozen=True)
class StreamResult:
    """One interim or final hypothesis. ``start``/``end`` are seconds since the stream began."""

    text: str
    is_final: bool
    is_last: bool = False
    from_finalize: bool = False
    start: float = 0.0
    end: float = 0.0
    confidence: float = 0.0
    words: list[Word] = field(default_factory=list)
    language: str = "en"
    event: str = ""  # "speech_started" | "speech_ended" (with vad_events); no text then
    event_time: float = 0.0
    resume_token: bytes = b""  # on finals: where the stream stands (see stream_checkpoint)
    committed_samples: int = 0  # on finals: the committed end, in 16 kHz samples
    speaker: int | None = None  # with diarize, on finals with text: who spoke most of it
    speaker_confidence: float = 0.0


class StreamSession(Protocol):
    """One live recognition stream. Calls are made from one task at a time."""

    async def push(self, samples: Samples) -> list[StreamResult]:
        """Add 16 kHz mono samples; returns interim results and finals for ended utterances."""
        ...

    async def finalize(self) -> list[StreamResult]:
        """Commit whatever is pending as one final (``from_finalize=True``); the stream stays open."""
        ...

    async def close(self) -> list[StreamResult]:
        """Flush and end: the last result has ``is_final`` and ``is_last`` set."""
        ...


class Engine(Protocol):
    """What the service needs from a loaded, warmed model."""

    @property
    def model_name(self) -> str: ...

    @property
    def languages(self) -> tuple[str, ...]: ...

    async def transcribe(self, samples: Samples, options: TranscribeOptions) -> Transcript:
        """Transcribe a whole file (any length up to the limit); batched with concurrent calls."""
        ...

    def open_stream(self, options: StreamOptions) -> StreamSession: ...

    def check_language(self, language: str) -> str:
        """Normalise ``language`` or raise ``UnsupportedLanguage``."""
        ...
