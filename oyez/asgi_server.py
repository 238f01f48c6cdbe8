"""Serve an ASGI app with uvicorn on a pre-bound socket, with our own signal handling.

Shared by the HTTP services. uvicorn's own signal capture re-raises SIGTERM after its graceful
shutdown, which kills the process before the service's clean-up (final usage flush, closing
databases) can run; here SIGTERM/SIGINT only ask the server to stop, and the caller's code after
:func:`serve_asgi` runs normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Generator
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are handled by serve_asgi on the event loop


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPv6 when ``host`` contains ':'); raises OSError if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted connections only when it does, and
    # without it every response written in two parts (headers, body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    return sock


async def serve_asgi(
    app: Any,
    sock: socket.socket,
    *,
    on_started: Callable[[], None] | None = None,
    graceful_timeout_s: int = 10,
) -> None:
    """Serve until SIGTERM/SIGINT (or cancellation); ``on_started`` runs once requests are accepted."""
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=graceful_timeout_s,
        server_header=False,  # do not advertise the server software
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, setattr, server, "should_exit", True)
            installed.append(sig)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started and on_started is not None:
            on_started()
        await serving
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        raise
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
