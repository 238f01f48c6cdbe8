"""The multilingual checkpoint (Whisper base) honours ``language``; English-only models refuse it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from asr_worker.engine.audio import decode_audio_file
from asr_worker.engine.router import LanguageRouter
from asr_worker.engine.transcriber import EngineConfig, WhisperEngine
from asr_worker.engine.types import TranscribeOptions
from asr_worker.model.build import build_model
from oyez.errors import UnsupportedLanguage

DATA = Path(__file__).resolve().parents[1] / "data" / "multilingual"


@pytest.fixture(scope="module")
def base_engine() -> Iterator[WhisperEngine]:
    engine = WhisperEngine(build_model("whisper-base", progress=False), EngineConfig(max_batch=2))
    yield engine
    engine.close()


def _text(engine: WhisperEngine | LanguageRouter, name: str, language: str) -> str:
    audio = decode_audio_file(DATA / name)
    if isinstance(engine, WhisperEngine):
        return engine.transcribe_sync(audio.samples, TranscribeOptions(language=language)).text.lower()
    import asyncio

    return asyncio.run(engine.transcribe(audio.samples, TranscribeOptions(language=language))).text.lower()


def test_language_selects_the_prompt_and_the_output_language(base_engine: WhisperEngine) -> None:
    assert base_engine.manifest.multilingual and len(base_engine.languages) == 99
    spanish = _text(base_engine, "es_pangrama.wav", "es")
    assert sum(word in spanish for word in ("comía", "feliz", "kiwi", "cardillo")) >= 3, spanish
    french = _text(base_engine, "fr_pangrama.wav", "fr")
    assert sum(word in french for word in ("portez", "vieux", "whisky", "juge")) >= 3, french
    # Forced to English, the same Spanish audio comes out in English: the language token matters.
    forced = _text(base_engine, "es_pangrama.wav", "en")
    assert forced != spanish and " and " in f" {forced} "


def test_unknown_language_code_is_a_clear_error(base_engine: WhisperEngine) -> None:
    with pytest.raises(UnsupportedLanguage, match="'xx' is not one model whisper-base knows"):
        base_engine.check_language("xx")


def test_router_sends_english_to_the_dedicated_model_and_the_rest_to_base(
    tiny_engine: WhisperEngine, base_engine: WhisperEngine
) -> None:
    router = LanguageRouter([base_engine, tiny_engine])
    assert router.engine_for("en") is tiny_engine
    assert router.engine_for("fr") is base_engine
    assert "whisky" in _text(router, "fr_pangrama.wav", "fr")
    with pytest.raises(UnsupportedLanguage, match="No loaded model transcribes language 'xx'"):
        router.check_language("xx")
