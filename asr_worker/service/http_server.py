"""The worker's small HTTP side door (default port 9090): ``GET /health`` and ``GET /metrics``.

``/health`` answers 200 ``{"status": "healthy", ...}`` only while the worker is ready (model loaded
and warmed, not draining), else 503 ``{"status": "unhealthy", "reason": ...}``; ``/metrics`` is the
Prometheus text exposition. Unknown paths get 404 and other methods 405, both as JSON. A
``ThreadingHTTPServer`` in a daemon thread keeps probes answering even when the event loop is busy.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import urlsplit

from oyez.logs import get_logger

HealthProbe = Callable[[], tuple[bool, dict[str, Any]]]
"""Returns (healthy, JSON body)."""
MetricsExporter = Callable[[], bytes]

_log = get_logger("asr_worker.http")
_ROUTES = ("/health", "/metrics")


class _Handler(BaseHTTPRequestHandler):
    """Routes the two GET endpoints; everything else is a JSON 404/405."""

    server: _Server
    protocol_version = "HTTP/1.1"
    _ALLOWED: ClassVar[str] = "GET, HEAD"

    def do_GET(self) -> None:
        self._dispatch(send_body=True)

    def do_HEAD(self) -> None:
        self._dispatch(send_body=False)

    def do_POST(self) -> None:
        self._not_allowed()

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST  # noqa: N815 - stdlib handler names

    def _dispatch(self, *, send_body: bool) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            if path == "/health":
                healthy, body = self.server.health()
                status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
                self._send_json(status, body, send_body=send_body)
            elif path == "/metrics":
                self._send(HTTPStatus.OK, self.server.metrics(), self.server.metrics_type, send_body)
            else:
                self._send_json(
                    HTTPStatus.NOT_FOUND, {"error": "Not found", "path": path}, send_body=send_body
                )
        except Exception:  # noqa: BLE001 - a probe must get an answer, never a dropped connection
            _log.exception("HTTP handler failed", path=path)
            body = {"status": "unhealthy", "reason": "internal error"}
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, body, send_body=send_body)

    def _not_allowed(self) -> None:
        # The request body is not read, so this connection cannot carry another request.
        self.close_connection = True
        body = {"error": "Method not allowed", "allowed": self._ALLOWED}
        self._send_json(HTTPStatus.METHOD_NOT_ALLOWED, body, send_body=True, allow=self._ALLOWED)

    def _send_json(
        self, status: HTTPStatus, body: dict[str, Any], *, send_body: bool, allow: str | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        self._send(status, payload, "application/json", send_body, allow=allow)

    def _send(
        self, status: HTTPStatus, payload: bytes, content_type: str, send_body: bool, allow: str | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        if allow:
            self.send_header("Allow", allow)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if send_body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("HTTP " + format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        health: HealthProbe,
        metrics: MetricsExporter,
        metrics_type: str,
    ) -> None:
        self.health = health
        self.metrics = metrics
        self.metrics_type = metrics_type
        super().__init__(address, _Handler)


class WorkerHttpServer:
    """Serves health and metrics on ``host:port`` from a daemon thread (port 0 picks a free one)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        health: HealthProbe,
        metrics: MetricsExporter,
        metrics_type: str,
    ) -> None:
        self._server = _Server((host, port), health, metrics, metrics_type)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="worker-http", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        _log.info(f"HTTP health and metrics on port {self.port}", routes=list(_ROUTES))

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
