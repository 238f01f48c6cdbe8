"""License keys: the text format, issuing (signing) and verification. Pure: no I/O, time passed in.

A key is ``oyez1.<payload>.<signature>``: ``payload`` is the base64url of the compact JSON of
:class:`~license_proxy.terms.LicenseTerms`, ``signature`` the base64url of the Ed25519 signature
over the ASCII bytes ``oyez1.<payload>``. Both parts must be canonical base64url, so no two strings
carry the same key. Verification needs only the issuer's public key.

Every way a key can be wrong has its own error type and ``reason`` code, and the message says what
to do about it. Any string at all gets either terms or a :class:`LicenseKeyError`; nothing else
escapes (the parser is fuzzed).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import ValidationError

from license_proxy.issuer import (
    IssuerKeyError,
    IssuerKeyPair,
    IssuerPublicKey,
    b64url_decode,
    b64url_encode,
    development_public_key,
    parse_public_key,
)
from license_proxy.terms import KEY_FORMAT_VERSION, LicenseTerms, iso, normalise_features, normalise_limits
from oyez.errors import OyezError

KEY_PREFIX = "oyez1."
MAX_KEY_CHARS = 8192
SIGNATURE_BYTES = 64
_SIGNATURE_CHARS = 86  # base64url of 64 bytes, unpadded
_KEY_ALPHABET = re.compile(r"[A-Za-z0-9_\-.]*")
_OTHER_VERSION = re.compile(r"^oyez(\d+)\.")
NOT_BEFORE_LEEWAY = timedelta(minutes=5)


# --- errors -----------------------------------------------------------------------------------------
class LicenseKeyError(OyezError):
    """A presented or configured key is not usable. HTTP: 401 ``INVALID_LICENSE`` (unless expired)."""

    code = "INVALID_LICENSE"
    reason: ClassVar[str] = "KEY_INVALID"
    public_error: ClassVar[str] = "Invalid license key"

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.public_error, "code": self.code, "reason": self.reason, "detail": self.message}


class KeyMissing(LicenseKeyError):
    reason = "KEY_MISSING"


class KeyMalformed(LicenseKeyError):
    reason = "KEY_MALFORMED"


class KeyTruncated(LicenseKeyError):
    reason = "KEY_TRUNCATED"


class KeyUnsupportedVersion(LicenseKeyError):
    reason = "KEY_UNSUPPORTED_VERSION"


class KeyForged(LicenseKeyError):
    reason = "KEY_FORGED"


class KeyUnknownIssuer(LicenseKeyError):
    reason = "KEY_UNKNOWN_ISSUER"


class KeyDevelopmentIssuer(LicenseKeyError):
    reason = "KEY_DEVELOPMENT_ISSUER"


class KeyNotYetValid(LicenseKeyError):
    reason = "KEY_NOT_YET_VALID"


class KeyRevoked(LicenseKeyError):
    reason = "KEY_REVOKED"


class LicenseMismatch(LicenseKeyError):
    reason = "LICENSE_MISMATCH"


class LicenseUnconfirmed(LicenseKeyError):
    """A license server is configured but has never confirmed this license and cannot be reached."""

    reason = "LICENSE_UNCONFIRMED"


class LicenseExpired(LicenseKeyError):
    """The key's own expiry, or the offline grace period, has passed. HTTP: 403 ``LICENSE_EXPIRED``."""

    code = "LICENSE_EXPIRED"
    reason = "KEY_EXPIRED"
    public_error = "License expired"

    def __init__(self, message: str, *, expires_at: datetime) -> None:
        super().__init__(message)
        self.expires_at = expires_at

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "expires_at": iso(self.expires_at)}


class GracePeriodExpired(LicenseExpired):
    """The license server has been unreachable for longer than the offline grace period."""

    reason = "GRACE_PERIOD_EXPIRED"


