"""The API server's own error types, and the one table that maps every error code to HTTP.

Bodies follow api-contract.md: ``{"error": <documented text>, "code": <CODE>, ...details}``. Where
the contract fixes the ``error`` text (``"Audio file too large"``, ``"Unsupported audio format"``,
...), that text is used as given and the specific reason travels in ``detail``, so clients that match
the documented strings keep working and people still learn what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from oyez.constants import MAX_AUDIO_SECONDS, MAX_UPLOAD_BYTES, SUPPORTED_FORMATS
from oyez.errors import OyezError

# What a Redis call raises when Redis is down, slow or unreachable (connection refused and resets are
# OSError; timeouts are TimeoutError, which asyncio.TimeoutError is on 3.11+).
REDIS_FAILURES = (RedisError, OSError, TimeoutError)


class MissingParameter(OyezError):
    code = "MISSING_PARAMETER"


class FeatureNotAvailable(OyezError):
    """A documented option this build does not serve yet (e.g. ``diarize``)."""

    code = "FEATURE_NOT_AVAILABLE"


class FeatureNotLicensed(OyezError):
    """The license does not grant a feature the request needs."""

    code = "FEATURE_NOT_LICENSED"


class InvalidLicense(OyezError):
    code = "INVALID_LICENSE"


class LicenseExpired(OyezError):
    code = "LICENSE_EXPIRED"


class NoWorkers(OyezError):
    """No ready worker, or the admission queue is full or timed out."""

    code = "SERVICE_UNAVAILABLE"


class LicenseProxyUnavailable(OyezError):
    code = "LICENSE_PROXY_UNAVAILABLE"


class RequestTimeout(OyezError):
    code = "REQUEST_TIMEOUT"


class PayloadTooLarge(OyezError):
    """A non-audio body (JSON, a form field) over its small limit."""

    code = "PAYLOAD_TOO_LARGE"


class JobNotFound(OyezError):
    """No asynchronous job with this id is visible to the caller's license (or it has expired)."""

    code = "JOB_NOT_FOUND"


class JobsUnavailable(OyezError):
    """The job store (Redis) is unreachable, or the spool of pending jobs' audio is full."""

    code = "JOBS_UNAVAILABLE"


@dataclass(frozen=True)
class HttpError:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


# code -> (HTTP status, documented ``error`` text or None to use the exception's message)
_TABLE: dict[str, tuple[int, str | None]] = {
    "MISSING_PARAMETER": (400, None),
    "INVALID_PARAMETER": (400, None),
    "FEATURE_NOT_AVAILABLE": (400, None),
    "UNSUPPORTED_LANGUAGE": (400, None),
    "EMPTY_AUDIO": (400, None),
    "URL_FETCH_FAILED": (400, None),
    "INVALID_LICENSE": (401, "Invalid license key"),
    "LICENSE_EXPIRED": (403, "License expired"),
    "FEATURE_NOT_LICENSED": (403, None),
    "JOB_NOT_FOUND": (404, "Job not found"),
    "PAYLOAD_TOO_LARGE": (413, None),
    "UNSUPPORTED_FORMAT": (415, "Unsupported audio format"),
    "CORRUPT_AUDIO": (415, "Unsupported audio format"),
    "FILE_TOO_LARGE": (422, "Audio file too large"),
    "AUDIO_TOO_LONG": (422, "Audio too long"),
    "RATE_LIMIT_EXCEEDED": (429, "Rate limit exceeded"),
    "SERVICE_UNAVAILABLE": (503, "No ASR workers available"),
    "RESOURCE_EXHAUSTED": (503, "No ASR workers available"),
    "LICENSE_PROXY_UNAVAILABLE": (503, None),
    "JOBS_UNAVAILABLE": (503, None),
    "REQUEST_TIMEOUT": (504, None),
}

NO_WORKERS_RETRY_AFTER_S = 30


def http_error(exc: OyezError) -> HttpError:
    """The HTTP answer for a typed error; unknown codes are a 500 with a generic message."""
    status, documented = _TABLE.get(exc.code, (500, "Internal error"))
    details = dict(exc.details)
    body: dict[str, Any] = {"error": documented or exc.message, "code": exc.code}
    if exc.code == "RESOURCE_EXHAUSTED":
        body["code"] = "SERVICE_UNAVAILABLE"
    if documented and exc.message != documented and status != 500:
        body["detail"] = exc.message
    body.update(details)
    headers: dict[str, str] = {}
    if exc.code in ("UNSUPPORTED_FORMAT", "CORRUPT_AUDIO"):
        body["supported_formats"] = list(SUPPORTED_FORMATS)
    if exc.code == "FILE_TOO_LARGE":
        body.setdefault("max_size_mb", MAX_UPLOAD_BYTES // (1024 * 1024))
    if exc.code == "AUDIO_TOO_LONG":
        body.setdefault("max_duration_s", MAX_AUDIO_SECONDS)
    if status == 503 and body["code"] == "SERVICE_UNAVAILABLE":
        body.setdefault("retry_after", NO_WORKERS_RETRY_AFTER_S)
    if "retry_after" in body:
        headers["Retry-After"] = str(int(body["retry_after"]))
    if status == 401:
        headers["WWW-Authenticate"] = 'Token realm="oyez"'
    return HttpError(status, body, headers)
