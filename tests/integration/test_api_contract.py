"""The API server's contract (api-contract.md C3-C7) against the real stack over real sockets:
redis-server, license server + proxy, a tiny.en worker, and ``oyez api`` as processes."""

from __future__ import annotations

import http.server
import io
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
import soundfile as sf
import soxr
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from tests.integration.api_stack import ApiStack, clear_limits, normalise
from tests.license_support import dev_key
from tests.speech_data import SPEECH_DIR
from tests.unit.test_audio import encode_av, wav_header

JFK = (SPEECH_DIR / "jfk.wav").read_bytes()
JFK_WORDS = "ask not what your country can do for you"
TIMEOUT = 120.0


@pytest.fixture(scope="module")
def stack(api_stack: ApiStack) -> ApiStack:
    return api_stack


@pytest.fixture
def client(stack: ApiStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=TIMEOUT) as http:
        yield http


def listen(client: httpx.Client, stack: ApiStack, audio: bytes = JFK, **fields: str) -> httpx.Response:
    return client.post(
        "/v1/listen", headers=stack.auth(), files={"audio": ("clip.wav", audio, "audio/wav")}, data=fields
    )


def assert_error(
    response: httpx.Response, status: int, code: str, error: str | None = None
) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    if error is not None:
        assert body["error"] == error, body
    assert isinstance(body["error"], str) and body["error"]
    return dict(body)


# --- C3 health ------------------------------------------------------------------------------------
def test_health_routes_when_everything_is_up(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "healthy"}
    detailed = client.get("/health", params={"detailed": "true"})
    assert detailed.status_code == 200
    body = detailed.json()
    assert set(body) == {"status", "components", "uptime_seconds", "version"}
    assert body["components"] == {
        "api_server": "healthy",
        "lightning_asr": "healthy",
        "license_proxy": "healthy",
        "redis": "healthy",
    }
    assert isinstance(body["uptime_seconds"], int) and re.match(r"^\d+\.\d+\.\d+", body["version"])
    for path in ("/health/asr", "/health/license", "/health/redis"):
        response = client.get(path)
        assert response.status_code == 200 and response.json()["status"] == "healthy", path
    assert client.get("/api/v1/health").status_code == 200
    ready = client.get("/healthz")
    assert ready.status_code == 200 and "true" in ready.text


def test_health_needs_no_auth_but_metrics_are_exposed(client: httpx.Client) -> None:
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "api_requests_total" in metrics.text and "api_queue_depth" in metrics.text


# --- C4 authentication ----------------------------------------------------------------------------
def test_missing_and_invalid_keys_get_401(client: httpx.Client, stack: ApiStack) -> None:
    before = len(stack.api.lines) if stack.api else 0
    missing = client.post("/v1/listen", files={"audio": ("a.wav", JFK, "audio/wav")})
    assert_error(missing, 401, "INVALID_LICENSE", "Invalid license key")
    garbage = client.post("/v1/listen", headers={"Authorization": "Token not-a-key"}, content=JFK)
    assert_error(garbage, 401, "INVALID_LICENSE", "Invalid license key")
    scheme = client.post("/v1/listen", headers={"Authorization": f"Basic {stack.key}"}, content=JFK)
    assert_error(scheme, 401, "INVALID_LICENSE")
    # A genuine key of another license is not this deployment's.
    other = client.post("/v1/listen", headers=stack.auth(dev_key()), content=JFK)
    assert_error(other, 401, "INVALID_LICENSE")
    assert other.json()["reason"] == "LICENSE_MISMATCH"
    # Keys never travel in query strings.
    query = client.post("/v1/listen", params={"token": stack.key}, content=JFK)
    assert_error(query, 401, "INVALID_LICENSE")
    assert missing.headers["WWW-Authenticate"].startswith("Token")
    assert stack.api is not None
    log = "\n".join(stack.api.lines[before:])
    assert "WARNING: Missing Authorization header" in log
    assert "WARNING: Invalid license key from 127.0.0.1" in log
    assert stack.key not in "\n".join(stack.api.lines)


def test_token_and_bearer_are_both_accepted(client: httpx.Client, stack: ApiStack) -> None:
    for scheme in ("Token", "Bearer", "token"):
        response = client.post(
            "/v1/listen", headers={**stack.auth(scheme=scheme), "Content-Type": "audio/wav"}, content=JFK
        )
        assert response.status_code == 200, (scheme, response.text)


