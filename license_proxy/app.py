"""The license proxy's HTTP surface (FastAPI); thin handlers over the validator and the spool.

``GET /health``  200 while the license is usable, else 503; body per api-contract.md C3.
``GET /ready``   200 once serving (the license was validated at start-up): the readiness probe, so
                 the API can still reach the proxy and answer 403 when the license has lapsed.
``POST /v1/validate``  the presented key (``Authorization: Token|Bearer``) -> terms, or 401/403.
``POST /v1/usage``     usage events (metadata only) -> 202, spooled durably before answering.
``GET /metrics``  Prometheus.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from license_proxy.keys import KeyMissing, LicenseKeyError
from license_proxy.metrics import ProxyMetrics
from license_proxy.reporter import UsageReporter
from license_proxy.spool import SpoolFull, UsageSpool
from license_proxy.terms import iso
from license_proxy.usage_schema import UsageIntake, to_upstream_event
from license_proxy.validator import LicenseValidator
from oyez.http_auth import key_from_authorization
from oyez.logs import bind_request_id, clear_request_id, get_logger

MAX_USAGE_BODY_BYTES = 2 * 1024 * 1024
_QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})
_log = get_logger("license_proxy.http")


def _error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _key_error(exc: LicenseKeyError) -> JSONResponse:
    status = 403 if exc.code == "LICENSE_EXPIRED" else 401
    headers = {"WWW-Authenticate": 'Token realm="oyez"'} if status == 401 else None
    return _error(status, exc.to_dict(), headers)


def _presented_key(request: Request) -> str:
    key = key_from_authorization(request.headers.get("authorization"))
    if key is None:
        raise KeyMissing("send the license key as 'Authorization: Token <key>' (or Bearer)")
    return key


def build_app(
    *,
    validator: LicenseValidator,
    spool: UsageSpool,
    reporter: UsageReporter,
    metrics: ProxyMetrics,
    salt: bytes,
) -> FastAPI:
    app = FastAPI(title="Oyez license proxy", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def request_context(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request_id = request.headers.get("x-request-id") or f"req_{uuid.uuid4().hex[:16]}"
        bind_request_id(request_id[:128])
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001 - the caller gets a JSON 500, and the log has the trace
            _log.exception("Unhandled error", path=request.url.path)
            response = _error(500, {"error": "Internal error", "code": "INTERNAL_ERROR"})
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        response.headers["X-Request-ID"] = request_id[:128]
        log = _log.debug if request.url.path in _QUIET_PATHS else _log.info
        log(
            f"{request.method} {request.url.path}",
            status=response.status_code,
            duration_ms=duration_ms,
        )
        clear_request_id()
        return response

    @app.get("/health")
    async def health() -> JSONResponse:
        body = validator.describe()
        return JSONResponse(body, status_code=200 if body["license_valid"] else 503)

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/validate")
    async def validate(request: Request) -> JSONResponse:
        try:
            terms, status = validator.check_presented(_presented_key(request))
        except LicenseKeyError as exc:
            metrics.validations.labels(result=exc.reason.lower()).inc()
            return _key_error(exc)
        metrics.validations.labels(result="valid").inc()
        return JSONResponse(
            {
                "valid": True,
                **terms.public_view(),
                "grace_period_active": status.grace_active,
                "grace_period_ends_at": iso(status.grace_ends_at)
                if status.grace_active and status.grace_ends_at
                else None,
            }
        )

    @app.post("/v1/usage")
    async def usage(request: Request) -> JSONResponse:
        try:
            validator.authenticate(_presented_key(request))
        except LicenseKeyError as exc:
            return _key_error(exc)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_USAGE_BODY_BYTES:
                return _error(
                    413,
                    {
                        "error": f"usage report over {MAX_USAGE_BODY_BYTES} bytes; send at most 1000 events",
                        "code": "PAYLOAD_TOO_LARGE",
                    },
                )
        try:
            intake = UsageIntake.model_validate_json(bytes(body))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5]
            )
            return _error(400, {"error": f"invalid usage report: {problems}", "code": "INVALID_PARAMETER"})
        events = [to_upstream_event(event, salt) for event in intake.events]
        try:
            accepted, duplicates = await asyncio.to_thread(spool.add, events)
        except SpoolFull as exc:  # the event limit, or a full disk: the sender keeps them and retries
            _log.warning("Usage events refused: the spool is full", reason=str(exc))
            return _error(507, {"error": str(exc), "code": "USAGE_SPOOL_FULL"}, {"Retry-After": "30"})
        metrics.usage_events.inc(accepted)
        metrics.usage_duplicates.inc(duplicates)
        unsealed = await asyncio.to_thread(spool.unsealed_count)
        metrics.spool_depth.set(await asyncio.to_thread(spool.depth))
        reporter.notify(unsealed)
        return JSONResponse({"accepted": accepted, "duplicates": duplicates}, status_code=202)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.export(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
