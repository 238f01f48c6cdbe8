"""Diarization with the real models (Whisper tiny.en, Silero VAD, Resemblyzer's speaker encoder as
ONNX), on conversations built from the real clips of different speakers in tests/data/speech.

Speakers in the data: the LibriVox reader (5 clips), the CMU "cards" speaker (5 clips), J. F.
Kennedy, the "forever" speaker, and the pocketsphinx maintainer's clips (goforward, tidigits).
The reference speech activity is the VAD's (the same for reference and hypothesis); the reference
speaker of each stretch is the clip it came from. DER is scored with a 0.25 s collar.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from asr_worker.engine.transcriber import EngineConfig, WhisperEngine
from asr_worker.engine.types import StreamOptions, TranscribeOptions, Transcript
from oyez.errors import FeatureNotAvailable
from tests.conversations import Conversation, speaker_attributed_wer
from tests.diarization_metrics import diarization_error_rate
from tests.speech_data import SpeechClip, load_speech_manifest

SAMPLE_RATE = 16000
DER_LIMIT = 0.10


@pytest.fixture(scope="module")
def clips() -> dict[str, SpeechClip]:
    return {clip.id: clip for clip in load_speech_manifest()}


def diarize(engine: WhisperEngine, audio: np.ndarray, num_speakers: int | None = None) -> Transcript:
    options = TranscribeOptions(diarize=True, num_speakers=num_speakers, timestamps=True)
    return engine.transcribe_sync(audio, options)


def der_of(engine: WhisperEngine, talk: Conversation, result: Transcript) -> float:
    speech = engine.plan(talk.audio).speech
    hypothesis = [(s.speaker, s.start, s.end) for s in result.speakers]
    return diarization_error_rate(talk.reference(speech), hypothesis)


@pytest.mark.parametrize("gap_s", [0.7, 0.0], ids=["with-pauses", "back-to-back"])
@pytest.mark.parametrize("told", [False, True], ids=["auto", "num_speakers"])
def test_two_speakers_are_found_with_low_der(
    tiny_engine: WhisperEngine, clips: dict[str, SpeechClip], gap_s: float, told: bool
) -> None:
    talk = Conversation(clips, "ABABABABAB", gap_s)
    result = diarize(tiny_engine, talk.audio, 2 if told else None)
    der = der_of(tiny_engine, talk, result)
    sa_wer = speaker_attributed_wer(
        talk,
        [(s.speaker, s.start, s.end) for s in result.speakers],
        [(w.word, w.speaker) for w in result.words],
    )
    print(f"two speakers, gap {gap_s} s, told={told}: DER {der:.1%}, speaker-attributed WER {sa_wer:.1%}")
    assert {s.speaker for s in result.speakers} == {0, 1}
    assert der <= DER_LIMIT
    assert sa_wer <= 0.15
    assert result.speakers[0].speaker == 0, "labels follow first appearance"
    assert all(w.speaker in (0, 1) for w in result.words)


@pytest.mark.parametrize(("order", "gap_s"), [("ACA", 0.5), ("BCB", 0.0), ("ADADA", 0.3), ("ABCAB", 0.5)])
def test_other_pairings_and_three_speakers(
    tiny_engine: WhisperEngine, clips: dict[str, SpeechClip], order: str, gap_s: float
) -> None:
    talk = Conversation(clips, order, gap_s)
    for told in (None, talk.speakers):
        result = diarize(tiny_engine, talk.audio, told)
        der = der_of(tiny_engine, talk, result)
        print(f"{order} gap {gap_s} s num_speakers={told}: DER {der:.1%}")
        assert len({s.speaker for s in result.speakers}) == talk.speakers
        assert der <= DER_LIMIT


@pytest.mark.parametrize("told", [None, 1, 3, 5])
def test_one_speaker_stays_one_speaker_even_when_told_more(
    tiny_engine: WhisperEngine, clips: dict[str, SpeechClip], told: int | None
) -> None:
    talk = Conversation(clips, "AAAAA", 0.5)
    result = diarize(tiny_engine, talk.audio, told)
    assert {s.speaker for s in result.speakers} == {0}
    assert len(result.speakers) == 1 and result.speakers[0].start < 0.5


def test_very_short_turns_keep_their_speaker(
    tiny_engine: WhisperEngine, clips: dict[str, SpeechClip]
) -> None:
    talk = Conversation(clips, "BEB", 0.2)  # E's turn is a 2 s command between two longer ones
    for told in (None, 2):
        result = diarize(tiny_engine, talk.audio, told)
        assert [s.speaker for s in result.speakers] == [0, 1, 0]
        assert der_of(tiny_engine, talk, result) <= DER_LIMIT


def test_num_speakers_above_the_real_count_does_not_invent_speakers(
    tiny_engine: WhisperEngine, clips: dict[str, SpeechClip]
) -> None:
    talk = Conversation(clips, "ABABABABAB", 0.7)
    result = diarize(tiny_engine, talk.audio, 4)
    assert {s.speaker for s in result.speakers} == {0, 1}
    assert der_of(tiny_engine, talk, result) <= DER_LIMIT


def test_silence_only_has_no_speakers(tiny_engine: WhisperEngine) -> None:
    result = diarize(tiny_engine, np.zeros(5 * SAMPLE_RATE, dtype=np.float32), 2)
    assert result.speakers == [] and result.words == [] and result.text == ""


def test_words_carry_speakers_only_when_timestamps_are_asked_for(
    tiny_engine: WhisperEngine, clips: dict[str, SpeechClip]
) -> None:
    talk = Conversation(clips, "AC", 0.5)
    plain = tiny_engine.transcribe_sync(talk.audio, TranscribeOptions(diarize=True))
    assert plain.words == [] and [s.speaker for s in plain.speakers] == [0, 1]
    assert " ".join(s.text for s in plain.speakers) == plain.text
    undiarized = tiny_engine.transcribe_sync(talk.audio, TranscribeOptions(timestamps=True))
    assert undiarized.speakers == [] and all(w.speaker is None for w in undiarized.words)


def test_a_bundle_without_a_speaker_encoder_refuses_diarize_clearly(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old-bundle"
    shutil.copytree(tiny_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["files"]["speaker.onnx"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    (old / "speaker.onnx").unlink()
    engine = WhisperEngine(old, EngineConfig(max_batch=1))
    try:
        with pytest.raises(FeatureNotAvailable, match="no speaker encoder"):
            engine.transcribe_sync(np.zeros(SAMPLE_RATE, dtype=np.float32), TranscribeOptions(diarize=True))
        assert engine.transcribe_sync(np.zeros(SAMPLE_RATE, dtype=np.float32), TranscribeOptions()).text == ""
        with pytest.raises(FeatureNotAvailable, match="rebuild it with `oyez model build`"):
            engine.open_stream(StreamOptions(diarize=True))
        assert engine.open_stream(StreamOptions()) is not None
    finally:
        engine.close()
