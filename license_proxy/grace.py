"""Whether the license is usable right now: pure evaluation of cached validation + time.

Rules, in order: a license the server revoked is invalid; a key past its own expiry is expired;
with no license server configured (offline mode) a genuine unexpired key is valid; with a server,
the license is valid while the server answers, and for ``grace`` after its last successful answer
while it does not. Past that, :class:`~license_proxy.keys.GracePeriodExpired` (HTTP 403).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from license_proxy.keys import (
    GracePeriodExpired,
    KeyRevoked,
    LicenseExpired,
    LicenseKeyError,
    LicenseUnconfirmed,
)
from license_proxy.terms import LicenseTerms, iso


@dataclass(frozen=True)
class CachedValidation:
    """What the license server last said about this license (persisted across restarts)."""

    license_id: str
    key_digest: str
    checked_at: datetime
    revoked: bool = False
    revoked_reason: str | None = None


@dataclass(frozen=True)
class LicenseStatus:
    """The answer every caller gets: valid or not, why, and the grace-period position."""

    valid: bool
    online: bool
    upstream_reachable: bool | None
    grace_active: bool
    grace_ends_at: datetime | None
    grace_remaining: timedelta | None
    valid_until: datetime
    error: LicenseKeyError | None = None

    @property
    def grace_remaining_hours(self) -> int:
        if self.grace_remaining is None:
            return 0
        return max(0, int(self.grace_remaining.total_seconds() // 3600))


def evaluate(
    terms: LicenseTerms,
    cached: CachedValidation | None,
    *,
    now: datetime,
    grace: timedelta,
    online: bool,
    upstream_reachable: bool | None,
) -> LicenseStatus:
    """The license's status at ``now``. ``online`` = a license server is configured;
    ``upstream_reachable`` = the result of the last attempt to reach it (None before any)."""

    def status(error: LicenseKeyError | None, grace_ends: datetime | None = None) -> LicenseStatus:
        active = error is None and grace_ends is not None
        remaining = min(grace_ends - now, grace) if grace_ends is not None else None
        return LicenseStatus(
            valid=error is None,
            online=online,
            upstream_reachable=upstream_reachable,
            grace_active=active,
            grace_ends_at=grace_ends,
            grace_remaining=remaining if active else None,
            valid_until=terms.expires,
            error=error,
        )

    if cached is not None and cached.revoked:
        reason = cached.revoked_reason or "no reason given"
        return status(KeyRevoked(f"license {terms.license_id} was refused by the license server ({reason})"))
    if now >= terms.expires:
        return status(
            LicenseExpired(
                f"license expired at {iso(terms.expires)}; ask for a renewed key", expires_at=terms.expires
            )
        )
    if not online or upstream_reachable:
        return status(None)
    if cached is None:
        return status(
            LicenseUnconfirmed("the license server has never confirmed this license and cannot be reached")
        )
    ends = cached.checked_at + grace
    if now >= ends:
        return status(
            GracePeriodExpired(
                f"the license server has been unreachable since {iso(cached.checked_at)}, longer than "
                f"the {grace.total_seconds() / 3600:g} h grace period; restore the connection to it",
                expires_at=ends,
            )
        )
    return status(None, grace_ends=ends)
