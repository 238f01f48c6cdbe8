"""What a license grants: the terms carried inside a signed key (pure data, no I/O).

The signed payload is exactly :class:`LicenseTerms` serialised as compact JSON. Unknown fields are
refused, so a key can never smuggle in a term this version would silently ignore.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KEY_FORMAT_VERSION = 1

# Features a license can grant. Components check them by name; unknown names are refused at
# issue time so a typo cannot produce a key that grants nothing.
KNOWN_FEATURES: tuple[str, ...] = (
    "batch",
    "streaming",
    "timestamps",
    "punctuation",
    "diarization",
    "callbacks",
)

# Limits a license sets, with the defaults from the issue (per license, enforced by the API server).
DEFAULT_LIMITS: dict[str, float] = {
    "requests_per_minute": 60,
    "concurrent_requests": 10,
    "audio_hours_per_day": 100,
}
KNOWN_LIMITS: tuple[str, ...] = tuple(DEFAULT_LIMITS)
_INTEGER_LIMITS = frozenset({"requests_per_minute", "concurrent_requests"})

_LICENSE_ID = re.compile(r"^lic_[A-Za-z0-9_-]{6,64}$")
_ISSUER_ID = re.compile(r"^[0-9a-f]{16}$")

UnixSeconds = Annotated[int, Field(ge=0, le=253402300799)]  # up to 9999-12-31


class LicenseTerms(BaseModel):
    """The signed content of a license key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(description="Key format version; this build reads version 1.")
    license_id: str = Field(description="Stable id of the license, e.g. lic_8f3a...; revocation is by id.")
    customer: str = Field(min_length=1, max_length=200)
    issuer: str = Field(description="Fingerprint (16 hex) of the issuer public key that signed it.")
    issued_at: UnixSeconds
    not_before: UnixSeconds
    expires_at: UnixSeconds
    features: tuple[str, ...]
    limits: dict[str, float]

    @field_validator("version")
    @classmethod
    def _supported_version(cls, value: int) -> int:
        if value != KEY_FORMAT_VERSION:
            raise ValueError(f"key format version {value} is not supported (this build reads 1)")
        return value

    @field_validator("license_id")
    @classmethod
    def _license_id_shape(cls, value: str) -> str:
        if not _LICENSE_ID.match(value):
            raise ValueError("license_id must look like lic_<6-64 letters, digits, _ or ->")
        return value

    @field_validator("issuer")
    @classmethod
    def _issuer_shape(cls, value: str) -> str:
        if not _ISSUER_ID.match(value):
            raise ValueError("issuer must be a 16-hex-digit key fingerprint")
        return value

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return normalise_features(value)

    @field_validator("limits")
    @classmethod
    def _known_limits(cls, value: dict[str, float]) -> dict[str, float]:
        return normalise_limits(value)

    @model_validator(mode="after")
    def _ordered_times(self) -> LicenseTerms:
        if not self.not_before < self.expires_at:
            raise ValueError("expires_at must come after not_before")
        return self

    # --- views ------------------------------------------------------------------------------------
    @property
    def expires(self) -> datetime:
        return datetime.fromtimestamp(self.expires_at, UTC)

    @property
    def valid_from(self) -> datetime:
        return datetime.fromtimestamp(self.not_before, UTC)

    @property
    def issued(self) -> datetime:
        return datetime.fromtimestamp(self.issued_at, UTC)

    def has_feature(self, feature: str) -> bool:
        return feature in self.features

    def public_view(self) -> dict[str, Any]:
        """The terms as callers see them (ISO-8601 times, all limits present)."""
        return {
            "license_id": self.license_id,
            "customer": self.customer,
            "issuer": self.issuer,
            "issued_at": iso(self.issued),
            "valid_from": iso(self.valid_from),
            "expires_at": iso(self.expires),
            "features": list(self.features),
            "limits": dict(self.limits),
        }


def iso(moment: datetime) -> str:
    """UTC ISO-8601 with a ``Z`` suffix, to the second: ``2026-12-31T23:59:59Z``."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def normalise_features(features: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Sorted, de-duplicated, and each one known; the error lists the known names."""
    unknown = sorted({name for name in features if name not in KNOWN_FEATURES})
    if unknown:
        raise ValueError(f"unknown feature(s) {', '.join(unknown)}; known: {', '.join(KNOWN_FEATURES)}")
    return tuple(sorted(set(features)))


def normalise_limits(limits: dict[str, float]) -> dict[str, float]:
    """Every known limit present (defaults filled in), each a positive number, no unknown names."""
    unknown = sorted(set(limits) - set(KNOWN_LIMITS))
    if unknown:
        raise ValueError(f"unknown limit(s) {', '.join(unknown)}; known: {', '.join(KNOWN_LIMITS)}")
    merged = {**DEFAULT_LIMITS, **limits}
    for name, value in merged.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"limit {name} must be a positive number, got {value!r}")
        if name in _INTEGER_LIMITS and value != int(value):
            raise ValueError(f"limit {name} must be a whole number, got {value!r}")
    return {name: (int(merged[name]) if name in _INTEGER_LIMITS else merged[name]) for name in KNOWN_LIMITS}


def parse_limit_assignment(text: str) -> tuple[str, float]:
    """``"requests_per_minute=120"`` -> ``("requests_per_minute", 120.0)``; errors say what to fix."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"--limit wants name=value (e.g. requests_per_minute=120), got {text!r}")
    if name not in KNOWN_LIMITS:
        raise ValueError(f"unknown limit {name!r}; known: {', '.join(KNOWN_LIMITS)}")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"limit {name} needs a number, got {raw.strip()!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"limit {name} must be a positive number, got {raw.strip()!r}")
    return name, value