def test_expired_key_gets_403_with_expiry(client: httpx.Client, stack: ApiStack) -> None:
    started = datetime.now(UTC) - timedelta(days=3)
    expired = dev_key(license_id=stack.license_id, now=started, not_before=started, days=1)
    response = client.post("/v1/listen", headers=stack.auth(expired), content=JFK)
    body = assert_error(response, 403, "LICENSE_EXPIRED", "License expired")
    assert str(body["expires_at"]).endswith("Z")


def test_unlicensed_feature_is_403(client: httpx.Client, stack: ApiStack) -> None:
    no_timestamps = dev_key(license_id=stack.license_id, features=["batch", "punctuation"])
    headers = stack.auth(no_timestamps)
    plain = client.post("/v1/listen", headers=headers, files={"audio": ("a.wav", JFK, "audio/wav")})
    assert plain.status_code == 200
    timed = client.post(
        "/v1/listen",
        headers=headers,
        files={"audio": ("a.wav", JFK, "audio/wav")},
        data={"timestamps": "true"},
    )
    body = assert_error(timed, 403, "FEATURE_NOT_LICENSED")
    assert body["feature"] == "timestamps"


# --- C5/C6 /v1/listen -----------------------------------------------------------------------------
def test_multipart_transcription_has_exactly_the_documented_fields(
    client: httpx.Client, stack: ApiStack
) -> None:
    response = listen(client, stack)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"request_id", "text", "confidence", "duration", "language"}
    assert body["request_id"].startswith("req_") and response.headers["X-Request-ID"] == body["request_id"]
    assert JFK_WORDS in normalise(body["text"])
    assert 0.0 <= body["confidence"] <= 1.0
    assert body["duration"] == pytest.approx(11.0, abs=0.1)
    assert body["language"] == "en"


def test_timestamps_give_monotonic_words(client: httpx.Client, stack: ApiStack) -> None:
    body = listen(client, stack, timestamps="true").json()
    words = body["words"]
    assert len(words) >= 20
    assert all(set(w) == {"word", "start", "end", "confidence"} for w in words)
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert all(w["start"] <= w["end"] <= body["duration"] + 0.05 for w in words)
    assert JFK_WORDS in normalise(" ".join(w["word"] for w in words))


def test_punctuate_false_removes_punctuation(client: httpx.Client, stack: ApiStack) -> None:
    punctuated = listen(client, stack).json()["text"]
    plain = listen(client, stack, punctuate="false").json()["text"]
    assert re.search(r"[.,?!]", punctuated)
    assert not re.search(r"[.,?!;:]", plain)
    assert normalise(plain) == normalise(punctuated)


def test_raw_bodies_and_formats(client: httpx.Client, stack: ApiStack) -> None:
    samples, rate = sf.read(io.BytesIO(JFK), dtype="float32")
    flac = io.BytesIO()
    sf.write(flac, samples, rate, format="FLAC")
    stereo_44k = soxr.resample(np.stack([samples, samples], axis=1), rate, 44100)
    variants = {
        "application/octet-stream": JFK,
        "audio/flac": flac.getvalue(),
        "audio/mpeg": encode_av(samples, rate, "mp3", "libmp3lame", 64000),
        "audio/ogg": encode_av(samples, rate, "ogg", "libopus", 32000).__class__(
            encode_av(soxr.resample(samples, rate, 48000), 48000, "ogg", "libopus", 32000)
        ),
        "audio/mp4": encode_av(samples, rate, "mp4", "aac", 64000),
        "audio/wav": _wav(stereo_44k, 44100),
    }
    for content_type, data in variants.items():
        response = client.post(
            "/v1/listen", headers={**stack.auth(), "Content-Type": content_type}, content=data
        )
        assert response.status_code == 200, (content_type, response.text)
        assert JFK_WORDS in normalise(response.json()["text"]), content_type


def test_telephony_8khz_is_accepted(client: httpx.Client, stack: ApiStack) -> None:
    samples, rate = sf.read(io.BytesIO(JFK), dtype="float32")
    phone = _wav(soxr.resample(samples, rate, 8000), 8000)
    response = listen(client, stack, phone)
    assert response.status_code == 200, response.text
    assert "your country" in normalise(response.json()["text"])


def test_options_in_query_string(client: httpx.Client, stack: ApiStack) -> None:
    response = client.post(
        "/v1/listen",
        params={"timestamps": "true", "language": "en"},
        headers={**stack.auth(), "Content-Type": "audio/wav"},
        content=JFK,
    )
    assert response.status_code == 200 and response.json()["words"]


