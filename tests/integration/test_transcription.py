"""The real engine (Whisper tiny.en, ONNX Runtime) on real speech with reference transcripts."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from asr_worker.engine.segmenter import MAX_WINDOW_SAMPLES
from asr_worker.engine.transcriber import EngineConfig, WhisperEngine
from asr_worker.engine.types import TranscribeOptions, Transcript
from oyez.errors import UnsupportedLanguage
from tests.integration.conftest import read_clip
from tests.speech_data import SpeechClip, corpus_wer

SR = 16000
WER_LIMIT = 0.06
PAUSE_S = 1.5


def test_wer_on_the_real_set_is_at_most_6_percent(
    tiny_engine: WhisperEngine, speech_clips: list[SpeechClip]
) -> None:
    hypotheses = [tiny_engine.transcribe_sync(read_clip(c), TranscribeOptions()).text for c in speech_clips]
    wer = corpus_wer([c.text for c in speech_clips], hypotheses)
    print(f"tiny.en fp32 WER on {len(speech_clips)} real clips: {wer:.2%}")
    assert wer <= WER_LIMIT, list(zip([c.id for c in speech_clips], hypotheses, strict=True))


def _long_file(clips: list[SpeechClip]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    pause = np.zeros(int(PAUSE_S * SR), dtype=np.float32)
    pieces: list[np.ndarray] = [pause]
    spans: list[tuple[float, float]] = []
    cursor = pause.size
    for clip in clips:
        audio = read_clip(clip)
        spans.append((cursor / SR, (cursor + audio.size) / SR))
        pieces += [audio, pause]
        cursor += audio.size + pause.size
    return np.concatenate(pieces), spans


@pytest.fixture(scope="module")
def long_file(
    speech_clips: list[SpeechClip],
) -> tuple[np.ndarray, list[tuple[float, float]], list[SpeechClip]]:
    chosen = [c for c in speech_clips if c.id.startswith("librivox")] + [
        c for c in speech_clips if c.id in ("jfk", "forever_2", "goforward")
    ]
    audio, spans = _long_file(chosen)
    assert audio.size > 1.5 * MAX_WINDOW_SAMPLES  # several windows, not one
    return audio, spans, chosen


@pytest.fixture(scope="module")
def long_transcript(tiny_engine: WhisperEngine, long_file: tuple) -> Transcript:
    audio, _, _ = long_file
    return tiny_engine.transcribe_sync(audio, TranscribeOptions(timestamps=True))


def test_long_file_transcribes_every_clip_in_order(long_file: tuple, long_transcript: Transcript) -> None:
    _, _, clips = long_file
    wer = corpus_wer([" ".join(c.text for c in clips)], [long_transcript.text])
    assert wer <= 0.08, long_transcript.text
    # Each clip's most distinctive word appears, in clip order.
    markers = ["leisure", "young", "selfish", "respectable", "himself", "forward", "forever", "americans"]
    text = long_transcript.text.lower()
    positions = [text.find(marker) for marker in markers]
    assert all(p >= 0 for p in positions), (markers, text)
    assert positions == sorted(positions)


def test_long_file_word_timestamps_fall_inside_each_clip(
    long_file: tuple, long_transcript: Transcript
) -> None:
    audio, spans, clips = long_file
    words = long_transcript.words
    assert len(words) >= 60
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= audio.size / SR for w in words)
    tolerance = 0.3
    per_clip: list[list[str]] = [[] for _ in clips]
    for word in words:
        inside = [
            i for i, (a, b) in enumerate(spans) if a - tolerance <= word.start and word.end <= b + tolerance
        ]
        assert len(inside) == 1, f"{word} is not inside exactly one clip span {spans}"
        per_clip[inside[0]].append(word.word)
    for clip, clip_words in zip(clips, per_clip, strict=True):
        assert corpus_wer([clip.text], [" ".join(clip_words)]) <= 0.25, (clip.id, clip_words)


def test_words_match_the_text_and_confidences_are_probabilities(long_transcript: Transcript) -> None:
    assert " ".join(w.word for w in long_transcript.words) == long_transcript.text
    assert all(0.0 < w.confidence <= 1.0 for w in long_transcript.words)
    assert 0.5 < long_transcript.confidence <= 1.0


def test_punctuate_false_gives_the_same_words_without_punctuation(
    tiny_engine: WhisperEngine, speech_clips: list[SpeechClip]
) -> None:
    jfk = read_clip(next(c for c in speech_clips if c.id == "jfk"))
    with_punct = tiny_engine.transcribe_sync(jfk, TranscribeOptions(punctuate=True, timestamps=True))
    without = tiny_engine.transcribe_sync(jfk, TranscribeOptions(punctuate=False, timestamps=True))
    assert any(ch in with_punct.text for ch in ",.")
    assert not any(ch in without.text for ch in ",.?!;:")
    strip = str.maketrans("", "", ",.?!;:")
    assert with_punct.text.translate(strip).split() == without.text.split()
    assert [w.word.translate(strip) for w in with_punct.words] == [w.word for w in without.words]
    assert [w.start for w in with_punct.words] == [w.start for w in without.words]


def test_silence_gives_an_empty_transcript(tiny_engine: WhisperEngine) -> None:
    result = tiny_engine.transcribe_sync(
        np.zeros(SR * 5, dtype=np.float32), TranscribeOptions(timestamps=True)
    )
    assert result.text == "" and result.words == [] and result.duration == 5.0


def test_english_only_model_refuses_other_languages(tiny_engine: WhisperEngine) -> None:
    with pytest.raises(UnsupportedLanguage, match="English only") as info:
        tiny_engine.check_language("de")
    assert info.value.details["supported_languages"] == ["en"]
    assert tiny_engine.check_language(" EN ") == "en"


def test_batched_equals_unbatched(tiny_bundle, speech_clips: list[SpeechClip]) -> None:
    audios = [read_clip(c) for c in speech_clips]
    batched = WhisperEngine(tiny_bundle, EngineConfig(max_batch=8, max_wait_ms=200))
    single = WhisperEngine(tiny_bundle, EngineConfig(max_batch=1))
    sizes: list[int] = []
    batched.batcher._on_batch = sizes.append
    try:

        async def run_all() -> list[Transcript]:
            options = TranscribeOptions(timestamps=True)
            return list(await asyncio.gather(*(batched.transcribe(a, options) for a in audios)))

        together = asyncio.run(run_all())
        one_by_one = [single.transcribe_sync(a, TranscribeOptions(timestamps=True)) for a in audios]
    finally:
        batched.close()
        single.close()
    assert max(sizes) > 1, "the batcher never formed a batch"
    assert [t.text for t in together] == [t.text for t in one_by_one]
    for a, b in zip(together, one_by_one, strict=True):
        assert [w.word for w in a.words] == [w.word for w in b.words]
        assert np.allclose([w.start for w in a.words], [w.start for w in b.words], atol=0.021)
        assert a.confidence == pytest.approx(b.confidence, abs=1e-3)


def test_int8_decodes_each_window_alone_so_results_do_not_depend_on_neighbours(
    speech_clips: list[SpeechClip],
) -> None:
    from asr_worker.model.build import build_model

    bundle = build_model("whisper-tiny.en", int8=True, progress=False)
    audios = [read_clip(c) for c in speech_clips[:6]]
    engine = WhisperEngine(bundle, EngineConfig(max_batch=8, max_wait_ms=100, lanes=2))
    sizes: list[int] = []
    engine.batcher._on_batch = sizes.append
    try:
        assert engine.max_batch == 1 and engine.batcher.lanes == 2

        async def run_all() -> list[Transcript]:
            return list(await asyncio.gather(*(engine.transcribe(a, TranscribeOptions()) for a in audios)))

        together = asyncio.run(run_all())
        alone = [engine.transcribe_sync(a, TranscribeOptions()) for a in audios]
    finally:
        engine.close()
    assert set(sizes) == {1}
    assert [t.text for t in together] == [t.text for t in alone]
