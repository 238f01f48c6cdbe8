"""The proxy's HTTP client for the license server: validate the license, upload usage batches.

Failures are sorted once, here: :class:`UpstreamUnavailable` (network error, timeout, 5xx, 401,
408, 429 or an unreadable answer; retried, and the grace period covers it) versus an answer that
settles the matter (a :class:`~license_proxy.protocol.ValidationVerdict`, or
:class:`UsageRefused` for a batch the server will never take).
"""

from __future__ import annotations

from http import HTTPStatus

import httpx
from pydantic import ValidationError

from license_proxy.protocol import (
    HEADER_LICENSE_ID,
    HEADER_SIGNATURE,
    USAGE_PATH,
    VALIDATE_PATH,
    UsageReceipt,
    ValidationVerdict,
)
from license_proxy.usage_schema import usage_signature

_RETRYABLE = frozenset({HTTPStatus.UNAUTHORIZED, HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS})


class UpstreamUnavailable(Exception):
    """The license server could not give an answer this time."""


class UsageRefused(Exception):
    """The license server refused a usage batch for good (e.g. 422); ``status`` is its HTTP status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class LicenseServerClient:
    def __init__(
        self, base_url: str, *, timeout_s: float = 10.0, transport: httpx.AsyncBaseTransport | None = None
    ):
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout_s, transport=transport, follow_redirects=False
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def validate(self, license_key: str) -> ValidationVerdict:
        try:
            response = await self._client.post(
                VALIDATE_PATH, headers={"Authorization": f"Token {license_key}"}
            )
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 500 or response.status_code in (
            HTTPStatus.REQUEST_TIMEOUT,
            HTTPStatus.TOO_MANY_REQUESTS,
        ):
            raise UpstreamUnavailable(f"license server answered HTTP {response.status_code}")
        try:
            verdict = ValidationVerdict.model_validate_json(response.content)
        except ValidationError:
            raise UpstreamUnavailable(
                f"license server answered HTTP {response.status_code} with an unreadable body"
            ) from None
        if (verdict.status == "active") != (response.status_code == HTTPStatus.OK):
            raise UpstreamUnavailable(
                f"license server answered HTTP {response.status_code} with status {verdict.status!r}"
            )
        return verdict

    async def send_usage(self, body: bytes, *, license_id: str, key_digest: str) -> UsageReceipt:
        headers = {
            "Content-Type": "application/json",
            HEADER_LICENSE_ID: license_id,
            HEADER_SIGNATURE: usage_signature(body, key_digest),
        }
        try:
            response = await self._client.post(USAGE_PATH, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"{type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status >= 500 or status in _RETRYABLE:
            raise UpstreamUnavailable(f"license server answered HTTP {status}")
        if status >= 400:
            raise UsageRefused(status, response.text[:500])
        try:
            return UsageReceipt.model_validate_json(response.content)
        except ValidationError:
            raise UpstreamUnavailable(
                f"license server answered HTTP {status} with an unreadable body"
            ) from None
