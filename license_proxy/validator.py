"""The proxy's view of its license: start-up validation, background revalidation, grace period.

Callers ask :meth:`LicenseValidator.status` / :meth:`LicenseValidator.check_presented`; both answer
from memory (the cache), never by calling the license server. A background task
(:meth:`LicenseValidator.run`) revalidates every ``revalidate_s``; while the server is unreachable it
retries with exponential backoff, logs the documented grace-period warnings once per transition, and
keeps the metrics current. Every successful answer is persisted, so a restart inside the grace
period keeps serving.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any

from license_proxy.clock import Clock
from license_proxy.grace import CachedValidation, LicenseStatus, evaluate
from license_proxy.keys import (
    GracePeriodExpired,
    LicenseKeyError,
    LicenseMismatch,
    TrustPolicy,
    check_validity_window,
    verify_key,
    verify_signature,
)
from license_proxy.metrics import ProxyMetrics
from license_proxy.state_store import ValidationStore, key_digest
from license_proxy.terms import LicenseTerms, iso
from license_proxy.upstream_client import LicenseServerClient, UpstreamUnavailable
from oyez.logs import get_logger

_log = get_logger("license_proxy.validator")
_PRESENTED_CACHE_SIZE = 256
EXPIRY_WARNING = timedelta(days=14)


class LicenseValidator:
    def __init__(
        self,
        *,
        license_key: str,
        policy: TrustPolicy,
        store: ValidationStore,
        client: LicenseServerClient | None,
        clock: Clock,
        grace: timedelta,
        metrics: ProxyMetrics,
        revalidate_s: float = 600.0,
        retry_initial_s: float = 5.0,
        retry_max_s: float = 300.0,
        grace_check_s: float = 30.0,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self._key = license_key.strip()
        self.digest = key_digest(self._key)
        self._policy = policy
        self._store = store
        self._client = client
        self._clock = clock
        self.grace = grace
        self._metrics = metrics
        self._revalidate_s = revalidate_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = min(retry_max_s, revalidate_s)
        self._grace_check_s = grace_check_s
        self._startup_timeout_s = startup_timeout_s
        self._terms: LicenseTerms | None = None
        self._cached: CachedValidation | None = None
        self._reachable: bool | None = None
        self._warned_last_hour = False
        self._reported_expiry = False
        self._presented: OrderedDict[str, LicenseTerms | LicenseKeyError] = OrderedDict()

    # --- state ------------------------------------------------------------------------------------
    @property
    def terms(self) -> LicenseTerms:
        if self._terms is None:
            raise RuntimeError("LicenseValidator.startup() has not run")
        return self._terms

    @property
    def online(self) -> bool:
        return self._client is not None

    @property
    def server_url(self) -> str | None:
        return self._client.base_url if self._client else None

    def status(self) -> LicenseStatus:
        return evaluate(
            self.terms,
            self._cached,
            now=self._clock.now(),
            grace=self.grace,
            online=self.online,
            upstream_reachable=self._reachable,
        )

    def check_presented(self, presented_key: str) -> tuple[LicenseTerms, LicenseStatus]:
        """Terms of a key a client presented, if it is genuine, current, of this deployment's license,
        and the license is usable now; else the specific :class:`LicenseKeyError`. From memory only."""
        verified = self._verify_cached(presented_key)
        if isinstance(verified, LicenseKeyError):
            raise verified
        if verified.license_id != self.terms.license_id:
            raise LicenseMismatch(
                f"this key belongs to license {verified.license_id}; this deployment serves license "
                f"{self.terms.license_id}"
            )
        check_validity_window(verified, self._clock.now())
        status = self.status()
        if status.error is not None:
            raise status.error
        return verified, status

    def authenticate(self, presented_key: str) -> LicenseTerms:
        """A genuine key of this license, whatever its time window or the license's state (for usage
        reports, which are recorded even for refused requests)."""
        verified = self._verify_cached(presented_key)
        if isinstance(verified, LicenseKeyError):
            raise verified
        if verified.license_id != self.terms.license_id:
            raise LicenseMismatch(f"this key belongs to license {verified.license_id}, not this deployment's")
        return verified

    def _verify_cached(self, presented_key: str) -> LicenseTerms | LicenseKeyError:
        digest = key_digest(presented_key)
        hit = self._presented.get(digest)
        if hit is None:
            try:
                hit = verify_signature(presented_key, self._policy)
            except LicenseKeyError as exc:
                hit = exc
            self._presented[digest] = hit
            if len(self._presented) > _PRESENTED_CACHE_SIZE:
                self._presented.popitem(last=False)
        else:
            self._presented.move_to_end(digest)
        return hit

    # --- start-up ---------------------------------------------------------------------------------
    async def startup(self) -> LicenseStatus:
        """Validate the configured key; returns the status, or raises :class:`LicenseKeyError` when the
        license cannot be used at all (bad, expired or revoked key; never confirmed by a configured
        server). An expired *grace period* is returned, not raised: the proxy serves 403s and recovers
        on its own once the license server answers again."""
        self._terms = verify_key(self._key, self._policy, self._clock.now())
        cached = await asyncio.to_thread(self._store.load)
        if cached is not None and cached.license_id != self.terms.license_id:
            cached = None
        self._cached = cached
        if self._client is None:
            _log.warning(
                "No license server configured (OYEZ_LICENSE_SERVER_URL unset): running offline, "
                "checking signature and expiry only"
            )
        else:
            await self._startup_check()
        status = self.tick()
        if status.error is not None and not isinstance(status.error, GracePeriodExpired):
            raise status.error
        remaining = self.terms.expires - self._clock.now()
        if remaining < EXPIRY_WARNING:
            _log.warning(f"License expires in {remaining.days} days", expires_at=iso(self.terms.expires))
        return status

    async def _startup_check(self) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        delay = self._retry_initial_s
        while not await self.revalidate():
            if self._cached is not None:
                return  # the grace period, if any is left, covers the outage
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, self._retry_max_s)

    # --- background -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Revalidate periodically and watch the grace period, until cancelled."""
        delay = self._retry_initial_s
        next_check = time.monotonic() + (self._revalidate_s if self._reachable else delay)
        while True:
            if self._client is not None and time.monotonic() >= next_check:
                if await self.revalidate():
                    delay = self._retry_initial_s
                    next_check = time.monotonic() + self._revalidate_s
                else:
                    next_check = time.monotonic() + delay
                    delay = min(delay * 2, self._retry_max_s)
            self.tick()
            wait = self._grace_check_s
            if self._client is not None:
                wait = min(wait, max(0.0, next_check - time.monotonic()))
            await asyncio.sleep(max(wait, 0.01))

    def tick(self) -> LicenseStatus:
        """Recompute the status: metrics, and the once-per-transition grace-period log lines."""
        status = self.status()
        self._update_metrics(status)
        remaining = status.grace_remaining
        if remaining is not None and remaining <= timedelta(hours=1) and not self._warned_last_hour:
            self._warned_last_hour = True
            _log.warning("Grace period expires in 1 hour", grace_ends_at=_iso_or_none(status.grace_ends_at))
        if isinstance(status.error, GracePeriodExpired) and not self._reported_expiry:
            self._reported_expiry = True
            _log.error("Grace period expired", grace_ended_at=iso(status.error.expires_at))
            _log.critical("Service will stop accepting requests")
        return status

    async def revalidate(self) -> bool:
        """Ask the license server once; True when it answered (either way), False when unreachable."""
        assert self._client is not None
        try:
            verdict = await self._client.validate(self._key)
        except UpstreamUnavailable as exc:
            self._metrics.upstream_failures.labels(operation="validate").inc()
            self._reachable = False
            self._log_unreachable(str(exc))
            return False
        now = self._clock.now()
        recovered = self._reachable is False
        self._reachable = True
        self._warned_last_hour = self._reported_expiry = False
        if verdict.status == "active":
            self._cached = CachedValidation(self.terms.license_id, self.digest, checked_at=now)
            if recovered:
                _log.info("Connection to license server restored; license validated", url=self.server_url)
        else:
            reason = f"{verdict.status}: {verdict.reason or 'no reason given'}"
            self._cached = CachedValidation(
                self.terms.license_id, self.digest, checked_at=now, revoked=True, revoked_reason=reason
            )
            _log.error("License server refused the license", status=verdict.status, reason=verdict.reason)
        try:
            await asyncio.to_thread(self._store.save, self._cached)
        except OSError as exc:  # e.g. the state volume is full; the check itself succeeded
            _log.warning(
                "Could not save the license check; after a restart the grace period counts from the "
                "last saved check",
                path=str(self._store.path),
                error=f"{type(exc).__name__}: {exc}",
            )
        self.tick()
        return True

    def _log_unreachable(self, error: str) -> None:
        if self._cached is None:
            _log.warning(
                "Connection to license server failed; no cached validation to fall back on",
                url=self.server_url,
                error=error,
            )
            return
        _log.warning(
            "Connection to license server failed, using cached validation", url=self.server_url, error=error
        )
        status = self.tick()
        if status.grace_active:
            _log.warning(
                f"Grace period active ({status.grace_remaining_hours}h remaining)",
                grace_ends_at=_iso_or_none(status.grace_ends_at),
            )

    def _update_metrics(self, status: LicenseStatus) -> None:
        m = self._metrics
        m.grace_period_active.set(1 if status.grace_active else 0)
        remaining = status.grace_remaining.total_seconds() if status.grace_remaining else 0.0
        m.grace_period_remaining.set(max(0.0, remaining))
        m.license_valid.set(1 if status.valid else 0)
        m.license_expiry.set(status.valid_until.timestamp())

    def describe(self) -> dict[str, Any]:
        """The ``/health`` body."""
        status = self.status()
        body: dict[str, Any] = {
            "status": "healthy" if status.valid else "unhealthy",
            "license_valid": status.valid,
            "valid_until": iso(status.valid_until),
            "grace_period_active": status.grace_active,
            "grace_period_ends_at": iso(status.grace_ends_at)
            if status.grace_active and status.grace_ends_at
            else None,
            "upstream": "offline" if not self.online else ("reachable" if self._reachable else "unreachable"),
            "last_validated_at": iso(self._cached.checked_at) if self._cached else None,
        }
        if status.error is not None:
            body["reason"] = status.error.reason
            body["detail"] = status.error.message
        return body


def _iso_or_none(moment: datetime | None) -> str | None:
    return iso(moment) if moment is not None else None
