"""Live recognition over incremental audio: interims while speaking, finals at end of utterance.

Audio since the last final is the *pending utterance*. Every ``interim_interval_ms`` of new audio
containing speech (longer when interims get expensive: at least twice the last interim's decode
time), the pending utterance is decoded and sent as an interim. When VAD hears silence
for ``eou_timeout_ms`` after speech, on ``finalize``, on ``close`` or when the pending audio nears
the 30 s window, it is decoded one last time and sent as a final; that text is committed and never
sent again. Decoding goes through the engine's batcher, so streams and files share batches.

With ``diarize``, each final's speech (the VAD's regions within it) is also cut into speaker windows,
embedded while the text decodes, and labelled with the session's speakers (see
:mod:`.speaker_tracking`): the final carries the speaker of most of its speech, and its words their
own speaker (so a quick exchange without a pause is still split).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from .diarization import MIN_WINDOW_FRAMES, SpeakerWindow, Turn, plan_speaker_windows, speaker_turns
from .segmenter import VadConfig, speech_regions
from .speaker_tracking import SessionSpeakers, main_speaker
from .speaker_words import attribute_speakers
from .stream_checkpoint import StreamCheckpoint, unpack_checkpoint
from .types import Samples, StreamOptions, StreamResult, TranscribeOptions, Word
from .vad import CHUNK

if TYPE_CHECKING:
    from .transcriber import WhisperEngine

SAMPLE_RATE = 16000
MAX_PENDING_SAMPLES = 28 * SAMPLE_RATE
IDLE_KEEP_SAMPLES = SAMPLE_RATE // 2  # silence kept before speech starts, so onsets are not clipped
TAIL_PAD_SAMPLES = SAMPLE_RATE // 5
INTERIM_BUDGET_FACTOR = 2  # audio seconds between interims >= this x the last interim's decode time


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
        self._interim_gap = self._interim_samples  # grows when interims get expensive (see push)
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_start = 0  # samples since stream start
        self._speech_seen = False
        self._silence_run = 0
        self._since_interim = 0
        self._closed = False
        self._vad_position = 0  # samples the VAD has judged since the stream began
        self._in_speech = False  # for vad_events: inside a speech segment
        self._unjudged_skip = 0  # after a resume: replayed samples the VAD already judged
        # Speech probability of each VAD chunk from the one holding the pending start on: where the
        # speech lies in a final, for its speaker windows.
        self._probabilities: list[float] = []
        self._probabilities_start = 0  # stream position of the first; a multiple of CHUNK
        self._speakers = SessionSpeakers(options.num_speakers)
        if options.diarize:
            engine.require_diarizer()
        if options.resume_token:
            self._resume(unpack_checkpoint(options.resume_token))

    def _resume(self, checkpoint: StreamCheckpoint) -> None:
        self._vad.restore(checkpoint.vad_state, checkpoint.vad_context)
        self._vad_position = checkpoint.vad_samples
        self._pending_start = checkpoint.committed_samples
        self._unjudged_skip = checkpoint.vad_samples - checkpoint.committed_samples
        self._in_speech = checkpoint.in_speech
        self._probabilities = checkpoint.speech_probabilities.tolist()
        self._probabilities_start = checkpoint.probabilities_start
        self._speakers = SessionSpeakers(self._options.num_speakers, checkpoint.speakers)

    def _checkpoint(self) -> StreamCheckpoint:
        state, context = self._vad.snapshot()
        return StreamCheckpoint(
            self._pending_start,
            self._vad_position,
            self._in_speech,
            state,
            context,
            np.array(self._probabilities, dtype=np.float32),
            tuple(self._speakers.profiles),
        )

    async def push(self, samples: Samples) -> list[StreamResult]:
        if self._closed:
            raise RuntimeError("stream is closed")
        samples = np.asarray(samples, dtype=np.float32)
        self._pending = np.concatenate([self._pending, samples])
        self._since_interim += samples.shape[0]
        if self._unjudged_skip:  # replayed audio the previous worker's VAD had already judged
            skipped = min(self._unjudged_skip, samples.shape[0])
            self._unjudged_skip -= skipped
            samples = samples[skipped:]
        out: list[StreamResult] = []
        # Decisions are taken per VAD chunk, at the chunk's position, never at the end of a push:
        # the same audio gives the same finals however the client frames it (and a replay on
        # another worker, framed differently, gives the same finals too).
        for prob in self._vad.push(samples):
            self._probabilities.append(float(prob))
            if prob >= self._vad_config.threshold:
                self._speech_seen, self._silence_run = True, 0
                if not self._in_speech:
                    self._in_speech = True
                    out += self._event("speech_started", self._vad_position)
            elif prob < self._vad_config.neg_threshold:
                self._silence_run += CHUNK
            self._vad_position += CHUNK
            judged = self._vad_position - self._pending_start  # judged samples in the pending buffer
            if not self._speech_seen:
                self._drop_leading_silence(judged)
            elif self._silence_run >= self._eou_samples:
                out += self._speech_ended(self._vad_position - self._silence_run)
                speech_end = max(0, judged - self._silence_run + TAIL_PAD_SAMPLES)
                out.append(await self._commit(speech_end, from_finalize=False, is_last=False))
            elif judged >= MAX_PENDING_SAMPLES:
                out.append(await self._commit(judged, from_finalize=False, is_last=False))
        if self._speech_seen and self._since_interim >= self._interim_gap:
            self._since_interim = 0
            started = time.perf_counter()
            interim = await self._decode(self._pending, is_final=False)
            # Interims re-decode the whole pending utterance. When one takes long (a long utterance,
            # a busy worker), wait for more audio before the next: interims may use at most about
            # half of real time, so finals (which change no state here) are not queued behind them.
            spent = int((time.perf_counter() - started) * INTERIM_BUDGET_FACTOR * SAMPLE_RATE)
            self._interim_gap = max(self._interim_samples, spent)
            if interim.text:
                out.append(interim)
        return out

    async def finalize(self) -> list[StreamResult]:
        ended = self._speech_ended(self._pending_start + self._pending.shape[0])
        return [*ended, await self._commit(self._pending.shape[0], from_finalize=True, is_last=False)]

    async def close(self) -> list[StreamResult]:
        if self._closed:
            return []
        ended = self._speech_ended(self._pending_start + self._pending.shape[0])
        result = await self._commit(self._pending.shape[0], from_finalize=False, is_last=True)
        self._closed = True
        return [*ended, result]

    def _event(self, name: str, position: int) -> list[StreamResult]:
        if not self._options.vad_events:
            return []
        return [
            StreamResult(
                text="", is_final=False, event=name, event_time=round(position / SAMPLE_RATE, 3),
                language=self._language,
            )
        ]  # fmt: skip

    def _speech_ended(self, position: int) -> list[StreamResult]:
        """``speech_ended`` at ``position`` (samples since the stream began), once per segment."""
        if not self._in_speech:
            return []
        self._in_speech = False
        return self._event("speech_ended", position)

    def _drop_leading_silence(self, judged: int) -> None:
        """Keep only ``IDLE_KEEP_SAMPLES`` of silence before the VAD's position."""
        excess = judged - IDLE_KEEP_SAMPLES
        if excess > 0:
            self._pending = self._pending[excess:]
            self._pending_start += excess
            self._since_interim = 0
            self._forget_probabilities()

    def _forget_probabilities(self) -> None:
        """Drop the probabilities of chunks that end before the pending start."""
        done = (self._pending_start - self._probabilities_start) // CHUNK
        if done > 0:
            del self._probabilities[:done]
            self._probabilities_start += done * CHUNK

    async def _commit(self, cut: int, *, from_finalize: bool, is_last: bool) -> StreamResult:
        audio = self._pending[:cut]
        result: StreamResult
        if self._speech_seen and audio.shape[0] > 0:
            decoding = self._decode(audio, is_final=True, from_finalize=from_finalize, is_last=is_last)
            if self._options.diarize:
                regions = self._speech_in(cut)
                embedding = asyncio.to_thread(self._embed, audio, regions)
                decoded, (windows, embeddings) = await asyncio.gather(decoding, embedding)
                result = decoded
                if result.text:  # a cough or a click is not a voice to learn
                    result = self._label_speakers(result, regions, windows, embeddings)
            else:
                result = await decoding
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
        self._forget_probabilities()
        self._speech_seen = False
        self._silence_run = 0
        self._since_interim = 0
        if is_last:
            return result
        return replace(result, resume_token=self._checkpoint().pack(), committed_samples=self._pending_start)

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

    # --- diarization ------------------------------------------------------------------------
    def _speech_in(self, cut: int) -> list[tuple[float, float]]:
        """The VAD's speech regions in the first ``cut`` pending samples (seconds from the pending
        start), by the same hysteresis and padding as files."""
        base_offset = self._pending_start - self._probabilities_start
        span = base_offset + cut
        probabilities = np.array(self._probabilities[: -(-span // CHUNK)], dtype=np.float32)
        regions = []
        for region in speech_regions(probabilities, span, self._vad_config):
            start, end = max(region.start - base_offset, 0), min(region.end - base_offset, cut)
            if end > start:
                regions.append((start / SAMPLE_RATE, end / SAMPLE_RATE))
        return regions

    def _embed(
        self, audio: Samples, regions: list[tuple[float, float]]
    ) -> tuple[list[SpeakerWindow], np.ndarray | None]:
        """Speaker windows over the regions and their embeddings (runs in a thread). Speech too short
        for a window gets one window over the whole final, if that is long enough (else None)."""
        diarizer = self._engine.require_diarizer()
        windows = plan_speaker_windows(regions)
        if windows:
            return windows, diarizer.embed_windows(audio, windows)
        frames = audio.shape[0] * 100 // SAMPLE_RATE
        if frames < MIN_WINDOW_FRAMES:
            return [], None
        return [], diarizer.embed_windows(audio, [SpeakerWindow(0, 0, frames)])

    def _label_speakers(
        self,
        result: StreamResult,
        regions: list[tuple[float, float]],
        windows: list[SpeakerWindow],
        embeddings: np.ndarray | None,
    ) -> StreamResult:
        offset = result.start
        if windows and embeddings is not None:
            assigned = self._speakers.assign(windows, embeddings)
            turns = speaker_turns(regions, windows, assigned.window_speakers, renumber=False)
            confidence = assigned.confidence
        else:
            speaker, sure = self._speakers.closest(None if embeddings is None else embeddings[0])
            turns, confidence = [Turn(speaker, 0.0, result.end - result.start)], {speaker: sure}
        on_timeline = [Turn(t.speaker, t.start + offset, t.end + offset) for t in turns]
        # Windows come from the regions, so every region with a window has a turn: never None.
        main = main_speaker(on_timeline) or 0
        words = _words_with_speakers(result.words, on_timeline, confidence)
        return replace(result, speaker=main, speaker_confidence=confidence.get(main, 0.0), words=words)


def _words_with_speakers(words: list[Word], turns: list[Turn], confidence: dict[int, float]) -> list[Word]:
    labelled, _ = attribute_speakers(words, turns)
    return [replace(w, speaker_confidence=confidence.get(w.speaker or 0, 0.0)) for w in labelled]
