"""Bundles built into a container image ($OYEZ_BUNDLED_MODELS_DIR) are found before the cache.

The worker images bake the default model at build time (images/asr-worker.Dockerfile) and carry
no converter, so a model name must resolve to the baked bundle without converting or writing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from asr_worker.model.build import build_model, bundled_model_path, cached_bundle_path
from asr_worker.model.resolve import resolve_reference
from oyez.constants import ENV_OYEZ_BUNDLED_MODELS_DIR
from oyez.errors import ModelError
from tests.integration.conftest import TEST_MODEL
from tests.service_process import ServiceProcess, free_port


@pytest.fixture
def image_models(tmp_path: Path, tiny_bundle: Path) -> Path:
    """A copy of the test bundle laid out as `oyez model build --cache-dir` leaves it in an image."""
    directory = tmp_path / "image-models"
    shutil.copytree(tiny_bundle, cached_bundle_path(TEST_MODEL, cache_dir=directory))
    return directory


def test_a_model_name_resolves_to_the_bundle_built_into_the_image(
    image_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_OYEZ_BUNDLED_MODELS_DIR, str(image_models))
    empty_cache = tmp_path / "cache"
    expected = cached_bundle_path(TEST_MODEL, cache_dir=image_models)

    assert bundled_model_path(TEST_MODEL) == expected
    assert build_model(TEST_MODEL, cache_dir=empty_cache, progress=False) == expected
    assert resolve_reference(TEST_MODEL, cache_dir=empty_cache, progress=False) == expected
    assert not empty_cache.exists(), "nothing is written to the cache when the image has the model"


def test_a_model_the_image_lacks_falls_back_to_the_cache(
    image_models: Path, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_OYEZ_BUNDLED_MODELS_DIR, str(image_models))
    assert bundled_model_path(TEST_MODEL, int8=True) is None
    assert bundled_model_path("whisper-base") is None
    monkeypatch.setenv(ENV_OYEZ_BUNDLED_MODELS_DIR, str(image_models / "missing"))
    assert build_model(TEST_MODEL, progress=False) == tiny_bundle


def test_a_damaged_bundle_in_the_image_is_an_error_not_a_silent_rebuild(
    image_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = cached_bundle_path(TEST_MODEL, cache_dir=image_models)
    (bundle / "decoder.onnx").write_bytes(b"truncated")
    monkeypatch.setenv(ENV_OYEZ_BUNDLED_MODELS_DIR, str(image_models))
    with pytest.raises(ModelError, match=r"decoder\.onnx"):
        bundled_model_path(TEST_MODEL)


def test_the_prefetch_job_command_accepts_the_image_bundle(image_models: Path, tmp_path: Path) -> None:
    """`oyez model fetch` (the operator's prefetch Job) exits 0 on an image that has the model."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MODEL_URL": TEST_MODEL,
        "MODEL_CACHE_DIR": str(tmp_path / "volume"),
        ENV_OYEZ_BUNDLED_MODELS_DIR: str(image_models),
    }
    done = subprocess.run(
        [sys.executable, "-m", "oyez.cli", "model", "fetch"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"OK {cached_bundle_path(TEST_MODEL, cache_dir=image_models)}"


def test_a_worker_started_as_the_image_starts_it_serves_the_baked_model(
    image_models: Path, tmp_path: Path
) -> None:
    """The worker image's environment: MODEL_URL names a baked model, MODEL_CACHE_DIR is a volume it
    need not write to (read-only here), HOME is /tmp's stand-in. It loads, warms and serves."""
    cache = tmp_path / "volume"
    cache.mkdir()
    cache.chmod(0o555)
    grpc_port, http_port = free_port(), free_port()
    worker = ServiceProcess(
        ["worker"],
        {
            "MODEL_URL": TEST_MODEL,
            "MODEL_CACHE_DIR": str(cache),
            ENV_OYEZ_BUNDLED_MODELS_DIR: str(image_models),
            "HOME": str(tmp_path),
            "PORT": str(grpc_port),
            "OYEZ_HTTP_PORT": str(http_port),
            "OYEZ_MODEL_CACHE_DIR": "",
        },
    )
    try:
        worker.wait_for_line(f"Server ready on port {grpc_port}", timeout=120)
        health = httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=5)
        assert health.status_code == 200, health.text
        assert "Model bundle found in the image" in worker.log
        assert not list(cache.iterdir())
    finally:
        code = worker.stop()
        cache.chmod(0o755)
    assert code == 0, worker.log
