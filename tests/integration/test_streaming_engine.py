"""Live recognition with the real engine: interims, end-of-utterance finals, finalize and close."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import numpy as np
import pytest

from asr_worker.engine.transcriber import WhisperEngine
from asr_worker.engine.types import StreamOptions, StreamResult, StreamSession
from oyez.errors import InvalidParameter
from tests.integration.conftest import read_clip
from tests.speech_data import SpeechClip, corpus_wer

SR = 16000
CHUNK = SR // 10  # 100 ms frames, as a live client sends them


def _clip(clips: list[SpeechClip], clip_id: str) -> tuple[np.ndarray, SpeechClip]:
    clip = next(c for c in clips if c.id == clip_id)
    return read_clip(clip), clip


async def _stream(engine: WhisperEngine, audio: np.ndarray, options: StreamOptions) -> list[StreamResult]:
    session = engine.open_stream(options)
    results: list[StreamResult] = []
    for offset in range(0, audio.size, CHUNK):
        results += await session.push(audio[offset : offset + CHUNK])
    results += await session.close()
    return results


def test_interims_then_finals_at_each_pause(
    tiny_engine: WhisperEngine, speech_clips: list[SpeechClip]
) -> None:
    jfk, jfk_clip = _clip(speech_clips, "jfk")
    austen, austen_clip = _clip(speech_clips, "librivox_0870")
    silence = np.zeros(2 * SR, dtype=np.float32)
    audio = np.concatenate([jfk, silence, austen, silence])
    results = asyncio.run(_stream(tiny_engine, audio, StreamOptions(eou_timeout_ms=800)))

    finals = [r for r in results if r.is_final]
    interims = [r for r in results if not r.is_final]
    assert len(interims) >= 5, "expected interim hypotheses roughly every 0.7 s of speech"
    assert results.index(interims[0]) < results.index(finals[0]), "an interim comes before the first final"
    assert len(finals) >= 3  # at least one end-of-utterance final per clip, plus the terminal one
    assert results[-1].is_final and results[-1].is_last
    assert sum(r.is_last for r in results) == 1
    # Committed text is never rewritten: finals cover disjoint, increasing stretches of audio.
    for earlier, later in itertools.pairwise(finals):
        assert earlier.end <= later.start + 1e-6
    spoken = " ".join(r.text for r in finals if r.text)
    assert corpus_wer([f"{jfk_clip.text} {austen_clip.text}"], [spoken]) <= 0.15, spoken
    # A final after a pause belongs to the audio it transcribes.
    austen_start = (jfk.size + silence.size) / SR
    austen_finals = [r for r in finals if r.text and r.start >= austen_start - 1.0]
    assert "dashwood" in " ".join(r.text for r in austen_finals).lower()


def test_finalize_commits_pending_audio_and_keeps_the_stream_open(
    tiny_engine: WhisperEngine, speech_clips: list[SpeechClip]
) -> None:
    austen, _ = _clip(speech_clips, "librivox_0870")
    cut = int(3.2 * SR)

    async def run() -> tuple[list[StreamResult], list[StreamResult], list[StreamResult]]:
        session = tiny_engine.open_stream(StreamOptions(eou_timeout_ms=2000))
        before: list[StreamResult] = []
        for offset in range(0, cut, CHUNK):
            before += await session.push(austen[offset : min(offset + CHUNK, cut)])
        finalized = await session.finalize()
        after: list[StreamResult] = []
        for offset in range(cut, austen.size, CHUNK):
            after += await session.push(austen[offset : offset + CHUNK])
        after += await session.close()
        return before, finalized, after

    before, finalized, after = asyncio.run(run())
    assert all(not r.is_final for r in before)
    assert len(finalized) == 1
    committed = finalized[0]
    assert committed.is_final and committed.from_finalize and not committed.is_last
    assert "dashwood" in committed.text.lower()
    assert committed.end == pytest.approx(cut / SR, abs=0.05)
    later_finals = [r for r in after if r.is_final]
    assert later_finals and later_finals[-1].is_last
    assert all(r.start >= committed.end - 1e-6 for r in after)
    assert "dashwood" not in " ".join(r.text for r in after).lower(), "finalized words were sent again"


def test_silence_only_stream_closes_with_an_empty_terminal_final(tiny_engine: WhisperEngine) -> None:
    results = asyncio.run(_stream(tiny_engine, np.zeros(3 * SR, dtype=np.float32), StreamOptions()))
    assert len(results) == 1
    assert results[0].is_final and results[0].is_last and results[0].text == ""


def test_stream_word_timestamps_are_on_the_stream_timeline(
    tiny_engine: WhisperEngine, speech_clips: list[SpeechClip]
) -> None:
    jfk, _ = _clip(speech_clips, "jfk")
    lead = np.zeros(3 * SR, dtype=np.float32)
    results = asyncio.run(_stream(tiny_engine, np.concatenate([lead, jfk]), StreamOptions(timestamps=True)))
    words = [w for r in results if r.is_final for w in r.words]
    assert len(words) >= 15
    assert words[0].start >= 2.5, "times count from the start of the stream, not of the utterance"
    assert [w.start for w in words] == sorted(w.start for w in words)


def test_vad_events_bracket_each_utterance(
    tiny_engine: WhisperEngine, speech_clips: list[SpeechClip]
) -> None:
    jfk, _ = _clip(speech_clips, "jfk")
    lead = np.zeros(SR, dtype=np.float32)
    audio = np.concatenate([lead, jfk, np.zeros(2 * SR, dtype=np.float32)])
    results = asyncio.run(_stream(tiny_engine, audio, StreamOptions(eou_timeout_ms=800, vad_events=True)))
    events = [(r.event, r.event_time) for r in results if r.event]
    names = [name for name, _ in events]
    assert names[0] == "speech_started" and names.count("speech_started") == names.count("speech_ended")
    assert all(a != b for a, b in itertools.pairwise(names)), names  # strictly alternating
    started = events[0][1]
    assert 0.8 <= started <= 1.6, started  # speech begins after the 1 s of leading silence
    last_end = events[-1][1]
    assert 10.0 <= last_end <= 12.5, last_end  # jfk is 11 s long, starting at 1 s
    first_final = next(i for i, r in enumerate(results) if r.is_final and r.text)
    first_start = next(i for i, r in enumerate(results) if r.event == "speech_started")
    assert first_start < first_final
    assert all(not r.text for r in results if r.event)
    without = asyncio.run(_stream(tiny_engine, audio, StreamOptions(eou_timeout_ms=800)))
    assert not any(r.event for r in without)


async def _finals(
    session: StreamSession, audio: np.ndarray, frame: int, *, close: bool = True
) -> list[StreamResult]:
    results: list[StreamResult] = []
    for offset in range(0, audio.size, frame):
        results += await session.push(audio[offset : offset + frame])
    results += await session.close()
    return [r for r in results if r.is_final]


def _long_audio(speech_clips: list[SpeechClip]) -> np.ndarray:
    gap = np.zeros(2 * SR, dtype=np.float32)
    pieces = [_clip(speech_clips, name)[0] for name in ("jfk", "librivox_0870", "librivox_0880")]
    return np.concatenate([part for piece in pieces for part in (piece, gap)])


def _shape(finals: list[StreamResult]) -> list[tuple[str, float, float]]:
    return [(r.text, r.start, r.end) for r in finals]


def test_finals_do_not_depend_on_how_the_audio_is_framed(
    tiny_engine: WhisperEngine, speech_clips: list[SpeechClip]
) -> None:
    audio = _long_audio(speech_clips)
    options = StreamOptions(eou_timeout_ms=800)
    tenths = asyncio.run(_finals(tiny_engine.open_stream(options), audio, SR // 10))
    odd = asyncio.run(_finals(tiny_engine.open_stream(options), audio, 2731))
    assert len(tenths) >= 3
    assert _shape(tenths) == _shape(odd)


def test_a_stream_resumed_from_a_checkpoint_gives_the_same_finals(
    tiny_engine: WhisperEngine, speech_clips: list[SpeechClip]
) -> None:
    audio = _long_audio(speech_clips)
    options = StreamOptions(eou_timeout_ms=800, timestamps=True)
    reference = asyncio.run(_finals(tiny_engine.open_stream(options), audio, SR // 10))

    async def interrupted() -> list[StreamResult]:
        first = tiny_engine.open_stream(options)
        before: list[StreamResult] = []
        sent = 0
        while not any(r.text for r in before):  # until the first spoken final
            before += [r for r in await first.push(audio[sent : sent + SR // 10]) if r.is_final]
            sent += SR // 10
        checkpoint = before[-1]
        assert checkpoint.resume_token and checkpoint.committed_samples <= sent
        # "the worker dies": a new stream continues from the checkpoint with the audio from the
        # committed end on, replayed in differently sized pieces
        second = tiny_engine.open_stream(replace(options, resume_token=checkpoint.resume_token))
        after = await _finals(second, audio[checkpoint.committed_samples :], 8000)
        return before + after

    resumed = asyncio.run(interrupted())
    assert _shape(resumed) == _shape(reference)
    assert [[(w.word, w.start, w.end) for w in r.words] for r in resumed] == [
        [(w.word, w.start, w.end) for w in r.words] for r in reference
    ]


def test_a_bad_resume_token_is_refused(tiny_engine: WhisperEngine) -> None:
    with pytest.raises(InvalidParameter, match="resume_token"):
        tiny_engine.open_stream(StreamOptions(resume_token=b"not a checkpoint"))
