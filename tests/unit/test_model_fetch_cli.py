"""`oyez model fetch`: the operator's prefetch Job. It fills MODEL_CACHE_DIR and exits; a bad
digest is a clean non-zero exit with the reason, and a second run finds the cache warm."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from tests.bundle_factory import make_archive, make_bundle


def _fetch(archive: Path, cache: Path, sha256: str) -> subprocess.CompletedProcess[str]:
    env = {
        "MODEL_URL": str(archive),
        "MODEL_SHA256": sha256,
        "MODEL_CACHE_DIR": str(cache),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [sys.executable, "-m", "oyez.cli", "model", "fetch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fetch_fills_the_cache_then_finds_it_warm(tmp_path: Path) -> None:
    make_bundle(tmp_path / "bundle")
    archive = make_archive(tmp_path / "bundle", tmp_path / "model.tar.gz")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    first = _fetch(archive, cache, digest)
    assert first.returncode == 0, first.stderr
    bundle = Path(first.stdout.strip().removeprefix("OK "))
    assert bundle.is_dir() and bundle.is_relative_to(cache) and (bundle / "encoder.onnx").is_file()
    assert "Extracting model archive" in first.stderr
    second = _fetch(archive, cache, digest)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == first.stdout.strip()
    assert "Extracting model archive" not in second.stderr  # warm cache: nothing unpacked again


def test_fetch_refuses_a_wrong_digest(tmp_path: Path) -> None:
    make_bundle(tmp_path / "bundle")
    archive = make_archive(tmp_path / "bundle", tmp_path / "model.tar.gz")
    result = _fetch(archive, tmp_path / "cache", "0" * 64)
    assert result.returncode != 0
    assert "sha256" in (result.stderr + result.stdout).lower()
    assert not list((tmp_path / "cache").glob("*/encoder.onnx"))
