"""Signed webhook delivery for asynchronous jobs.

Each delivery is an HTTP ``POST`` of a JSON body to the job's ``callback_url`` with:

- ``X-Oyez-Signature: sha256=<hex>``: HMAC-SHA256, keyed with the webhook secret, over
  ``<timestamp> + "." + <the exact body bytes>``;
- ``X-Oyez-Timestamp``: Unix seconds when this attempt was signed (receivers should refuse old ones,
  e.g. more than 5 minutes, to stop replays);
- ``X-Oyez-Job-Id`` and ``X-Oyez-Delivery-Attempt`` (1, 2, ...).

The secret is ``OYEZ_WEBHOOK_SECRET``; when unset it is derived from the deployment's
``LICENSE_KEY`` (:func:`derive_secret`), so every replica signs alike without extra configuration.

Any 2xx answer means delivered. Anything else (other statuses, connection errors, timeouts) is
retried ``OYEZ_WEBHOOK_RETRIES`` (3) times after the first attempt, waiting ``OYEZ_WEBHOOK_BACKOFF_S``
(1 s), then twice as long each time (1, 2, 4 s). Redirects are not followed. Before every attempt
the URL passes the same SSRF guard as ``url`` (:func:`api_server.url_fetch.check_http_url`) and the
connection goes to the address that was checked; a URL the guard now refuses is given up at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from api_server.url_fetch import CheckedUrl, FetchPolicy, UrlFetchFailed, check_http_url, send_pinned
from oyez import __version__
from oyez.errors import InvalidParameter

SIGNATURE_HEADER = "X-Oyez-Signature"
TIMESTAMP_HEADER = "X-Oyez-Timestamp"
JOB_ID_HEADER = "X-Oyez-Job-Id"
ATTEMPT_HEADER = "X-Oyez-Delivery-Attempt"
_DERIVATION_LABEL = b"oyez-webhook-secret-v1"
DEFAULT_TOLERANCE_S = 300


def derive_secret(license_key: str) -> str:
    """The webhook secret when ``OYEZ_WEBHOOK_SECRET`` is unset:
    ``hex(HMAC-SHA256(key=LICENSE_KEY, msg="oyez-webhook-secret-v1"))``."""
    return hmac.new(license_key.encode("utf-8"), _DERIVATION_LABEL, hashlib.sha256).hexdigest()


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, timestamp + "." + body)."""
    message = timestamp.encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """What a receiver does: constant-time compare, and refuse timestamps too far from now."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def backoff_delays(retries: int, first_s: float) -> list[float]:
    """Waits before retry 1, 2, ...: ``first_s`` doubling (1, 2, 4 s by default)."""
    return [first_s * 2**index for index in range(retries)]


@dataclass(frozen=True)
class DeliveryOutcome:
    delivered: bool
    attempts: int
    error: str | None = None
    refused: bool = False  # the SSRF guard refused the URL: given up without retries


# Called after each attempt with (attempt number, error or None when delivered); False stops retrying.
AttemptHook = Callable[[int, str | None], Awaitable[bool]]


class WebhookSender:
    def __init__(
        self,
        secret: str,
        policy: FetchPolicy,
        *,
        retries: int = 3,
        backoff_s: float = 1.0,
        timeout_s: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._secret = secret
        self._policy = policy
        self.retries = retries
        self.delays = backoff_delays(retries, backoff_s)
        self._timeout_s = timeout_s
        self._sleep = sleep

    @property
    def max_attempts(self) -> int:
        return 1 + self.retries

    async def deliver(
        self, url: str, job_id: str, body: bytes, *, done: int = 0, on_attempt: AttemptHook | None = None
    ) -> DeliveryOutcome:
        """Attempts ``done + 1`` .. ``max_attempts`` (``done`` were made before, e.g. by a replica
        that died), with the backoff between them; stops at the first 2xx."""
        attempt, last_error = done, "no attempt left"
        while attempt < self.max_attempts:
            if attempt > 0:
                await self._sleep(self.delays[min(attempt - 1, len(self.delays) - 1)])
            attempt += 1
            try:
                error = await self.attempt(url, job_id, body, attempt)
            except InvalidParameter as exc:
                if on_attempt is not None:
                    await on_attempt(attempt, exc.message)
                return DeliveryOutcome(False, attempt, exc.message, refused=True)
            if on_attempt is not None and not await on_attempt(attempt, error):
                return DeliveryOutcome(error is None, attempt, error)
            if error is None:
                return DeliveryOutcome(True, attempt)
            last_error = error
        return DeliveryOutcome(False, attempt, last_error)

    async def attempt(self, url: str, job_id: str, body: bytes, number: int) -> str | None:
        """One POST; None when the receiver answered 2xx, else why not. InvalidParameter when the
        SSRF guard refuses the URL."""
        try:
            target = await check_http_url(url, self._policy, name="callback_url", what="callback URL")
        except UrlFetchFailed as exc:  # DNS: may be transient
            return exc.message
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"oyez-webhook/{__version__}",
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            TIMESTAMP_HEADER: timestamp,
            JOB_ID_HEADER: job_id,
            ATTEMPT_HEADER: str(number),
        }
        try:
            status = await self._post(target, headers, body)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        return None if 200 <= status < 300 else f"HTTP {status}"

    async def _post(self, target: CheckedUrl, headers: dict[str, str], body: bytes) -> int:
        """POST to each checked address in turn until one accepts the connection (never resolving
        the name again); the real name goes in ``Host`` and, for https, SNI."""
        timeout = httpx.Timeout(self._timeout_s)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            response = await send_pinned(client, "POST", target, headers, content=body)
            return response.status_code
