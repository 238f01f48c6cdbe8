"""Disk full, on real filesystems: size-limited tmpfs mounts under the model cache and under the license
proxy's usage spool, filled up, then given room again (``mount -o remount,size=``, as a resized volume).

- Model cache: the worker does not crash or loop; it stays up, not ready, says what to fix, leaves no
  partial files behind, and loads the model by itself once the volume has room.
- Usage spool: requests keep being answered; the proxy refuses usage reports with 507
  ``USAGE_SPOOL_FULL`` instead of failing; the API keeps the events and retries; once there is room,
  every event reaches the license server exactly once.

Mounting needs root (CAP_SYS_ADMIN): where that is missing the tests skip and say so."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.api_stack import ApiStack, new_stack, wait_http
from tests.integration.usage_accounting import assert_each_counted_once
from tests.service_process import ServiceProcess, free_port
from tests.speech_data import SPEECH_DIR

JFK = (SPEECH_DIR / "jfk.wav").read_bytes()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "disk-full tests mount a size-limited tmpfs, which needs root (CAP_SYS_ADMIN); here mount "
            f"said: {mounted.stderr.strip() or mounted.returncode}"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def fill(path: Path) -> Path:
    """Write a filler file until the filesystem is full; returns it (delete it to free the space)."""
    filler = path / "filler"
    with filler.open("wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    return filler


def test_model_cache_full_worker_waits_not_ready_then_loads_by_itself(
    tmp_path: Path, tiny_bundle: Path
) -> None:
    archive = tmp_path / "tiny.tar"  # uncompressed: the bundle is ONNX weights, gzip gains little
    with tarfile.open(archive, "w") as tar:
        tar.add(tiny_bundle, arcname=".")
    bundle_mb = sum(f.stat().st_size for f in tiny_bundle.rglob("*") if f.is_file()) / 1e6
    with small_tmpfs(tmp_path / "cache", "40m") as cache:
        http_port = free_port()
        worker = ServiceProcess(
            ["worker"],
            {
                "MODEL_URL": str(archive),
                "OYEZ_MODEL_CACHE_DIR": str(cache),
                "OYEZ_MODEL_RETRY_S": "1",
                "PORT": str(free_port()),
                "OYEZ_HTTP_PORT": str(http_port),
                "OYEZ_HOST": "127.0.0.1",
            },
        )
        try:
            worker.wait_for_line("MODEL_CACHE_FULL", timeout=120)
            assert "ran out of space while storing the model" in worker.log
            assert "Give the cache volume more room" in worker.log
            assert worker.proc.poll() is None, "the worker must not exit (no crash loop)"
            health = httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=10)
            assert health.status_code == 503, "not ready without a model"
            leftovers = [p.name for p in cache.iterdir() if not p.name.endswith(".lock")]
            assert leftovers == [], f"partial files keep the disk full: {leftovers}"

            resize(cache, f"{int(bundle_mb * 1.5)}m")  # the volume gets room; nobody restarts anything
            wait_http(f"http://127.0.0.1:{http_port}/health", worker, timeout_s=180)
            assert "Traceback" not in worker.log
        finally:
            worker.stop(signal.SIGTERM, timeout=30)


@pytest.fixture
def spool_stack(tmp_path: Path, tiny_bundle: Path, redis_server: str) -> Iterator[ApiStack]:
    stack = new_stack(tmp_path, tiny_bundle, redis_server.rsplit("/", 1)[0] + "/9")
    with small_tmpfs(tmp_path / "proxy-state", "2m"):
        try:
            stack.start_license()
            worker = stack.start_worker()
            stack.wait_worker(worker)
            stack.start_api(OYEZ_USAGE_FLUSH_S="0.5")
            stack.wait_ready()
            yield stack
        finally:
            stack.stop()


def test_usage_spool_full_answers_keep_coming_and_every_event_arrives_once(spool_stack: ApiStack) -> None:
    stack = spool_stack
    assert stack.proxy is not None and stack.api is not None
    filler = fill(stack.tmp / "proxy-state")
    request_ids = [f"req_diskfull_{n}" for n in range(4)]
    for request_id in request_ids:
        response = httpx.post(
            f"{stack.url}/v1/listen",
            headers={**stack.auth(), "Content-Type": "audio/wav", "X-Request-ID": request_id},
            content=JFK,
            timeout=120,
        )
        assert response.status_code == 200, response.text
    stack.proxy.wait_for_line("Usage events refused: the spool is full", timeout=30)
    assert "the usage spool's disk is full" in stack.proxy.log
    stack.api.wait_for_line("Usage events cannot reach the license proxy; keeping them", timeout=30)
    assert stack.proxy.proc.poll() is None
    time.sleep(1.0)  # a few more refused flushes
    filler.unlink()  # room again: nothing is restarted
    assert_each_counted_once(stack, request_ids)
    assert "Usage events are reaching the license proxy again" in stack.api.log
    for proc in (stack.proxy, stack.api):
        assert "Traceback" not in proc.log and "Unhandled error" not in proc.log