def test_url_source(client: httpx.Client, stack: ApiStack) -> None:
    with _file_server({"/jfk.wav": JFK}) as base:
        response = client.post(
            "/v1/listen", headers=stack.auth(), json={"url": f"{base}/jfk.wav", "timestamps": True}
        )
        assert response.status_code == 200, response.text
        assert JFK_WORDS in normalise(response.json()["text"]) and response.json()["words"]
        missing = client.post("/v1/listen", headers=stack.auth(), json={"url": f"{base}/nope.wav"})
        body = assert_error(missing, 400, "URL_FETCH_FAILED")
        assert "404" in str(body["error"])


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/a.wav",
        "http://[::1]/a.wav",
        "http://127.0.0.2/a.wav",  # loopback, though not the allow-listed 127.0.0.1
        "file:///etc/passwd",
        "ftp://example.com/a.wav",
    ],
)
def test_url_ssrf_guard(client: httpx.Client, stack: ApiStack, url: str) -> None:
    response = client.post("/v1/listen", headers=stack.auth(), json={"url": url})
    assert_error(response, 400, "INVALID_PARAMETER")


def test_missing_and_conflicting_sources(client: httpx.Client, stack: ApiStack) -> None:
    neither = client.post("/v1/listen", headers=stack.auth(), json={})
    assert neither.json() == {
        "error": "Missing required parameter: url or audio file",
        "code": "MISSING_PARAMETER",
    }
    assert neither.status_code == 400
    empty_raw = client.post("/v1/listen", headers={**stack.auth(), "Content-Type": "audio/wav"}, content=b"")
    assert_error(empty_raw, 400, "MISSING_PARAMETER")
    both = client.post(
        "/v1/listen",
        headers=stack.auth(),
        files={"audio": ("a.wav", JFK, "audio/wav")},
        data={"url": "https://example.com/a.wav"},
    )
    assert_error(both, 400, "INVALID_PARAMETER")
    empty_part = client.post("/v1/listen", headers=stack.auth(), files={"audio": ("a.wav", b"", "audio/wav")})
    assert_error(empty_part, 400, "EMPTY_AUDIO")


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, "INVALID_PARAMETER"),
        ({"content": b"[1, 2]", "headers": {"Content-Type": "application/json"}}, "INVALID_PARAMETER"),
        ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, "INVALID_PARAMETER"),
        ({"json": {"url": 5}}, "INVALID_PARAMETER"),
        ({"json": {"url": "https://example.com/a.wav", "speed": 2}}, "INVALID_PARAMETER"),
        ({"json": {"url": "https://example.com/a.wav", "punctuate": "maybe"}}, "INVALID_PARAMETER"),
        ({"json": {"url": "https://example.com/a.wav", "language": "english!"}}, "INVALID_PARAMETER"),
        ({"json": {"url": "https://example.com/a.wav", "num_speakers": 2}}, "INVALID_PARAMETER"),
        (
            {"json": {"url": "https://example.com/a.wav", "diarize": True, "num_speakers": 0}},
            "INVALID_PARAMETER",
        ),
        ({"json": {"url": "https://example.com/a.wav", "diarize": "often"}}, "INVALID_PARAMETER"),
        (
            # a callback to a cloud metadata address is refused by the SSRF guard at submit time
            {"json": {"url": "https://example.com/a.wav", "callback_url": "http://169.254.169.254/h"}},
            "INVALID_PARAMETER",
        ),
        (
            {"json": {"url": "https://example.com/a.wav", "callback_url": "ftp://example.com/h"}},
            "INVALID_PARAMETER",
        ),
        ({"json": {"url": "https://example.com/a.wav", "audio": "AAAA"}}, "INVALID_PARAMETER"),
        (
            {
                "content": b'--x\r\nContent-Disposition: form-data; name="audio"\r\n\r\nabc',
                "headers": {"Content-Type": "multipart/form-data; boundary=x"},
            },
            "INVALID_PARAMETER",
        ),
        ({"content": b"abc", "headers": {"Content-Type": "multipart/form-data"}}, "INVALID_PARAMETER"),
    ],
)
def test_malformed_requests_get_400(
    client: httpx.Client, stack: ApiStack, kwargs: dict[str, object], code: str
) -> None:
    headers = {**stack.auth(), **dict(kwargs.pop("headers", {}))}  # type: ignore[call-overload]
    response = client.post("/v1/listen", headers=headers, **kwargs)  # type: ignore[arg-type]
    body = assert_error(response, 400, code)
    assert len(str(body.get("detail") or body["error"])) > 10


