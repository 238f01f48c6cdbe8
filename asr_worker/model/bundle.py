"""The model bundle: a directory of ONNX graphs, vocabulary, VAD model and ``manifest.json``.

The manifest is the one description of a bundle: architecture, dimensions, special tokens,
languages, sample rate and the sha256 of every file. :func:`verify_bundle` refuses a bundle whose
files do not match it. Pure data + file hashing; no ONNX Runtime here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oyez.errors import ModelError

MANIFEST_NAME = "manifest.json"
BUNDLE_FORMAT_VERSION = 1
_HASH_CHUNK = 1 << 20


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class WhisperDims(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_mels: int
    n_audio_ctx: int
    n_text_ctx: int
    n_layers: int
    d_model: int
    n_heads: int
    n_vocab: int


class SpecialTokens(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eot: int
    sot: int
    no_timestamps: int
    timestamp_begin: int
    transcribe: int | None = None
    translate: int | None = None
    no_speech: int | None = None


class SourcePackage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    version: str
    file: str
    sha256: str


class BundleManifest(BaseModel):
    """Everything the runtime needs to know about a bundle, and the hashes that prove its files."""

    model_config = ConfigDict(extra="forbid")
    format_version: int = BUNDLE_FORMAT_VERSION
    name: str
    architecture: str = "whisper"
    precision: str = Field(pattern=r"^(fp32|int8|fp16)$")
    multilingual: bool
    sample_rate: int = 16000
    dims: WhisperDims
    special_tokens: SpecialTokens
    languages: dict[str, int]
    suppress_ids: list[int]
    suppress_ids_begin: list[int]
    alignment_heads: list[tuple[int, int]]
    files: dict[str, FileEntry]
    sources: list[SourcePackage] = []
    converter_version: str = ""

    @property
    def prompt_language_codes(self) -> tuple[str, ...]:
        return tuple(self.languages) if self.multilingual else ("en",)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(directory: Path, names: list[str]) -> dict[str, FileEntry]:
    """Hash and size each named file (used when writing a manifest)."""
    return {
        name: FileEntry(sha256=sha256_file(directory / name), size=(directory / name).stat().st_size)
        for name in names
    }


def write_manifest(directory: Path, manifest: BundleManifest) -> Path:
    path = directory / MANIFEST_NAME
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def load_manifest(directory: Path) -> BundleManifest:
    """Parse ``manifest.json``; a missing or malformed manifest is a :class:`ModelError`."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"Not a model bundle: {directory} has no {MANIFEST_NAME}")
    try:
        manifest = BundleManifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise ModelError(f"Invalid {MANIFEST_NAME} in {directory}: {exc.errors()[0]['msg']}") from exc
    if manifest.format_version != BUNDLE_FORMAT_VERSION:
        raise ModelError(
            f"Bundle format {manifest.format_version} is not supported (expected {BUNDLE_FORMAT_VERSION})"
        )
    return manifest


def verify_bundle(directory: Path) -> BundleManifest:
    """Load the manifest and check every listed file's size and sha256."""
    manifest = load_manifest(directory)
    for name, entry in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise ModelError(f"Model bundle {directory} is missing {name}")
        if path.stat().st_size != entry.size:
            raise ModelError(
                f"Model bundle file {name} has {path.stat().st_size} bytes, manifest says {entry.size}"
            )
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise ModelError(
                f"Model bundle file {name} sha256 {actual} does not match manifest {entry.sha256}"
            )
    return manifest
