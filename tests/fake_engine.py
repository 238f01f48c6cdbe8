"""FAKE ENGINE - a test double at the edge, for service-shell tests only. Never used in production.

``FakeEngine`` satisfies ``asr_worker.engine.types.Engine`` without any model: ``transcribe`` returns
``"fake transcript of N.N seconds"`` for N seconds of 16 kHz samples, and a stream session answers
one interim per ``push`` and one final on ``finalize``/``close``. Tests can ``hold()`` it so calls
block until ``release()``, await ``wait_in_flight(n)`` to observe blocked calls, and set ``fail_with``
to make the next calls raise. Everything is deterministic.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from asr_worker.engine.types import (
    Samples,
    StreamOptions,
    StreamResult,
    TranscribeOptions,
    Transcript,
    Word,
)
from oyez.constants import SAMPLE_RATE
from oyez.errors import UnsupportedLanguage

FAKE_MODEL_NAME = "fake-whisper-tiny"
FAKE_LANGUAGES = ("en", "de", "fr")


@dataclass
class FakeStreamSession:
    """Records what it was fed; interim text counts samples so tests can check conversions."""

    options: StreamOptions
    pushed: list[Samples] = field(default_factory=list)
    finalized: int = 0
    closed: bool = False

    @property
    def samples(self) -> Samples:
        return np.concatenate(self.pushed) if self.pushed else np.zeros(0, dtype=np.float32)

    def _text(self) -> str:
        return f"heard {self.samples.size} samples"

    async def push(self, samples: Samples) -> list[StreamResult]:
        assert samples.dtype == np.float32 and samples.ndim == 1
        self.pushed.append(samples.copy())
        return [StreamResult(text=self._text(), is_final=False, language=self.options.language)]

    async def finalize(self) -> list[StreamResult]:
        self.finalized += 1
        return [
            StreamResult(text=self._text(), is_final=True, from_finalize=True, language=self.options.language)
        ]

    async def close(self) -> list[StreamResult]:
        self.closed = True
        return [StreamResult(text=self._text(), is_final=True, is_last=True, language=self.options.language)]


class FakeEngine:
    """A deterministic stand-in for the ONNX engine (see the module docstring)."""

    def __init__(self) -> None:
        self.fail_with: BaseException | None = None
        self.calls: list[TranscribeOptions] = []
        self.sessions: list[FakeStreamSession] = []
        self._released = asyncio.Event()
        self._released.set()
        self._in_flight = 0
        self._changed = asyncio.Condition()

    @property
    def model_name(self) -> str:
        return FAKE_MODEL_NAME

    @property
    def languages(self) -> tuple[str, ...]:
        return FAKE_LANGUAGES

    def check_language(self, language: str) -> str:
        code = language.strip().lower()
        if code not in FAKE_LANGUAGES:
            raise UnsupportedLanguage(f"Language {language!r} is not supported by {FAKE_MODEL_NAME}")
        return code

    def hold(self) -> None:
        """Make ``transcribe`` calls block until :meth:`release`."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def wait_in_flight(self, count: int) -> None:
        """Wait until exactly ``count`` transcribe calls are inside the engine."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._in_flight == count)

    async def transcribe(self, samples: Samples, options: TranscribeOptions) -> Transcript:
        self.calls.append(options)
        await self._enter(+1)
        try:
            await self._released.wait()
            if self.fail_with is not None:
                raise self.fail_with
        finally:
            await self._enter(-1)
        duration = samples.size / SAMPLE_RATE
        text = f"fake transcript of {duration:.1f} seconds" + ("." if options.punctuate else "")
        words = [Word(word="fake", start=0.0, end=duration, confidence=0.9)] if options.timestamps else []
        return Transcript(
            text=text, words=words, confidence=0.9, duration=duration, language=options.language
        )

    def open_stream(self, options: StreamOptions) -> FakeStreamSession:
        session = FakeStreamSession(options)
        self.sessions.append(session)
        return session

    async def _enter(self, delta: int) -> None:
        async with self._changed:
            self._in_flight += delta
            self._changed.notify_all()
