"""Usage events: what components report to the proxy, and what the proxy sends upstream.

Metadata only, by construction: both models forbid extra fields, and neither has a field that could
hold audio, transcripts, URLs, IP addresses or keys. The raw request id never leaves the proxy; the
upstream event carries an HMAC of it under a per-installation salt.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from license_proxy.terms import KNOWN_FEATURES, iso

MAX_EVENTS_PER_BATCH = 1000
# A streaming session can outlast the 2 h batch limit; a day is the sanity bound.
MAX_EVENT_AUDIO_SECONDS = 24 * 3600

Component = Literal["api_server", "asr_worker"]


class UsageEventIn(BaseModel):
    """One request's usage as a component reports it (``POST /v1/usage`` on the proxy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(min_length=1, max_length=128, description="Hashed before it is stored.")
    timestamp: AwareDatetime
    audio_seconds: float = Field(ge=0, le=MAX_EVENT_AUDIO_SECONDS, allow_inf_nan=False)
    features: tuple[str, ...] = ()
    response_code: int = Field(ge=100, le=599)
    component: Component

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(KNOWN_FEATURES))
        if unknown:
            raise ValueError(f"unknown feature(s) {', '.join(unknown)}; known: {', '.join(KNOWN_FEATURES)}")
        return tuple(sorted(set(value)))


class UsageIntake(BaseModel):
    """The body of the proxy's ``POST /v1/usage``."""

    model_config = ConfigDict(extra="forbid")

    events: list[UsageEventIn] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)


class UsageEvent(BaseModel):
    """One event as the license server receives it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    timestamp: str = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    audio_seconds: float = Field(ge=0, le=MAX_EVENT_AUDIO_SECONDS, allow_inf_nan=False)
    features: tuple[str, ...]
    response_code: int = Field(ge=100, le=599)
    component: Component

    @property
    def dedupe_key(self) -> str:
        """One event per request and component: a re-posted event is not counted twice."""
        return f"{self.request_id_hash}:{self.component}"


class UsageBatch(BaseModel):
    """The body of the license server's ``POST /v1/usage``; ``batch_id`` makes it idempotent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_id: str = Field(pattern=r"^ub_[0-9a-f]{32}$")
    license_id: str = Field(min_length=1, max_length=80)
    created_at: str
    events: list[UsageEvent] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)


def hash_request_id(salt: bytes, request_id: str) -> str:
    return hmac.new(salt, request_id.encode("utf-8"), hashlib.sha256).hexdigest()


def to_upstream_event(event: UsageEventIn, salt: bytes) -> UsageEvent:
    return UsageEvent(
        request_id_hash=hash_request_id(salt, event.request_id),
        timestamp=iso(event.timestamp.astimezone(UTC)),
        audio_seconds=round(event.audio_seconds, 3),
        features=event.features,
        response_code=event.response_code,
        component=event.component,
    )


def usage_signature(body: bytes, key_digest_hex: str) -> str:
    """``sha256=<hex>``: HMAC of a batch body under the SHA-256 of the license key, so usage uploads
    authenticate without carrying the key."""
    return "sha256=" + hmac.new(bytes.fromhex(key_digest_hex), body, hashlib.sha256).hexdigest()
