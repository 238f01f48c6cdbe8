"""License keys: issuing, verification, and a distinct clear error for every kind of bad key."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from license_proxy.issuer import (
    IssuerKeyError,
    b64url_decode,
    b64url_encode,
    development_key_pair,
    development_public_key,
    generate_key_pair,
    parse_public_key,
)
from license_proxy.keys import (
    KEY_PREFIX,
    KeyDevelopmentIssuer,
    KeyMalformed,
    KeyMissing,
    KeyNotYetValid,
    KeyTruncated,
    KeyUnknownIssuer,
    KeyUnsupportedVersion,
    LicenseExpired,
    LicenseKeyError,
    TrustPolicy,
    issue_key,
    parse_key,
    sign_terms,
    verify_key,
)
from license_proxy.terms import DEFAULT_LIMITS, LicenseTerms, parse_limit_assignment
from tests.license_support import dev_key

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DEV_POLICY = TrustPolicy.from_config([], production=False)


def _reason(key: str, policy: TrustPolicy = DEV_POLICY, now: datetime = NOW) -> str:
    with pytest.raises(LicenseKeyError) as caught:
        verify_key(key, policy, now)
    return caught.value.reason


def test_issued_key_round_trips_with_all_terms() -> None:
    key = issue_key(
        development_key_pair(),
        customer="Acme GmbH",
        now=NOW,
        valid_for=timedelta(days=30),
        features=["streaming", "batch", "streaming"],
        limits={"requests_per_minute": 120},
        license_id="lic_acme000001",
    )
    terms = verify_key(key, DEV_POLICY, NOW + timedelta(days=29))
    assert key.startswith(KEY_PREFIX) and key.count(".") == 2
    assert terms.license_id == "lic_acme000001"
    assert terms.customer == "Acme GmbH"
    assert terms.features == ("batch", "streaming")
    assert terms.limits == {"requests_per_minute": 120, "concurrent_requests": 10, "audio_hours_per_day": 100}
    assert terms.expires == NOW + timedelta(days=30)
    assert terms.issuer == development_public_key().fingerprint


def test_default_limits_are_the_documented_ones() -> None:
    terms = verify_key(dev_key(now=NOW), DEV_POLICY, NOW)
    assert DEFAULT_LIMITS == {
        "requests_per_minute": 60,
        "concurrent_requests": 10,
        "audio_hours_per_day": 100,
    }
    assert terms.limits == DEFAULT_LIMITS


def test_expired_key_is_403_with_expiry_time() -> None:
    key = dev_key(now=NOW, days=1)
    with pytest.raises(LicenseExpired) as caught:
        verify_key(key, DEV_POLICY, NOW + timedelta(days=1))
    body = caught.value.to_dict()
    assert body["code"] == "LICENSE_EXPIRED" and body["error"] == "License expired"
    assert body["expires_at"] == "2026-11-26T12:00:00Z"
    assert body["reason"] == "KEY_EXPIRED"


def test_not_yet_valid_key_names_its_start() -> None:
    key = dev_key(now=NOW, not_before=NOW + timedelta(days=2))
    with pytest.raises(KeyNotYetValid, match="not valid before 2026-11-27T12:00:00Z"):
        verify_key(key, DEV_POLICY, NOW)
    assert verify_key(key, DEV_POLICY, NOW + timedelta(days=2)).customer == "Acme Test"


def test_small_clock_skew_on_start_is_tolerated() -> None:
    key = dev_key(now=NOW)
    assert verify_key(key, DEV_POLICY, NOW - timedelta(minutes=4)).customer == "Acme Test"


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (lambda k: "", KeyMissing),
        (lambda k: "   ", KeyMissing),
        (lambda k: "sk_live_abcdef", KeyMalformed),
        (lambda k: "oyez", KeyTruncated),
        (lambda k: k[:40], KeyTruncated),
        (lambda k: k[: k.rindex(".")], KeyTruncated),
        (lambda k: k[: k.rindex(".") + 1], KeyTruncated),
        (lambda k: k[:-10], KeyTruncated),
        (lambda k: k + "AAAA", KeyMalformed),
        (lambda k: k + ".extra", KeyMalformed),
        (lambda k: k[:50] + " " + k[50:], KeyMalformed),
        (lambda k: f'"{k}"', KeyMalformed),
        (lambda k: "oyez2." + k[len(KEY_PREFIX) :], KeyUnsupportedVersion),
        (lambda k: "oyez1..sig", KeyMalformed),
        (lambda k: k + "x" * 9000, KeyMalformed),
    ],
)
def test_structural_errors_are_distinct(mangle, error) -> None:  # type: ignore[no-untyped-def]
    key = dev_key(now=NOW)
    with pytest.raises(error) as caught:
        verify_key(mangle(key), DEV_POLICY, NOW)
    assert caught.value.code == "INVALID_LICENSE"
    assert caught.value.to_dict()["error"] == "Invalid license key"
    assert caught.value.message  # says what to fix


def test_surrounding_whitespace_is_forgiven() -> None:
    key = dev_key(now=NOW)
    assert verify_key(f"  {key}\n", DEV_POLICY, NOW).customer == "Acme Test"


def _payload(key: str) -> dict:  # type: ignore[type-arg]
    return json.loads(b64url_decode(key.split(".")[1]))


def _with_payload(key: str, payload: dict) -> str:  # type: ignore[type-arg]
    prefix, _, signature = key.split(".")
    body = b64url_encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{prefix}.{body}.{signature}"


def test_edited_terms_are_forged() -> None:
    key = dev_key(now=NOW, days=1)
    payload = _payload(key)
    payload["expires_at"] += 365 * 86400
    assert _reason(_with_payload(key, payload)) == "KEY_FORGED"
    payload = _payload(key)
    payload["limits"]["requests_per_minute"] = 100000
    assert _reason(_with_payload(key, payload)) == "KEY_FORGED"


def test_flipped_signature_byte_is_forged() -> None:
    key = dev_key(now=NOW)
    prefix, body, signature = key.split(".")
    raw = bytearray(b64url_decode(signature))
    raw[10] ^= 0x01
    assert _reason(f"{prefix}.{body}.{b64url_encode(bytes(raw))}") == "KEY_FORGED"


def test_non_canonical_base64_is_refused() -> None:
    key = dev_key(now=NOW)
    prefix, body, signature = key.split(".")
    # The last of 86 characters carries 2 data bits; setting a padding bit gives the same bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    twin = signature[:-1] + alphabet[last ^ 0x01]
    # A lenient decoder maps both strings to the same signature bytes; ours refuses the twin.
    assert base64.urlsafe_b64decode(twin + "==") == base64.urlsafe_b64decode(signature + "==")
    with pytest.raises(KeyMalformed, match="non-canonical"):
        parse_key(f"{prefix}.{body}.{twin}")


def test_key_from_an_untrusted_issuer_names_the_issuer() -> None:
    other = generate_key_pair()
    key = dev_key(now=NOW, pair=other)
    with pytest.raises(KeyUnknownIssuer, match=other.public.fingerprint):
        verify_key(key, DEV_POLICY, NOW)


def test_configured_issuer_replaces_the_development_key() -> None:
    own = generate_key_pair()
    policy = TrustPolicy.from_config([own.public.text], production=False)
    assert verify_key(dev_key(now=NOW, pair=own), policy, NOW).issuer == own.public.fingerprint
    assert _reason(dev_key(now=NOW), policy) == "KEY_UNKNOWN_ISSUER"


def test_production_refuses_development_keys() -> None:
    own = generate_key_pair()
    production = TrustPolicy.from_config([own.public.text], production=True)
    with pytest.raises(KeyDevelopmentIssuer, match="OYEZ_ENV=production"):
        verify_key(dev_key(now=NOW), production, NOW)
    assert verify_key(dev_key(now=NOW, pair=own), production, NOW).customer == "Acme Test"


def test_production_configuration_errors() -> None:
    with pytest.raises(IssuerKeyError, match="needs OYEZ_LICENSE_PUBLIC_KEY"):
        TrustPolicy.from_config([], production=True)
    with pytest.raises(IssuerKeyError, match="development issuer key"):
        TrustPolicy.from_config([development_public_key().text], production=True)
    with pytest.raises(IssuerKeyError, match="ed25519:"):
        TrustPolicy.from_config(["not-a-key"], production=False)


def test_key_rotation_trusts_several_issuers() -> None:
    old, new = generate_key_pair(), generate_key_pair()
    policy = TrustPolicy.from_config([old.public.text, new.public.text], production=True)
    for pair in (old, new):
        assert verify_key(dev_key(now=NOW, pair=pair), policy, NOW).issuer == pair.public.fingerprint


def test_signed_but_invalid_terms_are_reported_as_unreadable() -> None:
    pair = generate_key_pair()
    good = LicenseTerms(
        version=1,
        license_id="lic_000000000001",
        customer="x",
        issuer=pair.public.fingerprint,
        issued_at=0,
        not_before=0,
        expires_at=10,
        features=(),
        limits={},
    )
    # A future format version signed by a trusted issuer: genuine, but this build cannot read it.
    future = good.model_copy(update={"version": 2})
    policy = TrustPolicy.from_config([pair.public.text], production=False)
    with pytest.raises(KeyMalformed, match="version 2 is not supported"):
        verify_key(sign_terms(pair, future), policy, NOW)


@pytest.mark.parametrize(
    ("public_key", "message"),
    [
        ("ed25519:", "32 bytes"),
        ("ed25519:AAAA", "32 bytes"),
        ("ed25519:***", "base64url"),
        ("rsa:AAAA", "ed25519:"),
    ],
)
def test_bad_public_keys_say_what_is_wrong(public_key: str, message: str) -> None:
    with pytest.raises(IssuerKeyError, match=message):
        parse_public_key(public_key)


def test_issue_rejects_unknown_features_and_bad_limits() -> None:
    pair = generate_key_pair()
    with pytest.raises(ValueError, match=r"unknown feature.*known: batch"):
        issue_key(pair, customer="x", now=NOW, valid_for=timedelta(days=1), features=["telepathy"])
    with pytest.raises(ValueError, match="unknown limit"):
        issue_key(pair, customer="x", now=NOW, valid_for=timedelta(days=1), features=[], limits={"gpus": 2})
    with pytest.raises(ValueError, match="whole number"):
        issue_key(
            pair,
            customer="x",
            now=NOW,
            valid_for=timedelta(days=1),
            features=[],
            limits={"concurrent_requests": 2.5},
        )
    with pytest.raises(ValueError, match="positive time"):
        issue_key(pair, customer="x", now=NOW, valid_for=timedelta(0), features=[])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("requests_per_minute=120", ("requests_per_minute", 120.0)),
        (" audio_hours_per_day = 2.5", ("audio_hours_per_day", 2.5)),
    ],
)
def test_limit_assignment_parses(text: str, expected: tuple[str, float]) -> None:
    assert parse_limit_assignment(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("requests_per_minute", "name=value"),
        ("=5", "name=value"),
        ("gpus=2", "unknown limit"),
        ("requests_per_minute=lots", "needs a number"),
        ("requests_per_minute=0", "positive"),
        ("requests_per_minute=-3", "positive"),
        ("requests_per_minute=nan", "positive"),
        ("requests_per_minute=inf", "positive"),
    ],
)
def test_limit_assignment_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_limit_assignment(text)
