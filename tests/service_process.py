"""Run an ``oyez`` service as a real child process and watch its log lines."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServiceProcess:
    """``python -m oyez.cli <args>`` with extra environment; stdout+stderr collected line by line."""

    args: list[str]
    env: Mapping[str, str]
    proc: subprocess.Popen[str] = field(init=False)
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        environment = {**os.environ, "OYEZ_LOG_FORMAT": "text", **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "oyez.cli", *self.args],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 30, *, after: int = 0) -> int:
        """Index of the first line from ``after`` on containing ``text``; fails with the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index in range(after, len(self.lines)):
                if text in self.lines[index]:
                    return index
            if self.proc.poll() is not None and not any(text in line for line in self.lines[after:]):
                time.sleep(0.2)  # let the pump finish
                if not any(text in line for line in self.lines[after:]):
                    raise AssertionError(f"exited ({self.proc.returncode}) before {text!r}; log:\n{self.log}")
            time.sleep(0.05)
        raise AssertionError(f"log line {text!r} not seen in {timeout}s; log:\n{self.log}")

    def wait_exit(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.1)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.wait_exit(5)
