"""Tiny fake model bundles for tests: a few small files plus a real, verifiable manifest.

The files are not ONNX graphs: these bundles exercise packaging, download and verification, never
inference. ``make_bundle`` writes one, ``make_archive`` tars it (optionally inside a wrapping
directory, gzipped or not).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from asr_worker.model.bundle import (
    BundleManifest,
    SpecialTokens,
    WhisperDims,
    describe_files,
    write_manifest,
)

DEFAULT_FILES: dict[str, bytes] = {
    "encoder.onnx": b"fake encoder graph\n" * 64,
    "decoder.onnx": b"fake decoder graph\n" * 64,
    "vocab.json": b'{"<|endoftext|>": 3}\n',
}


def make_manifest(directory: Path, names: list[str], *, name: str = "tiny-test") -> BundleManifest:
    """A fully populated manifest with small dummy dimensions and tokens for ``names`` in ``directory``."""
    return BundleManifest(
        name=name,
        precision="fp32",
        multilingual=True,
        dims=WhisperDims(
            n_mels=80, n_audio_ctx=16, n_text_ctx=8, n_layers=1, d_model=8, n_heads=2, n_vocab=12
        ),
        special_tokens=SpecialTokens(
            eot=3, sot=4, no_timestamps=9, timestamp_begin=10, transcribe=7, translate=8, no_speech=6
        ),
        languages={"en": 5, "de": 11},
        suppress_ids=[0, 1],
        suppress_ids_begin=[3],
        alignment_heads=[(0, 1)],
        files=describe_files(directory, names),
    )


def make_bundle(
    directory: Path, files: dict[str, bytes] | None = None, *, extra_random_bytes: int = 0
) -> BundleManifest:
    """Write a verifiable bundle into ``directory`` and return its manifest.

    ``extra_random_bytes`` adds an incompressible ``weights.bin`` of that size (for download tests
    that need a body big enough to cut in half).
    """
    contents = dict(DEFAULT_FILES if files is None else files)
    if extra_random_bytes:
        contents["weights.bin"] = os.urandom(extra_random_bytes)
    directory.mkdir(parents=True, exist_ok=True)
    for file_name, data in contents.items():
        path = directory / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    manifest = make_manifest(directory, sorted(contents))
    write_manifest(directory, manifest)
    return manifest


def make_archive(bundle_dir: Path, archive: Path, *, wrap: str | None = "bundle", gzip: bool = True) -> Path:
    """Tar ``bundle_dir``'s files into ``archive``, inside directory ``wrap`` or at the root."""
    with tarfile.open(archive, "w:gz" if gzip else "w") as tar:
        if wrap is not None:
            tar.add(bundle_dir, arcname=wrap)
        else:
            for child in sorted(bundle_dir.iterdir()):
                tar.add(child, arcname=child.name)
    return archive
