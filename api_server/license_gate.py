"""Who may call: presented keys checked against the license proxy's cached validation.

The proxy answers ``POST /v1/validate`` from its own cache (no upstream call per request); this
gate adds a short cache of its own (``OYEZ_AUTH_CACHE_TTL_S``) so a request costs no proxy round
trip in the common case, and so a brief proxy outage does not refuse keys it has just vouched for.
Keys are only ever held as SHA-256 digests here.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from api_server.errors import InvalidLicense, LicenseExpired, LicenseProxyUnavailable
from oyez.errors import OyezError
from oyez.logs import get_logger

_log = get_logger("api_server.license")
_CACHE_SIZE = 1024
# A refusal is remembered briefly, so a flood of bad keys does not become a flood of proxy calls,
# and a fixed key (a renewed license) is accepted again quickly.
NEGATIVE_TTL_S = 5.0


@dataclass(frozen=True)
class Grant:
    """What a valid key allows: the license's id, features and limits."""

    license_id: str
    features: frozenset[str]
    limits: dict[str, float]
    expires_at: str
    grace_period_active: bool = False

    def allows(self, feature: str) -> bool:
        return feature in self.features


@dataclass
class _Entry:
    outcome: Grant | OyezError
    stored_at: float
    extra: dict[str, Any] = field(default_factory=dict)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _refusal(status: int, body: dict[str, Any]) -> OyezError:
    details = {k: v for k, v in body.items() if k in ("reason", "expires_at")}
    message = str(body.get("detail") or body.get("error") or "refused by the license proxy")
    if status == 403:
        return LicenseExpired(message, **details)
    return InvalidLicense(message, **details)


class LicenseGate:
    def __init__(
        self,
        proxy_url: str,
        *,
        ttl_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(base_url=proxy_url, timeout=timeout_s, transport=transport)
        self.proxy_url = proxy_url
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self.last_proxy_error: str | None = None

    async def aclose(self) -> None:
        await self._client.aclose()

    async def check(self, key: str) -> Grant:
        """The grant for ``key``, or :class:`InvalidLicense` / :class:`LicenseExpired`; with the proxy
        unreachable and no fresh cached answer, :class:`LicenseProxyUnavailable` (503)."""
        digest = _digest(key)
        entry = self._cache.get(digest)
        now = self._clock()
        if entry is not None:
            ttl = self._ttl_s if isinstance(entry.outcome, Grant) else NEGATIVE_TTL_S
            if now - entry.stored_at < ttl:
                self._cache.move_to_end(digest)
                return self._unwrap(entry.outcome)
        try:
            outcome = await self._ask_proxy(key)
        except LicenseProxyUnavailable:
            raise
        self._cache[digest] = _Entry(outcome, now)
        self._cache.move_to_end(digest)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return self._unwrap(outcome)

    @staticmethod
    def _unwrap(outcome: Grant | OyezError) -> Grant:
        if isinstance(outcome, OyezError):
            raise outcome
        return outcome

    async def _ask_proxy(self, key: str) -> Grant | OyezError:
        try:
            response = await self._client.post("/v1/validate", headers={"Authorization": f"Token {key}"})
        except httpx.HTTPError as exc:
            self.last_proxy_error = f"{type(exc).__name__}: {exc}"
            _log.warning("License proxy unreachable; cannot check a key", url=self.proxy_url, error=str(exc))
            raise LicenseProxyUnavailable(
                "The license proxy is unreachable, so the key cannot be checked; retry shortly",
                retry_after=5,
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code == 200 and isinstance(body, dict) and body.get("valid"):
            self.last_proxy_error = None
            return Grant(
                license_id=str(body["license_id"]),
                features=frozenset(body.get("features", ())),
                limits={str(k): float(v) for k, v in dict(body.get("limits", {})).items()},
                expires_at=str(body.get("expires_at", "")),
                grace_period_active=bool(body.get("grace_period_active", False)),
            )
        if response.status_code in (401, 403) and isinstance(body, dict):
            self.last_proxy_error = None
            return _refusal(response.status_code, body)
        self.last_proxy_error = f"HTTP {response.status_code}"
        raise LicenseProxyUnavailable(
            f"The license proxy answered HTTP {response.status_code}; retry shortly", retry_after=5
        )
