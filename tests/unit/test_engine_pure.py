"""Unit tests of the engine's pure pieces: features, tokens, words, segmentation, alignment."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from asr_worker.engine.alignment import dtw_path, median_filter_last_axis, token_start_times
from asr_worker.engine.features import N_FRAMES, log_mel_spectrogram, mel_filterbank
from asr_worker.engine.segmenter import MAX_WINDOW_SAMPLES, Span, VadConfig, plan_windows, speech_regions
from asr_worker.engine.tokenizer import Tokenizer
from asr_worker.engine.vad import CHUNK
from asr_worker.engine.words import build_words, clean_text, strip_punctuation

SR = 16000


# --- features ---------------------------------------------------------------------------
def test_mel_filterbank_shape_and_slaney_area() -> None:
    bank = mel_filterbank(80)
    assert bank.shape == (80, 201)
    assert (bank >= 0).all()
    # Each filter is a triangle over FFT bins: one contiguous run of non-zero weights.
    for row in bank:
        nonzero = np.flatnonzero(row)
        assert nonzero.size > 0
        assert np.array_equal(nonzero, np.arange(nonzero[0], nonzero[-1] + 1))
    # Slaney normalisation: area (in Hz) of every triangle is 1 -> sum(weights) * bin_width ~ 1.
    bin_hz = SR / 400
    areas = bank.sum(axis=1) * bin_hz
    assert np.allclose(areas[10:], 1.0, atol=0.15)


def test_log_mel_tone_peaks_in_the_matching_band() -> None:
    t = np.arange(SR * 2) / SR
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    mel = log_mel_spectrogram(tone)
    assert mel.shape == (80, N_FRAMES)
    assert mel.dtype == np.float32
    speech_frames = mel[:, 10:190]
    peak_band = int(np.median(speech_frames.argmax(axis=0)))
    centres = (mel_filterbank(80) * np.arange(201)).sum(axis=1) / mel_filterbank(80).sum(axis=1) * (SR / 400)
    assert abs(centres[peak_band] - 1000) < 120
    # Dynamic range is clamped to 8 (log10) before scaling: max - min <= 2 after (x + 4) / 4.
    assert mel.max() - mel.min() <= 2.0 + 1e-6


def test_log_mel_rejects_more_than_30_seconds() -> None:
    with pytest.raises(ValueError, match="at most"):
        log_mel_spectrogram(np.zeros(SR * 31, dtype=np.float32))


# --- tokenizer --------------------------------------------------------------------------
def _toy_tokenizer() -> Tokenizer:
    # GPT-2 byte mapping: space is "Ġ" (U+0120); "é" (c3 a9) is "Ã" + "©".
    tokens = ["ĠHello", ",", "Ġcaf", "Ã", "©", "Ġworld", ".", "Ġdon", "'t", "<|endoftext|>"]
    return Tokenizer(tokens, eot=9)


def test_decode_maps_bytes_and_hides_specials() -> None:
    tok = _toy_tokenizer()
    assert tok.decode([0, 1, 2, 3, 4, 5, 6, 9]) == " Hello, café world."


def test_split_words_keeps_multibyte_characters_whole() -> None:
    tok = _toy_tokenizer()
    words = tok.split_words([0, 1, 2, 3, 4, 5, 6, 7, 8])
    assert [w for w, _ in words] == [" Hello", ",", " café", " world", ".", " don't"]
    assert [ids for _, ids in words] == [[0], [1], [2, 3, 4], [5], [6], [7, 8]]


# --- words ------------------------------------------------------------------------------
def test_strip_punctuation_keeps_intra_word_apostrophes_and_hyphens() -> None:
    assert strip_punctuation("Well-known, isn't it? 'Yes' - he said.") == "Well-known isn't it Yes he said"
    assert clean_text("  Hello,   world!  ", punctuate=True) == "Hello, world!"
    assert clean_text("  Hello,   world!  ", punctuate=False) == "Hello world"


def test_build_words_merges_punctuation_and_stays_monotonic() -> None:
    groups = [(" Hello", [0]), (",", [1]), (" world", [5]), (".", [6])]
    probs = [0.9, 0.8, 0.6, 0.5]
    starts = np.array([0.1, 0.5, 0.6, 1.2, 1.3])
    words = build_words(groups, probs, starts, offset=10.0, window_end=12.0, punctuate=True)
    assert [w.word for w in words] == ["Hello,", "world."]
    assert words[0].start == pytest.approx(10.1)
    assert words[0].confidence == pytest.approx(0.85)
    assert all(w.start <= w.end for w in words)
    assert words[0].end <= words[1].start
    assert all(w.start >= 10.0 and w.end <= 12.0 for w in words)
    bare = build_words(groups, probs, starts, offset=10.0, window_end=12.0, punctuate=False)
    assert [w.word for w in bare] == ["Hello", "world"]


# --- segmentation -----------------------------------------------------------------------
def _probs(pattern: list[tuple[float, float]]) -> np.ndarray:
    """(seconds, probability) runs -> per-chunk probabilities."""
    out: list[float] = []
    for seconds, prob in pattern:
        out += [prob] * round(seconds * SR / CHUNK)
    return np.array(out, dtype=np.float32)


def test_speech_regions_hysteresis_and_padding() -> None:
    probs = _probs([(1.0, 0.05), (2.0, 0.9), (0.1, 0.1), (1.0, 0.9), (2.0, 0.02), (0.05, 0.95), (1.0, 0.02)])
    total = probs.size * CHUNK
    regions = speech_regions(probs, total, VadConfig())
    # The 100 ms dip is shorter than min_silence and does not split; the 50 ms blip is dropped.
    assert len(regions) == 1
    region = regions[0]
    assert abs(region.start / SR - (1.0 - 0.2)) < 0.05
    assert abs(region.end / SR - (4.1 + 0.2)) < 0.1


def test_plan_windows_packs_regions_and_respects_the_limit() -> None:
    probs = np.zeros(int(120 * SR / CHUNK), dtype=np.float32)
    regions = [Span(s * SR, (s + 8) * SR) for s in range(0, 100, 10)]
    windows = plan_windows(regions, probs)
    assert all(w.length <= MAX_WINDOW_SAMPLES for w in windows)
    assert [w.start for w in windows] == sorted(w.start for w in windows)
    # Every region lies wholly inside exactly one window: no window edge splits speech.
    for region in regions:
        assert sum(w.start <= region.start and region.end <= w.end for w in windows) == 1


def test_plan_windows_cuts_a_long_region_at_its_quietest_point() -> None:
    probs = _probs([(50.0, 0.9)])
    quiet_chunk = int(25.0 * SR / CHUNK)
    probs[quiet_chunk] = 0.1
    windows = plan_windows([Span(0, 50 * SR)], probs)
    assert len(windows) == 2
    assert abs(windows[0].end / SR - 25.0) < 0.05
    assert windows[1].start == windows[0].end and windows[1].end == 50 * SR


# --- alignment --------------------------------------------------------------------------
def test_dtw_path_is_monotonic_and_follows_the_cheap_diagonal() -> None:
    cost = np.ones((4, 12))
    for i, (a, b) in enumerate([(0, 3), (3, 6), (6, 9), (9, 12)]):
        cost[i, a:b] = 0.0
    tokens, frames = dtw_path(cost)
    assert tokens[0] == 0 and frames[0] == 0 and tokens[-1] == 3 and frames[-1] == 11
    assert (np.diff(tokens) >= 0).all() and (np.diff(frames) >= 0).all()
    assert cost[tokens, frames].sum() == 0.0


def test_token_start_times_recovers_attention_peaks() -> None:
    rows, frames = 4, 1500
    alignment = np.full((2, rows, frames), 1e-4, dtype=np.float32)
    peaks = [10, 60, 110, 160]  # frames: 0.2 s, 1.2 s, 2.2 s, 3.2 s
    for row, peak in enumerate(peaks):
        alignment[:, row, peak : peak + 40] = 1.0
    starts = token_start_times(alignment, n_frames=250)
    assert starts.shape == (rows + 1,)
    assert (np.diff(starts) >= 0).all()
    for row, peak in enumerate(peaks):
        assert abs(starts[row] - peak / 50) <= 0.2
    assert starts[-1] == pytest.approx(5.0)


def test_median_filter_removes_single_spikes() -> None:
    x = np.zeros((1, 20), dtype=np.float32)
    x[0, 10] = 5.0
    assert median_filter_last_axis(x).max() == 0.0


def test_widen_windows_never_overlaps_or_exceeds_the_limit() -> None:
    from asr_worker.engine.segmenter import widen_windows

    windows = [
        Span(1 * SR, 10 * SR),
        Span(int(10.4 * SR), 20 * SR),
        Span(25 * SR, 25 * SR + MAX_WINDOW_SAMPLES - SR // 4),
    ]
    total = 60 * SR
    wide = widen_windows(windows, total, pad=SR // 2)
    assert wide[0] == Span(SR // 2, int(10.2 * SR))
    assert wide[1].start == int(10.2 * SR) and wide[1].end == int(20.5 * SR)
    assert all(w.length <= MAX_WINDOW_SAMPLES for w in wide)
    assert all(a.end <= b.start for a, b in itertools.pairwise(wide))


def test_plan_file_windows_short_file_is_one_window_and_silence_is_none() -> None:
    from asr_worker.engine.segmenter import plan_file_windows

    speech = _probs([(1.0, 0.05), (2.0, 0.9), (1.0, 0.05)])
    assert plan_file_windows(speech, speech.size * CHUNK) == [Span(0, speech.size * CHUNK)]
    silence = _probs([(5.0, 0.01)])
    assert plan_file_windows(silence, silence.size * CHUNK) == []


def test_hyphen_and_apostrophe_tokens_join_the_word() -> None:
    tok = Tokenizer(["Ġill", "-", "dis", "posed", "Ġdon", "'t", ",", "<|endoftext|>"], eot=7)
    assert [w for w, _ in tok.split_words([0, 1, 2, 3, 4, 5, 6])] == [" ill-disposed", " don't", ","]


def test_snap_to_speech_moves_edges_out_of_silence() -> None:
    from asr_worker.engine.types import Word
    from asr_worker.engine.words import snap_to_speech

    speech = [(1.0, 2.0), (3.0, 4.0)]
    words = [Word("a", 0.2, 1.5, 0.9), Word("b", 1.5, 3.4, 0.9), Word("c", 3.4, 3.9, 0.9)]
    snapped = snap_to_speech(words, speech)
    assert [(w.start, w.end) for w in snapped] == [(1.0, 1.5), (1.5, 3.4), (3.4, 3.9)]
    # A start in the pause moves to the next onset when the word reaches it.
    gap = snap_to_speech([Word("d", 2.3, 3.5, 0.9), Word("e", 4.2, 4.6, 0.9)], speech)
    assert (gap[0].start, gap[0].end) == (3.0, 3.5)
    assert (gap[1].start, gap[1].end) == (4.2, 4.6)  # wholly in silence: nothing to snap to


def test_thread_plan_splits_cpu_cores_between_lanes() -> None:
    from asr_worker.engine.transcriber import EngineConfig, plan_threads

    assert plan_threads(EngineConfig(), on_gpu=False, cpu_count=8) == (1, 0)  # one lane: runtime default
    assert plan_threads(EngineConfig(lanes=2), on_gpu=False, cpu_count=8) == (2, 4)
    assert plan_threads(EngineConfig(lanes=4), on_gpu=False, cpu_count=2) == (4, 1)
    assert plan_threads(EngineConfig(lanes=2, intra_op_threads=3), on_gpu=False, cpu_count=8) == (2, 3)
    assert plan_threads(EngineConfig(lanes=2), on_gpu=True, cpu_count=8) == (2, 0)