# --- trust ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrustPolicy:
    """Which issuer keys verify licenses here, and whether this is production."""

    trusted: tuple[IssuerPublicKey, ...]
    production: bool = False

    @classmethod
    def from_config(cls, public_keys: list[str], *, production: bool) -> TrustPolicy:
        """Outside production an empty list trusts the development key; in production it is an error,
        and so is listing the development key."""
        try:
            keys = tuple(parse_public_key(text) for text in public_keys)
        except IssuerKeyError as exc:
            raise IssuerKeyError(f"OYEZ_LICENSE_PUBLIC_KEY: {exc}") from None
        dev = development_public_key()
        if production:
            if not keys:
                raise IssuerKeyError(
                    "OYEZ_ENV=production needs OYEZ_LICENSE_PUBLIC_KEY (your issuer's public key from "
                    "'oyez license keygen'); the development key is not trusted in production"
                )
            if any(key.raw == dev.raw for key in keys):
                raise IssuerKeyError(
                    "OYEZ_LICENSE_PUBLIC_KEY lists the development issuer key, which is refused with "
                    "OYEZ_ENV=production; configure your own issuer's public key"
                )
        return cls(keys or (dev,), production)

    def key_for(self, fingerprint: str) -> IssuerPublicKey | None:
        return next((key for key in self.trusted if key.fingerprint == fingerprint), None)


# --- format -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParsedKey:
    """A key split into its parts; nothing about it is trusted yet."""

    signed_message: bytes
    payload: bytes
    signature: bytes


def parse_key(text: str) -> ParsedKey:
    """Split and decode a key's parts, or raise the error that names what is structurally wrong."""
    key = text.strip()
    if not key:
        raise KeyMissing("no license key given")
    if len(key) > MAX_KEY_CHARS:
        raise KeyMalformed(f"license key is {len(key)} characters; a valid key is far shorter")
    other = _OTHER_VERSION.match(key)
    if other and other.group(1) != str(KEY_FORMAT_VERSION):
        raise KeyUnsupportedVersion(
            f"key format oyez{other.group(1)} is not supported by this version (it reads oyez1); "
            "upgrade Oyez or ask for an oyez1 key"
        )
    if not key.startswith(KEY_PREFIX):
        if KEY_PREFIX.startswith(key):
            raise KeyTruncated("license key is cut off after its prefix; copy the whole key")
        raise KeyMalformed("not an Oyez license key: expected 'oyez1.<payload>.<signature>'")
    bad = _KEY_ALPHABET.fullmatch(key)
    if bad is None:
        position = next(i for i, char in enumerate(key) if not _KEY_ALPHABET.fullmatch(char))
        raise KeyMalformed(
            f"license key has a character outside base64url at position {position} "
            "(was it quoted, wrapped over lines or pasted with spaces?)"
        )
    parts = key[len(KEY_PREFIX) :].split(".")
    if len(parts) == 1:
        raise KeyTruncated("license key has no signature part: it looks cut off; copy the whole key")
    if len(parts) > 2:
        raise KeyMalformed(
            "license key has too many '.'-separated parts; expected 'oyez1.<payload>.<signature>'"
        )
    payload_text, signature_text = parts
    if not payload_text:
        raise KeyMalformed("license key has an empty payload part")
    if len(signature_text) < _SIGNATURE_CHARS:
        raise KeyTruncated(
            f"license key signature is {len(signature_text)} of {_SIGNATURE_CHARS} characters: "
            "the key is cut off; copy the whole key"
        )
    if len(signature_text) > _SIGNATURE_CHARS:
        raise KeyMalformed("license key signature part is too long; copy the key exactly as issued")
    try:
        signature = b64url_decode(signature_text)
        payload = b64url_decode(payload_text)
    except ValueError as exc:
        raise KeyMalformed(f"license key is not valid base64url ({exc})") from None
    signed_message = f"{KEY_PREFIX}{payload_text}".encode("ascii")
    return ParsedKey(signed_message=signed_message, payload=payload, signature=signature)


def _peek_issuer(payload: bytes) -> str | None:
    """The issuer fingerprint a payload claims (untrusted; only used to word an error)."""
    try:
        claimed = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    issuer = claimed.get("issuer") if isinstance(claimed, dict) else None
    return issuer if isinstance(issuer, str) else None


