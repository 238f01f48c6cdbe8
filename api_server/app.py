"""The API server's HTTP surface (FastAPI): context middleware, auth, and the error mapping.

Routes live in :mod:`api_server.routes_health`, :mod:`api_server.routes_listen` and
:mod:`api_server.routes_compat`; each handler is thin and delegates to the flow objects in
:class:`~api_server.state.ApiState`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from api_server.guard import client_ip, error_response, request_id_of
from api_server.routes_compat import router as compat_router
from api_server.routes_health import router as health_router
from api_server.routes_jobs import router as jobs_router
from api_server.routes_listen import router as listen_router
from api_server.routes_stream import router as stream_router
from api_server.state import ApiState
from api_server.transcription import RequestRecord
from api_server.usage import usage_event
from oyez import __version__
from oyez.errors import OyezError
from oyez.logs import bind_request_id, clear_request_id, get_logger

_log = get_logger("api_server.http")
CLIENT_CLOSED_REQUEST = 499
QUIET_PATHS = frozenset({"/health", "/healthz", "/api/v1/health", "/metrics"})
# On every response: transcripts and errors are not for shared caches, browsers must not guess
# content types, and no page of ours may be framed. (The API serves JSON; /docs is the only HTML.)
HARDENING_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _route_label(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


def build_app(state: ApiState) -> FastAPI:
    app = FastAPI(
        title="Oyez API",
        version=__version__,
        description="Self-hosted speech-to-text. Authenticate with `Authorization: Token <license key>` "
        "(or `Bearer`) on every route except health and metrics.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.api = state

    @app.exception_handler(OyezError)
    async def typed_error(_: Request, exc: OyezError) -> JSONResponse:
        return error_response(exc)

    @app.middleware("http")
    async def request_context(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request_id = request_id_of(request)
        request.state.request_id = request_id
        request.state.record = None
        bind_request_id(request_id)
        path = request.url.path
        quiet = path in QUIET_PATHS
        if not quiet:
            _log.info(f"{request.method} {path} from {client_ip(request)}")
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except ClientDisconnect:
            # The client went away while we read its request: nobody is left to answer, and it is
            # not our error. 499 (nginx's "client closed request") in the log, metrics and usage.
            _log.info("Client disconnected before its request was read", path=path)
            response = Response(status_code=CLIENT_CLOSED_REQUEST)
        except Exception:  # noqa: BLE001 - the caller gets a JSON 500, the log gets the trace
            _log.exception("Unhandled error", path=path)
            response = JSONResponse({"error": "Internal error", "code": "INTERNAL_ERROR"}, status_code=500)
        elapsed = time.perf_counter() - started
        response.headers["X-Request-ID"] = request_id
        response.headers.update(HARDENING_HEADERS)
        status = response.status_code
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        route = _route_label(request)
        state.metrics.requests.labels(route=route, method=request.method, status=str(status)).inc()
        state.metrics.latency.labels(route=route).observe(elapsed)
        if not quiet:
            _log.info(f"Response time: {elapsed:.3f}s", duration_ms=round(elapsed * 1000, 1))
            _log.info(f"Status: {status} {phrase}".rstrip(), status=status)
        record: RequestRecord | None = request.state.record
        if record is not None and state.usage is not None:
            await state.usage.record(
                usage_event(
                    request_id,
                    audio_seconds=record.audio_seconds,
                    features=record.features,
                    response_code=status,
                )
            )
        clear_request_id()
        return response

    app.include_router(health_router)
    app.include_router(listen_router)
    app.include_router(jobs_router)
    app.include_router(compat_router)
    app.include_router(stream_router)
    return app