def test_unknown_query_option_and_repeated_option(client: httpx.Client, stack: ApiStack) -> None:
    headers = {**stack.auth(), "Content-Type": "audio/wav"}
    assert_error(client.post("/v1/listen?modle=x", headers=headers, content=JFK), 400, "INVALID_PARAMETER")
    repeated = client.post("/v1/listen?language=en&language=fr", headers=headers, content=JFK)
    assert_error(repeated, 400, "INVALID_PARAMETER")
    unsupported = client.post("/v1/listen?language=fr", headers=headers, content=JFK)
    assert_error(unsupported, 400, "UNSUPPORTED_LANGUAGE")


@pytest.mark.parametrize(
    "data",
    [
        b"\x1a\x45\xdf\xa3" + b"\x00" * 64,  # WebM/Matroska
        b"%PDF-1.7\n" + b"x" * 64,
        b"just some text, not audio at all",
        bytes(range(256)) * 4,
    ],
)
def test_unsupported_formats_get_415(client: httpx.Client, stack: ApiStack, data: bytes) -> None:
    body = assert_error(listen(client, stack, data), 415, "UNSUPPORTED_FORMAT", "Unsupported audio format")
    assert body["supported_formats"] == ["wav", "mp3", "flac", "ogg", "m4a"]


def test_corrupt_and_truncated_audio(client: httpx.Client, stack: ApiStack) -> None:
    assert_error(listen(client, stack, JFK[:30]), 415, "CORRUPT_AUDIO", "Unsupported audio format")
    header_only = wav_header(16000, 1, 16, 32000)
    assert_error(listen(client, stack, header_only), 400, "EMPTY_AUDIO")
    samples, rate = sf.read(io.BytesIO(JFK), dtype="float32")
    mp3 = encode_av(samples, rate, "mp3", "libmp3lame", 64000)
    damaged = mp3[:2000] + bytes(len(mp3) - 2000)
    assert listen(client, stack, damaged).status_code in (200, 400, 415)  # never a 5xx


def test_audio_longer_than_two_hours_is_422(client: httpx.Client, stack: ApiStack) -> None:
    header = wav_header(8000, 1, 16, 2 * 8000 * (2 * 3600 + 10))
    body = assert_error(
        listen(client, stack, header + b"\x00" * 64000), 422, "AUDIO_TOO_LONG", "Audio too long"
    )
    assert body["max_duration_s"] == 7200


def test_file_over_100mb_is_422_before_it_is_buffered(client: httpx.Client, stack: ApiStack) -> None:
    chunk = b"\x00" * (1024 * 1024)
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield wav_header(16000, 1, 16, 200 * 1024 * 1024)
        for _ in range(200):
            sent += len(chunk)
            yield chunk

    try:
        response = client.post(
            "/v1/listen", headers={**stack.auth(), "Content-Type": "audio/wav"}, content=body()
        )
    except httpx.HTTPError:
        pytest.fail("the server should answer 422, not drop the connection")
    payload = assert_error(response, 422, "FILE_TOO_LARGE", "Audio file too large")
    assert payload["max_size_mb"] == 100


