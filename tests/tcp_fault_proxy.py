"""A TCP proxy that injects network faults between our services and Redis (or anything else).

It listens on a loopback port and forwards every connection to ``target``. At any moment a test can
add latency to every forwarded chunk (``delay_s``), silently swallow all traffic as a black hole
(``blackhole``: connections stay open, nothing arrives: what a partition looks like), cut every open
connection (``drop_all``), or refuse new ones (``refuse``). Threads, plain sockets, no dependencies.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from tests.service_process import free_port


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.delay_s = 0.0
        self.blackhole = False
        self.refuse = False
        self.connections = 0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_all(self) -> int:
        """Cut every open connection (both sides see a reset); returns how many were cut."""
        with self._lock:
            victims, self._open = self._open, []
        for sock in victims:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        return len(victims) // 2

    def heal(self) -> None:
        self.delay_s, self.blackhole, self.refuse = 0.0, False, False

    def close(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop_all()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                while self.blackhole and not self._stopped.is_set():
                    time.sleep(0.05)  # hold the bytes: the peer waits, as behind a partition
                if self.delay_s:
                    time.sleep(self.delay_s)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
