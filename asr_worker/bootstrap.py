"""Start-up of the engine: resolve each checkpoint, load it on the chosen device, warm it up.

Emits the documented start-up lines (api-contract.md C2): ``GPU detected: <name> (<N>GB)`` (or the
CPU line), ``Downloading model from URL...`` (from the fetcher), ``Model loaded successfully
(<size>)``, ``Warmup completed in <x>s``. A required GPU that cannot be used logs
``CRITICAL: Cannot initialize GPU, exiting`` and raises, so the process exits non-zero.
"""

from __future__ import annotations

from pathlib import Path

from oyez.logs import get_logger

from .engine.onnx_model import CUDA, GpuUnavailable
from .engine.router import LanguageRouter
from .engine.transcriber import EngineConfig, WhisperEngine
from .engine.types import Engine
from .model.resolve import resolve_reference
from .service.settings import WorkerSettings

log = get_logger(__name__)


def _bundle_size(directory: Path) -> str:
    total = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
    return f"{total / 1e6:.0f} MB"


def load_engine(bundle_dir: Path, config: EngineConfig) -> WhisperEngine:
    """Load and warm one checkpoint, logging the documented lines."""
    try:
        engine = WhisperEngine(bundle_dir, config)
    except GpuUnavailable as exc:
        log.critical("Cannot initialize GPU, exiting", reason=exc.message)
        raise
    device = engine.model.device
    if device.provider == CUDA:
        log.info(f"GPU detected: {device.description}", provider=device.provider)
    else:
        log.info(f"No GPU detected, running on CPU: {device.description}", provider=device.provider)
    manifest = engine.manifest
    log.info(
        f"Model loaded successfully ({manifest.name} {manifest.precision}, {_bundle_size(bundle_dir)})",
        model=engine.model_name,
        languages=len(engine.languages),
        provider=device.provider,
    )
    seconds = engine.warmup()
    log.info(f"Warmup completed in {seconds:.2f}s", model=engine.model_name)
    return engine


def build_engine(
    references: list[str],
    *,
    cache_dir: Path | None,
    sha256s: list[str] | None = None,
    config: EngineConfig | None = None,
    progress: bool = False,
) -> Engine:
    """Resolve 1-3 references (names or MODEL_URLs) and return one engine over all of them."""
    hashes = list(sha256s or [])
    engines: list[WhisperEngine] = []
    try:
        for index, reference in enumerate(references):
            expected = hashes[index] if index < len(hashes) and hashes[index] else None
            bundle = resolve_reference(
                reference, cache_dir=cache_dir, expected_sha256=expected, progress=progress
            )
            engines.append(load_engine(bundle, config or EngineConfig()))
    except BaseException:
        for engine in engines:
            engine.close()
        raise
    return engines[0] if len(engines) == 1 else LanguageRouter(engines)


def engine_from_settings(settings: WorkerSettings) -> Engine:
    """The worker's engine factory: every checkpoint of ``MODEL_URL``, configured from the env."""
    config = EngineConfig(
        require_gpu=settings.require_gpu,
        device_id=settings.gpu_device_id,
        intra_op_threads=settings.intra_op_threads,
        max_batch=settings.max_batch_size,
        max_wait_ms=float(settings.max_batch_wait_ms),
        lanes=settings.inference_lanes,
    )
    return build_engine(
        settings.model_url, cache_dir=settings.model_cache_dir, sha256s=settings.model_sha256, config=config
    )
