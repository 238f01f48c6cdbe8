"""The pure diarization pipeline (asr_worker.engine.diarization), speaker attribution of words, the
speaker features, and the DER metric the tests score with."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from asr_worker.engine import diarization as d
from asr_worker.engine.speaker_features import normalize_volume, speaker_mels
from asr_worker.engine.speaker_words import attribute_speakers
from asr_worker.engine.types import SpeakerSegment, Word
from tests.diarization_metrics import diarization_error_rate


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def voices(rng: np.random.Generator, centres: list[int], spread: float = 0.15) -> np.ndarray:
    """Noisy embeddings around a few well-separated directions, one per window."""
    basis = np.eye(256, dtype=np.float32)
    return unit(basis[centres] + spread * rng.standard_normal((len(centres), 256)).astype(np.float32) / 16)


# --- windows --------------------------------------------------------------------------------------
def test_windows_cover_each_region_and_skip_tiny_ones() -> None:
    windows = d.plan_speaker_windows([(0.0, 0.3), (1.0, 2.0), (3.0, 6.0)])
    assert [w.region for w in windows].count(0) == 0, "0.3 s is too short to say who speaks"
    (short,) = [w for w in windows if w.region == 1]
    assert (short.start, short.end) == (100, 200)
    long = [w for w in windows if w.region == 2]
    assert long[0].start == 300 and long[-1].end == 600
    assert all(w.end - w.start == d.WINDOW_FRAMES for w in long)
    steps = {b.start - a.start for a, b in itertools.pairwise(long[:-1])}
    assert steps == {d.STEP_FRAMES}


# --- clustering -----------------------------------------------------------------------------------
def test_two_voices_are_told_apart_without_being_told_how_many() -> None:
    rng = np.random.default_rng(0)
    truth = [0] * 8 + [1] * 8 + [0] * 6
    labels = d.agglomerate(voices(rng, truth), None)
    assert labels.tolist() == truth


def test_num_speakers_fixes_the_count_when_the_audio_supports_it() -> None:
    rng = np.random.default_rng(1)
    truth = [0] * 5 + [1] * 5 + [2] * 5
    assert len(set(d.agglomerate(voices(rng, truth), 3).tolist())) == 3
    assert len(set(d.agglomerate(voices(rng, truth), 2).tolist())) == 2
    assert set(d.agglomerate(voices(rng, truth), 1).tolist()) == {0}


def test_num_speakers_above_the_real_count_does_not_split_one_voice() -> None:
    rng = np.random.default_rng(2)
    one_voice = voices(rng, [0] * 12)
    assert set(d.agglomerate(one_voice, 4).tolist()) == {0}


def test_a_voice_heard_in_a_single_window_is_not_a_speaker_of_its_own() -> None:
    rng = np.random.default_rng(3)
    windows = d.plan_speaker_windows([(0.0, 30.0)])
    truth = [0] * (len(windows) // 2) + [1] + [0] * (len(windows) - len(windows) // 2 - 1)
    labels = d.cluster_windows(windows, voices(rng, truth), None)
    assert set(labels.tolist()) == {0}
    kept = d.cluster_windows(windows, voices(rng, truth), 2)
    assert len(set(kept.tolist())) == 2, "asked for two, the lone window keeps its voice"


def test_long_recordings_are_pooled_then_every_window_is_assigned() -> None:
    rng = np.random.default_rng(4)
    regions = [(i * 10.0, i * 10.0 + 9.0) for i in range(80)]  # ~15 windows each, 1200 in all
    windows = d.plan_speaker_windows(regions)
    assert len(windows) > d.MAX_CLUSTER_ITEMS
    truth = [w.region % 2 for w in windows]
    labels = d.cluster_windows(windows, voices(rng, truth), None)
    assert labels.tolist() == truth


# --- turns and words ------------------------------------------------------------------------------
def test_turns_split_a_region_where_the_voice_changes_and_number_by_first_appearance() -> None:
    regions = [(0.0, 6.0), (7.0, 9.0)]
    windows = d.plan_speaker_windows(regions)
    labels = np.array([5 if w.region == 0 and w.start < 250 else 2 for w in windows])
    turns = d.speaker_turns(regions, windows, labels)
    assert [t.speaker for t in turns] == [0, 1, 1], "the silence between regions is not a turn"
    assert turns[0].start == 0.0 and turns[-1].end == 9.0
    assert 2.5 <= turns[0].end <= 3.5, turns
    assert turns[1].start == turns[0].end, "one region, no gap"
    assert (turns[1].end, turns[2].start) == (6.0, 7.0)


def test_turns_are_never_shorter_than_the_minimum_inside_speech_and_tiny_regions_take_a_neighbour() -> None:
    regions = [(0.0, 10.0), (10.5, 10.8), (11.0, 14.0)]
    windows = d.plan_speaker_windows(regions)
    # Every other window of the first region flickers to another voice.
    labels = np.array([(w.start // d.STEP_FRAMES) % 2 if w.region == 0 else 2 for w in windows])
    turns = d.speaker_turns(regions, windows, labels)
    inside = [t for t in turns if not (t.start >= 10.5 and t.end <= 10.8)]
    assert all(t.end - t.start >= d.MIN_TURN_S - 1e-9 for t in inside), turns
    (tiny,) = [t for t in turns if t.start == 10.5]
    assert tiny.end == 10.8
    assert tiny.speaker == turns[-1].speaker, "0.3 s from the next turn, 0.5 s from the one before"


def test_no_speech_means_no_turns() -> None:
    assert d.speaker_turns([], [], np.zeros(0, dtype=np.int64)) == []
    tiny = [(1.0, 1.2)]
    assert d.speaker_turns(tiny, d.plan_speaker_windows(tiny), np.zeros(0, dtype=np.int64)) == []


def test_each_word_gets_the_turn_it_overlaps_most_or_the_nearest() -> None:
    turns = [d.Turn(0, 0.0, 2.0), d.Turn(1, 2.0, 4.0), d.Turn(0, 5.0, 6.0)]
    words = [(0.1, 0.5), (1.8, 2.6), (3.9, 4.3), (4.7, 4.8), (10.0, 10.5)]
    assert d.word_speakers(words, turns) == [0, 1, 1, 0, 0]
    assert d.word_speakers(words, []) == [0] * 5


def test_words_become_speaker_segments_with_punctuation_attached() -> None:
    words = [
        Word("Hello", 0.0, 0.5, 0.9),
        Word(".", 0.5, 0.5, 1.0),
        Word("Hi", 1.0, 1.2, 0.9),
        Word("there", 1.2, 1.6, 0.9),
        Word("!", 1.6, 1.6, 1.0),
    ]
    turns = [d.Turn(0, 0.0, 0.8), d.Turn(1, 0.9, 2.0)]
    labelled, segments = attribute_speakers(words, turns)
    assert [w.speaker for w in labelled] == [0, 0, 1, 1, 1]
    assert segments == [SpeakerSegment(0, "Hello.", 0.0, 0.5), SpeakerSegment(1, "Hi there!", 1.0, 1.6)]
    assert d.speaker_label(1) == "SPEAKER_01"


# --- features -------------------------------------------------------------------------------------
def test_speaker_mels_have_a_frame_every_10_ms_and_quiet_audio_is_raised() -> None:
    rng = np.random.default_rng(5)
    audio = (0.001 * rng.standard_normal(16000)).astype(np.float32)
    mels = speaker_mels(audio)
    assert mels.shape == (101, 40) and mels.dtype == np.float32 and (mels >= 0).all()
    louder = normalize_volume(audio)
    rms = float(np.sqrt(np.mean(louder.astype(np.float64) ** 2)))
    assert 20 * np.log10(rms) == pytest.approx(-30.0, abs=0.1)
    loud = (0.5 * rng.standard_normal(1600)).astype(np.float32)
    assert normalize_volume(loud) is loud, "never lowered"
    assert normalize_volume(np.zeros(100, np.float32)).max() == 0.0


# --- the metric -----------------------------------------------------------------------------------
def test_der_is_zero_for_a_perfect_or_relabelled_answer_and_counts_each_error_kind() -> None:
    reference = [(0, 0.0, 5.0), (1, 5.0, 10.0)]
    assert diarization_error_rate(reference, reference, collar=0) == 0.0
    assert diarization_error_rate(reference, [(7, 0.0, 5.0), (3, 5.0, 10.0)], collar=0) == 0.0
    assert diarization_error_rate(reference, [(0, 0.0, 10.0)], collar=0) == pytest.approx(0.5, abs=0.01)
    assert diarization_error_rate(reference, [(0, 0.0, 5.0)], collar=0) == pytest.approx(0.5, abs=0.01)
    assert diarization_error_rate(reference, [(0, 0.0, 5.0), (1, 5.0, 12.0)], collar=0) == pytest.approx(
        0.2, abs=0.01
    )
    # The collar forgives boundary slop.
    assert diarization_error_rate(reference, [(0, 0.0, 5.2), (1, 5.2, 10.0)], collar=0.25) == 0.0
