"""Live-stream speakers (asr_worker.engine.speaker_tracking) and the stream checkpoint that carries
them (asr_worker.engine.stream_checkpoint): pure logic, synthetic embeddings."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from asr_worker.engine.diarization import SAME_SPEAKER_SIMILARITY, SpeakerWindow, Turn
from asr_worker.engine.speaker_tracking import SessionSpeakers, VoiceProfile, main_speaker
from asr_worker.engine.stream_checkpoint import (
    V1_TOKEN_BYTES,
    StreamCheckpoint,
    unpack_checkpoint,
)
from asr_worker.engine.vad import CHUNK
from oyez.constants import MAX_SPEAKERS
from oyez.errors import InvalidParameter


def voices(rng: np.random.Generator, centres: list[int], spread: float = 0.15) -> np.ndarray:
    """Noisy unit embeddings around well-separated directions, one per window."""
    basis = np.eye(256, dtype=np.float32)
    noisy = basis[centres] + spread * rng.standard_normal((len(centres), 256)).astype(np.float32) / 16
    unit: np.ndarray = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
    return unit


def windows_for(count: int) -> list[SpeakerWindow]:
    return [SpeakerWindow(0, 50 * i, 50 * i + 160) for i in range(count)]


def utterance(session: SessionSpeakers, rng: np.random.Generator, centres: list[int]) -> list[int]:
    assigned = session.assign(windows_for(len(centres)), voices(rng, centres))
    return [int(s) for s in assigned.window_speakers]


# --- session speakers -----------------------------------------------------------------------------
def test_labels_are_given_in_order_of_appearance_and_kept_for_the_session() -> None:
    rng = np.random.default_rng(1)
    session = SessionSpeakers()
    assert utterance(session, rng, [7] * 5) == [0] * 5
    assert utterance(session, rng, [3] * 4) == [1] * 4
    assert utterance(session, rng, [7] * 6) == [0] * 6
    assert utterance(session, rng, [9] * 3) == [2] * 3
    assert utterance(session, rng, [3] * 2) == [1] * 2
    assert [p.windows for p in session.profiles] == [11, 6, 3], "profiles learn every window"


def test_two_voices_in_one_utterance_are_split_and_matched() -> None:
    rng = np.random.default_rng(2)
    session = SessionSpeakers()
    utterance(session, rng, [7] * 4)
    utterance(session, rng, [3] * 4)
    assert utterance(session, rng, [3, 3, 3, 7, 7, 7]) == [1, 1, 1, 0, 0, 0]


def test_a_short_turn_of_a_new_voice_is_kept_but_a_blip_like_the_speaker_is_not() -> None:
    rng = np.random.default_rng(3)
    session = SessionSpeakers()
    # A different voice heard in a single window (a 1 s "yes") is a speaker of its own...
    assert utterance(session, rng, [7, 7, 7, 7, 2]) == [0, 0, 0, 0, 1]
    # ...but one odd window that is still close to its neighbours joins them.
    session = SessionSpeakers()
    embeddings = voices(rng, [7] * 5)
    embeddings[4] = 0.75 * embeddings[0] + 0.25 * voices(rng, [2])[0]
    assert session.assign(windows_for(5), embeddings).window_speakers.tolist() == [0] * 5


def test_the_speaker_limit_sends_new_voices_to_the_nearest_speaker() -> None:
    rng = np.random.default_rng(4)
    session = SessionSpeakers(limit=2)
    utterance(session, rng, [7] * 4)
    utterance(session, rng, [3] * 4)
    third = voices(rng, [9] * 3)
    third += 0.5 * voices(rng, [3])[0]  # nearer to speaker 1 than to speaker 0
    assigned = session.assign(windows_for(3), third)
    assert assigned.window_speakers.tolist() == [1, 1, 1]
    assert assigned.confidence[1] < SAME_SPEAKER_SIMILARITY, "a forced label is not a sure one"
    assert len(session.profiles) == 2


def test_the_limit_never_exceeds_the_protocol_maximum() -> None:
    assert SessionSpeakers(limit=1000).limit == MAX_SPEAKERS
    assert SessionSpeakers().limit == MAX_SPEAKERS


def test_confidence_is_similarity_for_known_voices_and_distance_for_new_ones() -> None:
    rng = np.random.default_rng(5)
    session = SessionSpeakers()
    first = session.assign(windows_for(4), voices(rng, [7] * 4))
    assert first.confidence == {0: 1.0}, "the first voice of a session cannot be anyone else"
    second = session.assign(windows_for(4), voices(rng, [3] * 4))
    assert 0.9 <= second.confidence[1] <= 1.0, "orthogonal to the only other voice: clearly new"
    again = session.assign(windows_for(4), voices(rng, [7] * 4))
    assert 0.9 <= again.confidence[0] <= 1.0, "the same direction: clearly the same voice"
    assert all(0.0 <= c <= 1.0 for c in [*first.confidence.values(), *again.confidence.values()])


def test_closest_labels_a_short_utterance_without_learning_from_it() -> None:
    rng = np.random.default_rng(6)
    assert SessionSpeakers().closest(voices(rng, [7])[0]) == (0, 0.0), "nothing known: a guess"
    session = SessionSpeakers()
    utterance(session, rng, [7] * 3)
    utterance(session, rng, [3] * 3)
    before = [p.windows for p in session.profiles]
    speaker, sure = session.closest(voices(rng, [3])[0])
    assert speaker == 1 and sure > 0.9
    assert session.closest(None) == (0, 0.0)
    assert [p.windows for p in session.profiles] == before


def test_no_windows_changes_nothing() -> None:
    session = SessionSpeakers()
    assigned = session.assign([], np.zeros((0, 256), dtype=np.float32))
    assert assigned.window_speakers.size == 0 and assigned.confidence == {}
    assert session.profiles == []


def test_main_speaker_is_who_spoke_longest() -> None:
    assert main_speaker([Turn(1, 0.0, 1.0), Turn(0, 1.0, 3.5), Turn(1, 3.5, 4.0)]) == 0
    assert main_speaker([Turn(2, 0.0, 1.0), Turn(1, 1.0, 2.0)]) == 2, "a tie goes to the first"
    assert main_speaker([]) is None


# --- checkpoint -----------------------------------------------------------------------------------
def checkpoint(**changes: object) -> StreamCheckpoint:
    rng = np.random.default_rng(7)
    fields: dict[str, object] = {
        "committed_samples": 10 * CHUNK + 100,
        "vad_samples": 14 * CHUNK,
        "in_speech": True,
        "vad_state": rng.standard_normal((2, 1, 128)).astype(np.float32),
        "vad_context": rng.standard_normal((1, 64)).astype(np.float32),
        "speech_probabilities": rng.random(4).astype(np.float32),
        "speakers": (
            VoiceProfile(rng.standard_normal(256).astype(np.float32), 12),
            VoiceProfile(rng.standard_normal(256).astype(np.float32), 3),
        ),
    }
    fields.update(changes)
    return StreamCheckpoint(**fields)  # type: ignore[arg-type]


def test_a_checkpoint_round_trips_with_its_speakers_and_probabilities() -> None:
    original = checkpoint()
    restored = unpack_checkpoint(original.pack())
    assert (restored.committed_samples, restored.vad_samples, restored.in_speech) == (
        original.committed_samples,
        original.vad_samples,
        True,
    )
    np.testing.assert_array_equal(restored.vad_state, original.vad_state)
    np.testing.assert_array_equal(restored.vad_context, original.vad_context)
    np.testing.assert_array_equal(restored.speech_probabilities, original.speech_probabilities)
    assert restored.probabilities_start == 10 * CHUNK
    assert [p.windows for p in restored.speakers] == [12, 3]
    for mine, theirs in zip(restored.speakers, original.speakers, strict=True):
        np.testing.assert_array_equal(mine.total, theirs.total)


def test_a_checkpoint_without_speakers_is_small() -> None:
    token = checkpoint(speakers=()).pack()
    assert len(token) < V1_TOKEN_BYTES + 64
    assert unpack_checkpoint(token).speakers == ()


def test_a_checkpoint_from_a_worker_before_diarization_is_still_read() -> None:
    original = checkpoint()
    v1 = (
        struct.pack("<4sQQ?", b"OYZ1", original.committed_samples, original.vad_samples, True)
        + original.vad_state.astype("<f4").tobytes()
        + original.vad_context.astype("<f4").tobytes()
    )
    assert len(v1) == V1_TOKEN_BYTES
    restored = unpack_checkpoint(v1)
    assert restored.speakers == ()
    assert restored.speech_probabilities.tolist() == [1.0] * 4, "in speech: the replay counts as speech"
    np.testing.assert_array_equal(restored.vad_state, original.vad_state)


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        (b"", "not a stream checkpoint"),
        (b"OYZ9" + bytes(2000), "not a stream checkpoint"),
        (checkpoint().pack()[:-4], "not a stream checkpoint"),
        (checkpoint().pack() + b"\0", "not a stream checkpoint"),
        (checkpoint(vad_samples=9 * CHUNK, speech_probabilities=np.zeros(0)).pack(), "before the committed"),
        (checkpoint(vad_samples=14 * CHUNK + 1).pack(), "do not span"),
        (checkpoint(speech_probabilities=np.zeros(3, dtype=np.float32)).pack(), "do not span"),
        (checkpoint(speech_probabilities=np.array([0, 1, np.nan, 0], dtype=np.float32)).pack(), "non-finite"),
        (checkpoint(vad_context=np.full((1, 64), np.inf, dtype=np.float32)).pack(), "non-finite VAD"),
        (checkpoint(speakers=(VoiceProfile(np.zeros(256, dtype=np.float32), 0),)).pack(), "invalid voice"),
        (
            checkpoint(speakers=(VoiceProfile(np.full(256, np.nan, dtype=np.float32), 2),)).pack(),
            "invalid voice",
        ),
        (checkpoint(speakers=(VoiceProfile(np.ones(256, dtype=np.float32), 1),) * 33).pack(), "more than 32"),
    ],
)
def test_a_damaged_or_foreign_checkpoint_is_refused_by_name(token: bytes, fragment: str) -> None:
    with pytest.raises(InvalidParameter, match="resume_token") as caught:
        unpack_checkpoint(token)
    assert fragment in caught.value.message
