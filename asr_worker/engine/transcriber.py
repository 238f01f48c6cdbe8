"""Whole-file transcription: VAD windows -> batched Whisper -> words, text and confidence.

:class:`WhisperEngine` is the engine the service and the CLI use (it satisfies ``types.Engine``).
It loads a verified bundle, warms up, and turns 16 kHz samples into a :class:`Transcript`.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from asr_worker.model.build import SPEAKER_FILE
from asr_worker.model.bundle import BundleManifest, verify_bundle
from oyez.errors import FeatureNotAvailable, UnsupportedLanguage
from oyez.logs import get_logger

from .alignment import FRAMES_PER_SECOND, token_start_times
from .batcher import DynamicBatcher
from .decoding import DecodedWindow, build_prompt
from .diarization import Turn
from .features import HOP_LENGTH, log_mel_spectrogram
from .onnx_model import CUDA, WhisperOnnx, choose_providers
from .segmenter import Span, VadConfig, plan_file_windows, speech_regions
from .speaker_encoder import Diarizer, SpeakerEncoder
from .speaker_words import attribute_speakers
from .tokenizer import Tokenizer
from .types import (
    Samples,
    SpeakerSegment,
    StreamOptions,
    StreamSession,
    TranscribeOptions,
    Transcript,
    Word,
)
from .vad import SileroVad
from .words import build_words, clean_text, snap_to_speech

SAMPLE_RATE = 16000
log = get_logger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    require_gpu: bool = False
    device_id: int = 0
    intra_op_threads: int = 0  # 0: CPU cores / lanes on CPU, the runtime default on GPU
    max_batch: int = 8
    max_wait_ms: float = 10.0
    lanes: int = 1  # inference threads sharing the sessions


def plan_threads(config: EngineConfig, on_gpu: bool, cpu_count: int) -> tuple[int, int]:
    """(lanes, intra-op threads per session). Several CPU lanes split the cores between them;
    one lane keeps the runtime's default (all cores). Pure, so the policy is testable."""
    lanes = max(1, config.lanes)
    if config.intra_op_threads or on_gpu or lanes == 1:
        return lanes, config.intra_op_threads
    return lanes, max(1, cpu_count // lanes)


@dataclass(frozen=True)
class FilePlan:
    windows: list[Span]
    speech: list[tuple[float, float]]


@dataclass(frozen=True)
class WindowText:
    """One decoded window, placed on the file's timeline."""

    text: str
    words: list[Word]
    token_count: int
    probability_sum: float


class WhisperEngine:
    def __init__(
        self, bundle_dir: Path, config: EngineConfig | None = None, manifest: BundleManifest | None = None
    ):
        self.bundle_dir = bundle_dir
        self.manifest = manifest or verify_bundle(bundle_dir)
        self.config = config = config or EngineConfig()
        on_gpu = CUDA in [
            p if isinstance(p, str) else p[0] for p in choose_providers(False, config.device_id)
        ]
        lanes, threads = plan_threads(config, on_gpu, os.cpu_count() or 1)
        self.model = WhisperOnnx(
            bundle_dir,
            self.manifest,
            require_gpu=config.require_gpu,
            device_id=config.device_id,
            intra_op_threads=threads,
        )
        max_batch = config.max_batch
        if self.manifest.precision == "int8" and max_batch > 1:
            # Dynamic int8 quantises activations per tensor, across the batch: a window's tokens
            # would depend on its batch neighbours. Decode each window alone (lanes still overlap).
            log.info(
                "int8 model: batch size 1 so results do not depend on other requests", model=self.model_name
            )
            max_batch = 1
        self.max_batch = max_batch
        self.tokenizer = Tokenizer.from_file(bundle_dir / "vocabulary.txt", self.manifest.special_tokens.eot)
        self.vad = SileroVad(bundle_dir / "vad.onnx")
        self.vad_config = VadConfig()
        # Bundles built before diarization have no speaker encoder: diarize is then refused.
        has_speaker = SPEAKER_FILE in self.manifest.files
        self.diarizer = Diarizer(SpeakerEncoder(bundle_dir / SPEAKER_FILE)) if has_speaker else None
        self.batcher = DynamicBatcher(self.model, max_batch, config.max_wait_ms, lanes=lanes)

    # --- Engine protocol -------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return f"{self.manifest.name}-{self.manifest.precision}"

    @property
    def languages(self) -> tuple[str, ...]:
        return self.manifest.prompt_language_codes

    def check_language(self, language: str) -> str:
        code = (language or "en").strip().lower()
        if code in self.languages:
            return code
        if not self.manifest.multilingual:
            raise UnsupportedLanguage(
                f"Model {self.manifest.name} transcribes English only; language {code!r} is not supported. "
                "Use language=en or deploy a multilingual model such as whisper-base.",
                supported_languages=list(self.languages),
            )
        raise UnsupportedLanguage(
            f"Language {code!r} is not one model {self.manifest.name} knows; use an ISO 639-1 code "
            f"such as {', '.join(self.languages[:8])}.",
            supported_languages=list(self.languages),
        )

    async def transcribe(self, samples: Samples, options: TranscribeOptions) -> Transcript:
        language = self.check_language(options.language)
        if options.diarize:
            self.require_diarizer()
        plan = await asyncio.to_thread(self.plan, samples)
        prompt = build_prompt(self.manifest, language)
        mels = await asyncio.to_thread(self._features, samples, plan.windows)
        decoding = asyncio.gather(*(self.batcher.submit_async(mel, prompt) for mel in mels))
        turns: list[Turn] = []
        if options.diarize:
            # Speaker embeddings (CPU) run while the windows decode.
            decoded, turns = await asyncio.gather(
                decoding, asyncio.to_thread(self.speaker_turns, samples, plan, options.num_speakers)
            )
        else:
            decoded = await decoding
        return self._assemble(samples, plan, list(decoded), options, language, turns)

    def transcribe_sync(self, samples: Samples, options: TranscribeOptions) -> Transcript:
        """The same as :meth:`transcribe`, for callers without an event loop (CLI, benchmarks)."""
        language = self.check_language(options.language)
        if options.diarize:
            self.require_diarizer()
        plan = self.plan(samples)
        prompt = build_prompt(self.manifest, language)
        futures = [self.batcher.submit(mel, prompt) for mel in self._features(samples, plan.windows)]
        turns = self.speaker_turns(samples, plan, options.num_speakers) if options.diarize else []
        return self._assemble(samples, plan, [f.result() for f in futures], options, language, turns)

    def require_diarizer(self) -> Diarizer:
        """The diarizer; :class:`FeatureNotAvailable` naming the fix when the bundle has none."""
        if self.diarizer is None:
            raise FeatureNotAvailable(
                f"Model bundle {self.manifest.name} has no speaker encoder (it was built before "
                "diarization): rebuild it with `oyez model build`, or send diarize=false"
            )
        return self.diarizer

    def speaker_turns(self, samples: Samples, plan: FilePlan, num_speakers: int | None) -> list[Turn]:
        return self.require_diarizer().turns(samples, plan.speech, num_speakers)

    def open_stream(self, options: StreamOptions) -> StreamSession:
        from .streaming import WhisperStream

        return WhisperStream(self, options)

    # --- pieces ----------------------------------------------------------------------------
    def plan(self, samples: Samples) -> FilePlan:
        """VAD once: the windows to decode and the speech spans (seconds) for word snapping."""
        probs = self.vad.speech_probabilities(samples)
        regions = speech_regions(probs, samples.shape[0], self.vad_config)
        speech = [(r.start / SAMPLE_RATE, r.end / SAMPLE_RATE) for r in regions]
        return FilePlan(plan_file_windows(probs, samples.shape[0], self.vad_config), speech)

    def _features(self, samples: Samples, windows: list[Span]) -> list[np.ndarray]:
        n_mels = self.manifest.dims.n_mels
        return [log_mel_spectrogram(samples[w.start : w.end], n_mels) for w in windows]

    async def decode_window(self, window_samples: Samples, language: str) -> DecodedWindow:
        mel = await asyncio.to_thread(log_mel_spectrogram, window_samples, self.manifest.dims.n_mels)
        return await self.batcher.submit_async(mel, build_prompt(self.manifest, language))

    def window_text(
        self, decoded: DecodedWindow, offset: float, length_samples: int, options: TranscribeOptions
    ) -> WindowText:
        text = clean_text(self.tokenizer.decode(decoded.tokens), options.punctuate)
        words: list[Word] = []
        if options.timestamps and decoded.tokens:
            n_frames = -(-length_samples // (HOP_LENGTH * 2))
            starts = token_start_times(decoded.alignment, n_frames)
            groups = self.tokenizer.split_words(decoded.tokens)
            window_end = offset + length_samples / SAMPLE_RATE
            words = build_words(groups, decoded.probabilities, starts, offset, window_end, options.punctuate)
        return WindowText(text, words, len(decoded.probabilities), float(sum(decoded.probabilities)))

    def _assemble(
        self,
        samples: Samples,
        plan: FilePlan,
        decoded: list[DecodedWindow],
        options: TranscribeOptions,
        language: str,
        turns: list[Turn] | None = None,
    ) -> Transcript:
        # Diarization needs word times to give each word its speaker, asked for or not.
        timed = replace(options, timestamps=True) if options.diarize else options
        pieces = [
            self.window_text(result, window.start / SAMPLE_RATE, window.length, timed)
            for window, result in zip(plan.windows, decoded, strict=True)
        ]
        tokens = sum(p.token_count for p in pieces)
        confidence = sum(p.probability_sum for p in pieces) / tokens if tokens else 0.0
        words = snap_to_speech([w for p in pieces for w in p.words], plan.speech) if timed.timestamps else []
        segments: list[SpeakerSegment] = []
        if options.diarize:
            words, segments = attribute_speakers(words, turns or [])
        return Transcript(
            text=" ".join(p.text for p in pieces if p.text),
            words=words if options.timestamps else [],
            confidence=round(confidence, 4),
            duration=round(samples.shape[0] / SAMPLE_RATE, 3),
            language=language,
            speakers=segments,
        )

    # --- lifecycle -------------------------------------------------------------------------
    def warmup(self) -> float:
        """Run the whole path once (VAD, features, encoder, decoder at batch 1 and max batch)."""
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(SAMPLE_RATE * 2) * 0.01).astype(np.float32)
        self.vad.speech_probabilities(noise)
        mel = log_mel_spectrogram(noise, self.manifest.dims.n_mels)
        prompt = build_prompt(self.manifest, self.languages[0])
        self.batcher.submit(mel, prompt).result()  # batch 1 on its own
        futures = [self.batcher.submit(mel, prompt) for _ in range(self.max_batch * self.batcher.lanes)]
        for future in futures:
            future.result()
        if self.diarizer is not None:
            self.diarizer.warm()
        return time.perf_counter() - started

    def close(self) -> None:
        self.batcher.stop()


assert FRAMES_PER_SECOND * HOP_LENGTH * 2 == SAMPLE_RATE
