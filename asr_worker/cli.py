"""Command handlers for ``oyez model ...`` and ``oyez worker ...`` (parsing lives in ``oyez.cli``)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from oyez.logs import configure_logging


def model_build(args: argparse.Namespace) -> int:
    from .model.build import build_model

    configure_logging("oyez-cli", fmt="text")
    out = Path(args.out) if args.out else None
    cache = Path(args.cache_dir) if args.cache_dir else None
    path = build_model(args.name, int8=args.int8, cache_dir=cache, out=out, progress=not args.no_progress)
    print(path)
    return 0


def model_pack(args: argparse.Namespace) -> int:
    from .model.build import pack_bundle

    digest = pack_bundle(Path(args.bundle), Path(args.archive))
    print(f"{args.archive}\nsha256 {digest}")
    return 0


def model_verify(args: argparse.Namespace) -> int:
    from .model.bundle import verify_bundle

    manifest = verify_bundle(Path(args.bundle))
    print(f"OK {manifest.name} {manifest.precision}: {len(manifest.files)} files verified")
    return 0


def model_fetch(args: argparse.Namespace) -> int:
    """Download and verify every MODEL_URL checkpoint into the cache, then exit (the prefetch Job)."""
    from .model.resolve import resolve_reference
    from .service.settings import load_worker_settings

    settings = load_worker_settings()
    configure_logging("model-prefetch", fmt=settings.log_format, level=settings.log_level, stream=sys.stderr)
    digests: list[str | None] = [*settings.model_sha256] or [None] * len(settings.model_url)
    for url, digest in zip(settings.model_url, digests, strict=True):
        bundle = resolve_reference(
            url, cache_dir=settings.model_cache_dir, expected_sha256=digest or None, progress=False
        )
        print(f"OK {bundle}")
    return 0


def worker_serve(args: argparse.Namespace) -> int:
    from .bootstrap import engine_from_settings
    from .service.app import run_worker
    from .service.settings import load_worker_settings

    return run_worker(load_worker_settings(), engine_from_settings)


def worker_transcribe(args: argparse.Namespace) -> int:
    from .bootstrap import build_engine
    from .engine.audio import decode_audio_file
    from .engine.transcriber import EngineConfig, WhisperEngine
    from .engine.types import TranscribeOptions

    configure_logging("oyez-cli", fmt="text", level="INFO" if args.verbose else "WARNING")
    audio = decode_audio_file(args.file)
    cache = Path(args.cache_dir) if args.cache_dir else None
    engine = build_engine([args.model], cache_dir=cache, config=EngineConfig(), progress=sys.stderr.isatty())
    assert isinstance(engine, WhisperEngine)
    try:
        options = TranscribeOptions(
            language=args.language, punctuate=not args.no_punctuate, timestamps=args.timestamps
        )
        result = engine.transcribe_sync(audio.samples, options)
    finally:
        engine.close()
    if args.json:
        payload = asdict(result)
        if not args.timestamps:
            payload.pop("words")
        print(json.dumps(payload, ensure_ascii=False, indent=2))
    else:
        print(result.text)
        if args.timestamps:
            for word in result.words:
                print(f"{word.start:8.2f} {word.end:8.2f}  {word.confidence:.2f}  {word.word}")
    return 0
