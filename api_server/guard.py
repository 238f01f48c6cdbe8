"""Per-request guards shared by the routes: request ids, authentication, license limits.

Authentication answers from the license gate (the proxy's cached validation, cached again here).
Limits are admitted before any body byte is read; with Redis unreachable the request is admitted
unchecked (fail open: a Redis outage must not take transcription down), counted in the metric
``api_limits_unenforced`` and logged.
"""

from __future__ import annotations

import re
import secrets

from fastapi import Request
from fastapi.responses import JSONResponse

from api_server.errors import REDIS_FAILURES, InvalidLicense, http_error
from api_server.license_gate import Grant
from api_server.limits import Lease, RateLimited
from api_server.state import ApiState
from oyez.errors import OyezError
from oyez.http_auth import key_from_authorization
from oyez.logs import get_logger

_log = get_logger("api_server.guard")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    return f"req_{secrets.token_hex(8)}"


def request_id_of(request: Request) -> str:
    """The client's ``X-Request-ID`` when it is sane, else a new ``req_<hex>``."""
    candidate = request.headers.get("x-request-id", "")
    return candidate if _REQUEST_ID.match(candidate) else new_request_id()


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def error_response(exc: OyezError) -> JSONResponse:
    answer = http_error(exc)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


async def authenticate(state: ApiState, request: Request) -> Grant:
    """The license grant behind the request's key; 401/403/503 as typed errors (and their log lines)."""
    header = request.headers.get("authorization")
    if not header:
        _log.warning("Missing Authorization header", ip=client_ip(request))
        raise InvalidLicense(
            "Missing Authorization header: send 'Authorization: Token <license key>'", reason="KEY_MISSING"
        )
    key = key_from_authorization(header)
    if key is None:
        _log.warning(f"Invalid license key from {client_ip(request)}", reason="KEY_MALFORMED")
        raise InvalidLicense(
            "The Authorization header must read 'Token <license key>' or 'Bearer <license key>'",
            reason="KEY_MALFORMED",
        )
    try:
        return await state.gate.check(key)
    except InvalidLicense:
        _log.warning(f"Invalid license key from {client_ip(request)}")
        raise


async def admit(state: ApiState, grant: Grant) -> Lease | None:
    """A limits lease for the request; ``RateLimited`` (429) when a limit is reached. With Redis
    unreachable the request is admitted unchecked (fail open, counted in ``api_limits_unenforced``)."""
    try:
        return await state.limiter.admit(grant.license_id, grant.limits)
    except RateLimited as exc:
        state.metrics.rate_limited.labels(limit=exc.limit or "unknown").inc()
        raise
    except REDIS_FAILURES as exc:
        state.metrics.limits_unenforced.inc()
        _log.warning(f"License limits not enforced for this request: Redis unavailable ({exc})")
        return None


async def release(state: ApiState, lease: Lease | None, grant: Grant, audio_seconds: float) -> None:
    try:
        if audio_seconds > 0:
            await state.limiter.record_audio(grant.license_id, audio_seconds)
        if lease is not None:
            await state.limiter.release(lease)
    except REDIS_FAILURES as exc:
        _log.warning(f"Could not update license usage in Redis ({exc}); the lease expires on its own")