def test_request_id_is_propagated_to_worker(client: httpx.Client, stack: ApiStack) -> None:
    response = client.post(
        "/v1/listen",
        headers={**stack.auth(), "Content-Type": "audio/wav", "X-Request-ID": "req_contract_trace_42"},
        content=JFK,
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "req_contract_trace_42"
    assert response.json()["request_id"] == "req_contract_trace_42"
    # The log lines are written as the response goes out: read them once they have arrived.
    patterns = [
        r"INFO: POST /v1/listen from 127\.0\.0\.1 .*request_id=req_contract_trace_42",
        r"INFO: Response time: \d+\.\d+s .*request_id=req_contract_trace_42",
        r"INFO: Status: 200 OK .*request_id=req_contract_trace_42",
    ]
    assert stack.api is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(re.search(p, stack.api.log) for p in patterns):
        time.sleep(0.05)
    for pattern in patterns:
        assert re.search(pattern, stack.api.log), pattern
    assert "Request received: req_contract_trace_42" in stack.workers[0].proc.log


def test_rate_limit_429_with_retry_after(client: httpx.Client, stack: ApiStack, redis_server: str) -> None:
    clear_limits(redis_server, stack.license_id)
    limited = stack.issue_key(requests_per_minute=2)
    headers = {**stack.auth(limited), "Content-Type": "audio/wav"}
    try:
        assert client.post("/v1/listen", headers=headers, content=JFK).status_code == 200
        assert client.post("/v1/listen", headers=headers, content=JFK).status_code == 200
        refused = client.post("/v1/listen", headers=headers, content=JFK)
        body = assert_error(refused, 429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded")
        assert 1 <= int(body["retry_after"]) <= 60
        assert refused.headers["Retry-After"] == str(body["retry_after"])
    finally:
        clear_limits(redis_server, stack.license_id)


def test_usage_events_reach_the_license_server(client: httpx.Client, stack: ApiStack) -> None:
    db = stack.tmp / "server.sqlite3"
    before = _usage_count(db)
    assert listen(client, stack).status_code == 200
    assert_error(listen(client, stack, b"not audio at all"), 415, "UNSUPPORTED_FORMAT")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _usage_count(db) < before + 2:
        time.sleep(0.3)
    assert _usage_count(db) >= before + 2


# --- C7 COMPAT ------------------------------------------------------------------------------------
def test_compat_get_text(client: httpx.Client, stack: ApiStack) -> None:
    headers = {**stack.auth(), "Content-Type": "application/octet-stream"}
    plain = client.post("/api/v1/lightning/get_text", headers=headers, content=JFK)
    assert plain.status_code == 200, plain.text
    body = plain.json()
    assert body["status"] == "success" and JFK_WORDS in normalise(body["transcription"])
    assert body["words"] == []
    assert body["audio_length"] == pytest.approx(11.0, abs=0.1)
    assert body["metadata"] == {"duration": body["audio_length"], "fileSize": len(JFK)}
    assert body["utterances"] and all(set(u) == {"text", "start", "end"} for u in body["utterances"])
    assert "age" not in body
    timed = client.post(
        "/api/v1/lightning/get_text",
        params={"word_timestamps": "true", "language": "en", "gender_detection": "true"},
        headers=headers,
        content=JFK,
    ).json()
    assert timed["words"] and set(timed["words"][0]) == {"word", "start", "end"}
    assert timed["gender"] is None
    unauthenticated = client.post("/api/v1/lightning/get_text", content=JFK)
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"] == "Invalid license key"
    webhook = client.post(
        "/api/v1/lightning/get_text",
        params={"webhook_url": "https://example.com/h"},
        headers=headers,
        content=JFK,
    )
    assert webhook.status_code == 400 and webhook.json()["code"] == "FEATURE_NOT_AVAILABLE"


def test_compat_oversized_is_413(client: httpx.Client, stack: ApiStack) -> None:
    big = b"\x00" * (100 * 1024 * 1024 + 1)
    response = client.post(
        "/api/v1/lightning/get_text", headers={**stack.auth(), "Content-Type": "audio/wav"}, content=big
    )
    assert response.status_code == 413 and response.json()["code"] == "FILE_TOO_LARGE"


def test_openapi_describes_the_routes(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    listen_op = schema["paths"]["/v1/listen"]["post"]
    assert set(listen_op["requestBody"]["content"]) >= {"multipart/form-data", "application/json", "audio/*"}
    assert {"200", "400", "401", "415", "422", "429", "503"} <= set(listen_op["responses"])
    assert "/api/v1/lightning/get_text" in schema["paths"]
    assert "/health" in schema["paths"] and "/healthz" in schema["paths"]


# --- schemathesis: generated requests against /openapi.json ---------------------------------------
_CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_generated_requests_get_no_5xx_and_match_the_schema(
    stack: ApiStack, mode: schemathesis.GenerationMode
) -> None:
    """Every operation of ``/openapi.json``, with schemathesis-generated requests (valid ones, and
    ones that break the schema). Generated ``url`` values are pointed at a local server, so no
    request ever leaves this machine."""
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    exercised = 0
    with _file_server({"/jfk.wav": JFK}) as sink:
        for operation in operations:

            @settings(
                max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
            )
            @given(case=operation.as_strategy(mode))
            def exercise(case: schemathesis.Case) -> None:
                if isinstance(case.body, dict) and "url" in case.body:
                    case.body["url"] = f"{sink}/jfk.wav" if len(str(case.body["url"])) % 2 else f"{sink}/nope"
                case.call_and_validate(
                    base_url=stack.url, headers=stack.auth(), checks=_CHECKS, timeout=TIMEOUT
                )

            try:
                exercise()
            except Unsatisfiable:
                # Nothing about this operation can be broken (no parameters, no body).
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
                continue
            exercised += 1
    assert exercised >= (9 if mode is schemathesis.GenerationMode.POSITIVE else 3)


# --- helpers --------------------------------------------------------------------------------------
def _wav(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _usage_count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM usage_events").fetchone()[0])


class _FileServer(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _FileServer

    def do_GET(self) -> None:
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        return


class _Served:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.server = _FileServer(("127.0.0.1", 0), _Handler)
        self.server.files = files

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _file_server(files: dict[str, bytes]) -> _Served:
    return _Served(files)