def _check_signature(parsed: ParsedKey, policy: TrustPolicy) -> None:
    if any(key.verifies(parsed.signature, parsed.signed_message) for key in policy.trusted):
        return
    dev = development_public_key()
    if policy.production and dev.verifies(parsed.signature, parsed.signed_message):
        raise KeyDevelopmentIssuer(
            "license key is signed by the development issuer key, which is refused with "
            "OYEZ_ENV=production; use a key issued with your production issuer key"
        )
    claimed = _peek_issuer(parsed.payload)
    if claimed is not None and policy.key_for(claimed) is None:
        trusted = ", ".join(key.fingerprint for key in policy.trusted)
        raise KeyUnknownIssuer(
            f"license key names issuer {claimed[:16]!r}, which is not trusted here (trusted: {trusted}); "
            "set OYEZ_LICENSE_PUBLIC_KEY to the issuer's public key"
        )
    raise KeyForged(
        "license key signature does not verify: the key was altered or not issued by the trusted issuer"
    )


def verify_key(text: str, policy: TrustPolicy, now: datetime) -> LicenseTerms:
    """Terms of a genuine key that is valid at ``now``, or the specific :class:`LicenseKeyError`."""
    terms = verify_signature(text, policy)
    check_validity_window(terms, now)
    return terms


def check_validity_window(terms: LicenseTerms, now: datetime) -> None:
    """Raise :class:`KeyNotYetValid` or :class:`LicenseExpired` unless ``now`` is inside the terms."""
    if now + NOT_BEFORE_LEEWAY < terms.valid_from:
        raise KeyNotYetValid(f"license key is not valid before {iso(terms.valid_from)}; check the clock")
    if now >= terms.expires:
        raise LicenseExpired(
            f"license key expired at {iso(terms.expires)}; ask for a renewed key", expires_at=terms.expires
        )


def verify_signature(text: str, policy: TrustPolicy) -> LicenseTerms:
    """Terms of a genuine key regardless of time (``oyez license inspect`` shows expired terms too)."""
    parsed = parse_key(text)
    _check_signature(parsed, policy)
    try:
        claimed = json.loads(parsed.payload)
        return LicenseTerms.model_validate(claimed)
    except (ValueError, UnicodeDecodeError, RecursionError, ValidationError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise KeyMalformed(f"license key is signed but its terms are unreadable ({detail})") from None


# --- issuing ----------------------------------------------------------------------------------------
def new_license_id() -> str:
    return "lic_" + secrets.token_hex(8)


def issue_key(
    pair: IssuerKeyPair,
    *,
    customer: str,
    now: datetime,
    valid_for: timedelta,
    features: list[str] | tuple[str, ...],
    limits: dict[str, float] | None = None,
    license_id: str | None = None,
    not_before: datetime | None = None,
) -> str:
    """Sign new terms; validation errors (unknown feature, bad limit, ...) raise ``ValueError``."""
    if valid_for <= timedelta(0):
        raise ValueError("a license must be valid for a positive time (--days > 0)")
    start = not_before or now
    try:
        terms = LicenseTerms(
            version=KEY_FORMAT_VERSION,
            license_id=license_id or new_license_id(),
            customer=customer,
            issuer=pair.public.fingerprint,
            issued_at=int(now.timestamp()),
            not_before=int(start.timestamp()),
            expires_at=int((start + valid_for).timestamp()),
            features=normalise_features(tuple(features)),
            limits=normalise_limits(limits or {}),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{field}: {first['msg'].removeprefix('Value error, ')}") from None
    return sign_terms(pair, terms)


def sign_terms(pair: IssuerKeyPair, terms: LicenseTerms) -> str:
    payload = json.dumps(terms.model_dump(mode="json"), separators=(",", ":"), sort_keys=True)
    message = KEY_PREFIX + b64url_encode(payload.encode("utf-8"))
    return f"{message}.{b64url_encode(pair.sign(message.encode('ascii')))}"
