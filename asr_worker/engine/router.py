"""Several checkpoints behind one engine: each request goes to the checkpoint for its language.

A worker may load up to three checkpoints (``MODEL_URL`` list). A language goes to a dedicated
checkpoint that lists it first (an English-only model for ``en``), else to the first multilingual
checkpoint that covers it.
"""

from __future__ import annotations

from collections.abc import Sequence

from oyez.errors import UnsupportedLanguage

from .types import Engine, Samples, StreamOptions, StreamSession, TranscribeOptions, Transcript


class LanguageRouter:
    def __init__(self, engines: Sequence[Engine]) -> None:
        if not engines:
            raise ValueError("LanguageRouter needs at least one engine")
        self._engines = list(engines)
        self._routes: dict[str, Engine] = {}
        # Dedicated (single-language) checkpoints win; then multilingual ones in MODEL_URL order.
        for engine in sorted(self._engines, key=lambda e: len(e.languages) > 1):
            for language in engine.languages:
                self._routes.setdefault(language, engine)

    @property
    def engines(self) -> list[Engine]:
        return list(self._engines)

    @property
    def model_name(self) -> str:
        return ",".join(engine.model_name for engine in self._engines)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self._routes)

    def engine_for(self, language: str) -> Engine:
        code = (language or "en").strip().lower()
        if code not in self._routes:
            if len(self._engines) == 1:
                self._engines[0].check_language(code)  # raises the engine's own, specific error
            raise UnsupportedLanguage(
                f"No loaded model transcribes language {code!r}; loaded: {self.model_name}",
                supported_languages=list(self.languages),
            )
        return self._routes[code]

    def check_language(self, language: str) -> str:
        return self.engine_for(language).check_language(language)

    async def transcribe(self, samples: Samples, options: TranscribeOptions) -> Transcript:
        return await self.engine_for(options.language).transcribe(samples, options)

    def open_stream(self, options: StreamOptions) -> StreamSession:
        return self.engine_for(options.language).open_stream(options)
