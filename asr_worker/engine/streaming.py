"""Live recognition over incremental audio: interims while speaking, finals at end of utterance.

Audio since the last final is the *pending utterance*. Every ``interim_interval_ms`` of new audio
containing speech, the pending utterance is decoded and sent as an interim. When VAD hears silence
for ``eou_timeout_ms`` after speech, on ``finalize``, on ``close`` or when the pending audio nears
the 30 s window, it is decoded one last time and sent as a final; that text is committed and never
sent again. Decoding goes through the engine's batcher, so streams and files share batches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .segmenter import VadConfig
from .types import Samples, StreamOptions, StreamResult, TranscribeOptions
from .vad import CHUNK

if TYPE_CHECKING:
    from .transcriber import WhisperEngine

SAMPLE_RATE = 16000
MAX_PENDING_SAMPLES = 28 * SAMPLE_RATE
IDLE_KEEP_SAMPLES = SAMPLE_RATE // 2  # silence kept before speech starts, so onsets are not clipped
TAIL_PAD_SAMPLES = SAMPLE_RATE // 5


class WhisperStream:
    def __init__(self, engine: WhisperEngine, options: StreamOptions) -> None:
        self._engine = engine
        self._options = options
        self._language = engine.check_language(options.language)
        self._text_options = TranscribeOptions(
            language=self._language, punctuate=options.punctuate, timestamps=options.timestamps
        )
        self._vad = engine.vad.stream()
        self._vad_config: VadConfig = engine.vad_config
        self._eou_samples = options.eou_timeout_ms * SAMPLE_RATE // 1000
        self._interim_samples = options.interim_interval_ms * SAMPLE_RATE // 1000
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_start = 0  # samples since stream start
        self._speech_seen = False
        self._silence_run = 0
        self._since_interim = 0
        self._closed = False

    async def push(self, samples: Samples) -> list[StreamResult]:
        if self._closed:
            raise RuntimeError("stream is closed")
        samples = np.asarray(samples, dtype=np.float32)
        self._pending = np.concatenate([self._pending, samples])
        self._since_interim += samples.shape[0]
        for prob in self._vad.push(samples):
            if prob >= self._vad_config.threshold:
                self._speech_seen, self._silence_run = True, 0
            elif prob < self._vad_config.neg_threshold:
                self._silence_run += CHUNK
        if not self._speech_seen:
            self._drop_leading_silence()
            return []
        if self._silence_run >= self._eou_samples:
            speech_end = max(0, self._pending.shape[0] - self._silence_run + TAIL_PAD_SAMPLES)
            return [await self._commit(speech_end, from_finalize=False, is_last=False)]
        if self._pending.shape[0] >= MAX_PENDING_SAMPLES:
            return [await self._commit(self._pending.shape[0], from_finalize=False, is_last=False)]
        if self._since_interim >= self._interim_samples:
            self._since_interim = 0
            interim = await self._decode(self._pending, is_final=False)
            return [interim] if interim.text else []
        return []

    async def finalize(self) -> list[StreamResult]:
        return [await self._commit(self._pending.shape[0], from_finalize=True, is_last=False)]

    async def close(self) -> list[StreamResult]:
        if self._closed:
            return []
        result = await self._commit(self._pending.shape[0], from_finalize=False, is_last=True)
        self._closed = True
        return [result]

    def _drop_leading_silence(self) -> None:
        excess = self._pending.shape[0] - IDLE_KEEP_SAMPLES
        if excess > 0:
            self._pending = self._pending[excess:]
            self._pending_start += excess
            self._since_interim = 0

    async def _commit(self, cut: int, *, from_finalize: bool, is_last: bool) -> StreamResult:
        audio = self._pending[:cut]
        if self._speech_seen and audio.shape[0] > 0:
            result = await self._decode(audio, is_final=True, from_finalize=from_finalize, is_last=is_last)
        else:
            now = self._pending_start / SAMPLE_RATE
            result = StreamResult(
                text="",
                is_final=True,
                is_last=is_last,
                from_finalize=from_finalize,
                start=now,
                end=now + audio.shape[0] / SAMPLE_RATE,
                language=self._language,
            )
        self._pending = self._pending[cut:]
        self._pending_start += cut
        self._speech_seen = False
        self._silence_run = 0
        self._since_interim = 0
        return result

    async def _decode(
        self, audio: Samples, *, is_final: bool, from_finalize: bool = False, is_last: bool = False
    ) -> StreamResult:
        offset = self._pending_start / SAMPLE_RATE
        decoded = await self._engine.decode_window(audio, self._language)
        piece = self._engine.window_text(decoded, offset, audio.shape[0], self._text_options)
        confidence = piece.probability_sum / piece.token_count if piece.token_count else 0.0
        return StreamResult(
            text=piece.text,
            is_final=is_final,
            is_last=is_last,
            from_finalize=from_finalize,
            start=round(offset, 3),
            end=round(offset + audio.shape[0] / SAMPLE_RATE, 3),
            confidence=round(confidence, 4),
            words=piece.words,
            language=self._language,
        )
