"""Fuzzing the key parser: any input gives terms or a LicenseKeyError, never another exception,
and no edit of a genuine key is accepted."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from license_proxy.keys import LicenseKeyError, TrustPolicy, verify_key
from tests.license_support import dev_key

NOW = datetime(2026, 11, 25, tzinfo=UTC)
POLICY = TrustPolicy.from_config([], production=False)
GENUINE = dev_key(now=NOW)
KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(text: str) -> str:
    try:
        return verify_key(text, POLICY, NOW).license_id
    except LicenseKeyError as exc:
        assert exc.reason and exc.message and exc.code in {"INVALID_LICENSE", "LICENSE_EXPIRED"}
        return exc.reason


@FUZZ
@given(st.text(max_size=2000))
def test_arbitrary_text_never_crashes(text: str) -> None:
    assert _outcome(text)


@FUZZ
@given(st.text(alphabet=KEY_CHARS, max_size=600).map(lambda body: "oyez1." + body))
def test_key_shaped_text_never_crashes(text: str) -> None:
    assert _outcome(text).startswith(("KEY_", "LICENSE_"))


@FUZZ
@given(st.integers(min_value=0, max_value=len(GENUINE) - 1), st.sampled_from(KEY_CHARS))
def test_any_single_character_edit_is_refused(position: int, char: str) -> None:
    edited = GENUINE[:position] + char + GENUINE[position + 1 :]
    if edited == GENUINE:
        return
    try:
        verify_key(edited, POLICY, NOW)
    except LicenseKeyError:
        return
    raise AssertionError(f"edited key accepted (position {position} -> {char!r})")


@FUZZ
@given(st.integers(min_value=0, max_value=len(GENUINE) - 1))
def test_every_truncation_is_refused(length: int) -> None:
    try:
        verify_key(GENUINE[:length], POLICY, NOW)
    except LicenseKeyError:
        return
    raise AssertionError(f"truncated key of length {length} accepted")


@FUZZ
@given(st.binary(max_size=800))
def test_arbitrary_bytes_as_payload_never_crash(payload: bytes) -> None:
    import base64

    body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    signature = GENUINE.split(".")[2]
    assert _outcome(f"oyez1.{body}.{signature}") in {"KEY_FORGED", "KEY_UNKNOWN_ISSUER", "KEY_MALFORMED"}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(st.dictionaries(st.sampled_from(["issuer", "license_id", "version", "x"]), JSON, max_size=4))
def test_json_payloads_with_a_stolen_signature_never_verify(payload: dict) -> None:  # type: ignore[type-arg]
    import base64
    import json

    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    assert _outcome(f"oyez1.{body}.{GENUINE.split('.')[2]}") in {
        "KEY_FORGED",
        "KEY_UNKNOWN_ISSUER",
        "KEY_MALFORMED",
    }
