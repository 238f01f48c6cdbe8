"""Diarization of live streams with the real models (Whisper tiny.en, Silero VAD, the speaker
encoder), on conversations built from real clips of different speakers (see tests/conversations.py),
streamed in 100 ms frames as a live client sends them.

Scoring: each final's words give the speakers (a change of speaker between two words is placed
halfway between them; the first and last speakers reach the final's edges); that is clipped to the
VAD's speech, which is also the reference speech, and scored by DER with a 0.25 s collar.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from dataclasses import replace

import numpy as np
import pytest

from asr_worker.engine.transcriber import WhisperEngine
from asr_worker.engine.types import StreamOptions, StreamResult, StreamSession
from tests.conversations import Conversation, speaker_attributed_wer
from tests.diarization_metrics import Segment, diarization_error_rate
from tests.speech_data import SpeechClip, load_speech_manifest

SR = 16000
FRAME = SR // 10
DER_LIMIT = 0.10


@pytest.fixture(scope="module")
def clips() -> dict[str, SpeechClip]:
    return {clip.id: clip for clip in load_speech_manifest()}


async def _feed(session: StreamSession, audio: np.ndarray, frame: int = FRAME) -> list[StreamResult]:
    results: list[StreamResult] = []
    for offset in range(0, audio.size, frame):
        results += await session.push(audio[offset : offset + frame])
    results += await session.close()
    return [r for r in results if r.is_final]


@functools.cache
def _options(num_speakers: int | None = None) -> StreamOptions:
    return StreamOptions(diarize=True, num_speakers=num_speakers, timestamps=True, eou_timeout_ms=800)


def stream(engine: WhisperEngine, talk: Conversation, num_speakers: int | None = None) -> list[StreamResult]:
    return asyncio.run(_feed(engine.open_stream(_options(num_speakers)), talk.audio))


def spoken(finals: list[StreamResult]) -> list[StreamResult]:
    return [r for r in finals if r.text]


def hypothesis(finals: list[StreamResult], speech: list[tuple[float, float]]) -> list[Segment]:
    pieces: list[Segment] = []
    for final in spoken(finals):
        words = final.words
        start = final.start
        for before, after in itertools.pairwise(words):
            if before.speaker != after.speaker:
                cut = (before.end + after.start) / 2
                pieces.append((int(before.speaker or 0), start, cut))
                start = cut
        pieces.append((int(words[-1].speaker or 0), start, final.end))
    return [
        (speaker, max(start, lo), min(end, hi))
        for speaker, start, end in pieces
        for lo, hi in speech
        if min(end, hi) > max(start, lo)
    ]


def score(engine: WhisperEngine, talk: Conversation, finals: list[StreamResult]) -> tuple[float, float]:
    speech = engine.plan(talk.audio).speech
    segments = hypothesis(finals, speech)
    der = diarization_error_rate(talk.reference(speech), segments)
    words = [(w.word, w.speaker) for r in finals for w in r.words]
    return der, speaker_attributed_wer(talk, segments, words)


def check_fields(finals: list[StreamResult]) -> None:
    for final in spoken(finals):
        assert final.speaker is not None and 0.0 <= final.speaker_confidence <= 1.0
        assert final.words and all(w.speaker is not None for w in final.words)
        assert all(0.0 <= w.speaker_confidence <= 1.0 for w in final.words)
        assert final.speaker in {w.speaker for w in final.words}
    assert all(r.speaker is None for r in finals if not r.text), "no speech, no speaker"


@pytest.mark.parametrize("gap_s", [0.7, 0.0], ids=["with-pauses", "back-to-back"])
def test_two_speakers_keep_stable_labels_with_low_der(
    tiny_engine: WhisperEngine, clips: dict[str, SpeechClip], gap_s: float
) -> None:
    talk = Conversation(clips, "ABABABABAB", gap_s)
    finals = stream(tiny_engine, talk)
    der, sa_wer = score(tiny_engine, talk, finals)
    print(f"stream, two speakers, gap {gap_s} s: DER {der:.1%}, speaker-attributed WER {sa_wer:.1%}")
    check_fields(finals)
    assert {w.speaker for r in finals for w in r.words} == {0, 1}
    assert spoken(finals)[0].speaker == 0, "labels follow first appearance"
    assert der <= DER_LIMIT
    assert sa_wer <= 0.15
    if gap_s:  # each turn ends in a pause: one final per turn, the labels alternating all session
        assert [r.speaker for r in spoken(finals)] == [0, 1] * 5


@pytest.mark.parametrize(("order", "gap_s"), [("ABCAB", 0.5), ("BCB", 0.0), ("BEB", 1.0)])
def test_other_pairings_three_speakers_and_short_turns(
    tiny_engine: WhisperEngine, clips: dict[str, SpeechClip], order: str, gap_s: float
) -> None:
    talk = Conversation(clips, order, gap_s)
    finals = stream(tiny_engine, talk)
    der, sa_wer = score(tiny_engine, talk, finals)
    print(f"stream, {order} gap {gap_s} s: DER {der:.1%}, speaker-attributed WER {sa_wer:.1%}")
    check_fields(finals)
    assert len({w.speaker for r in finals for w in r.words}) == talk.speakers
    assert der <= DER_LIMIT


def test_one_speaker_stays_one_speaker_even_when_more_are_allowed(
    tiny_engine: WhisperEngine, clips: dict[str, SpeechClip]
) -> None:
    talk = Conversation(clips, "AAAAA", 0.5)
    finals = stream(tiny_engine, talk, num_speakers=3)
    check_fields(finals)
    assert len(spoken(finals)) >= 3
    assert {w.speaker for r in finals for w in r.words} == {0}
    assert all(r.speaker_confidence >= 0.62 for r in spoken(finals)[1:]), "each later turn is sure"


def test_num_speakers_caps_the_session(tiny_engine: WhisperEngine, clips: dict[str, SpeechClip]) -> None:
    talk = Conversation(clips, "ACA", 0.5)
    finals = stream(tiny_engine, talk, num_speakers=1)
    check_fields(finals)
    assert {r.speaker for r in spoken(finals)} == {0}
    # JFK forced onto the only speaker: the label is given, with low confidence.
    assert min(r.speaker_confidence for r in spoken(finals)) < 0.62


def test_a_resumed_stream_keeps_its_speakers(
    tiny_engine: WhisperEngine, clips: dict[str, SpeechClip]
) -> None:
    talk = Conversation(clips, "ABABABABAB", 0.7)
    reference = stream(tiny_engine, talk)

    async def interrupted() -> list[StreamResult]:
        first = tiny_engine.open_stream(_options())
        before: list[StreamResult] = []
        sent = 0
        while len(spoken(before)) < 3:  # both speakers are known, and more is to come
            before += [r for r in await first.push(talk.audio[sent : sent + FRAME]) if r.is_final]
            sent += FRAME
        checkpoint = before[-1]
        second = tiny_engine.open_stream(replace(_options(), resume_token=checkpoint.resume_token))
        return before + await _feed(second, talk.audio[checkpoint.committed_samples :], 8000)

    resumed = asyncio.run(interrupted())

    def shape(finals: list[StreamResult]) -> list[tuple[str, int | None, float, list[int | None]]]:
        return [(r.text, r.speaker, r.speaker_confidence, [w.speaker for w in r.words]) for r in finals]

    assert shape(resumed) == shape(reference)
    assert [r.speaker for r in spoken(resumed)] == [0, 1] * 5


def test_silence_and_plain_streams_carry_no_speakers(
    tiny_engine: WhisperEngine, clips: dict[str, SpeechClip]
) -> None:
    silence = asyncio.run(_feed(tiny_engine.open_stream(_options(2)), np.zeros(3 * SR, dtype=np.float32)))
    assert silence and all(r.speaker is None and not r.text for r in silence)
    talk = Conversation(clips, "AC", 0.7)
    plain = asyncio.run(_feed(tiny_engine.open_stream(StreamOptions(timestamps=True)), talk.audio))
    assert spoken(plain)
    assert all(r.speaker is None and all(w.speaker is None for w in r.words) for r in plain)
