"""A corpus of bad input against the running API: every item gets its documented 4xx, never a
5xx, a hang or a dropped connection (api-contract.md C5, Decisions)."""

from __future__ import annotations

import contextlib
import gzip
import io
import socket

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.integration.api_stack import ApiStack
from tests.speech_data import SPEECH_DIR
from tests.unit.test_audio import wav_header

JFK = (SPEECH_DIR / "jfk.wav").read_bytes()


def _post(stack: ApiStack, data: bytes, content_type: str = "audio/wav", **headers: str) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/listen",
        headers={**stack.auth(), "Content-Type": content_type, **headers},
        content=data,
        timeout=120,
    )


def _long_silent_flac(seconds: int, rate: int = 8000) -> bytes:
    """A tiny file that decodes to hours of audio: the decompression-bomb shape."""
    buffer = io.BytesIO()
    block = np.zeros(rate * 60, dtype=np.int16)
    with sf.SoundFile(buffer, "w", samplerate=rate, channels=1, format="FLAC", subtype="PCM_16") as out:
        for _ in range(seconds // 60):
            out.write(block)
    return buffer.getvalue()


def test_decompression_bomb_is_refused_as_too_long(api_stack: ApiStack) -> None:
    bomb = _long_silent_flac(2 * 3600 + 120)
    assert len(bomb) < 2 * 1024 * 1024  # hours of audio in a couple of MB at most
    response = _post(api_stack, bomb, "audio/flac")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "AUDIO_TOO_LONG" and response.json()["max_duration_s"] == 7200


def test_wav_header_lying_about_size_is_refused_up_front(api_stack: ApiStack) -> None:
    lying = wav_header(48000, 2, 16, 0x7FFFFFF0) + b"\x00" * 4096
    response = _post(api_stack, lying)
    assert response.status_code in (400, 415, 422), response.text
    assert response.json()["code"] in ("AUDIO_TOO_LONG", "CORRUPT_AUDIO", "EMPTY_AUDIO")


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("zero bytes in a multipart part", b""),
        ("one byte", b"R"),
        ("RIFF without WAVE", b"RIFF\x24\x00\x00\x00AVI LIST"),
        ("gzip of a wav", gzip.compress(JFK)),
        ("PNG image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100),
        ("zip archive", b"PK\x03\x04" + b"\x00" * 100),
        ("html page", b"<!doctype html><html><body>hi</body></html>"),
        ("truncated wav", JFK[:1000]),
        ("wav with its middle zeroed", JFK[:44] + bytes(len(JFK) - 44)),
    ],
)
def test_bad_files_get_a_documented_4xx(api_stack: ApiStack, name: str, data: bytes) -> None:
    response = httpx.post(
        f"{api_stack.url}/v1/listen",
        headers=api_stack.auth(),
        files={"audio": ("bad.bin", data, "application/octet-stream")},
        timeout=120,
    )
    assert response.status_code < 500, (name, response.text)
    if response.status_code != 200:  # silence or a short-but-valid file may legitimately transcribe
        body = response.json()
        assert body["code"] in {"EMPTY_AUDIO", "UNSUPPORTED_FORMAT", "CORRUPT_AUDIO", "AUDIO_TOO_LONG"}, name
        assert body["error"] and (body.get("detail") or body["error"])


def test_gzip_content_encoding_is_not_decompressed(api_stack: ApiStack) -> None:
    response = _post(api_stack, gzip.compress(JFK), "audio/wav", **{"Content-Encoding": "gzip"})
    assert response.status_code == 415 and response.json()["code"] == "UNSUPPORTED_FORMAT"


def test_oversized_header_is_refused_cleanly(api_stack: ApiStack) -> None:
    host, port = "127.0.0.1", int(api_stack.url.rsplit(":", 1)[1])
    request = (f"GET /health HTTP/1.1\r\nHost: {host}\r\nX-Padding: {'a' * 200_000}\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=10) as sock:
        # The server may stop reading once the header is over its limit.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 4"), reply[:200]
    assert httpx.get(f"{api_stack.url}/health", timeout=10).status_code == 200


def test_oversized_authorization_header_is_401(api_stack: ApiStack) -> None:
    response = httpx.post(
        f"{api_stack.url}/v1/listen",
        headers={"Authorization": "Token " + "A" * 8000, "Content-Type": "audio/wav"},
        content=JFK,
        timeout=30,
    )
    assert response.status_code == 401 and response.json()["code"] == "INVALID_LICENSE"


def test_client_that_stops_mid_upload_does_not_hurt_the_server(api_stack: ApiStack) -> None:
    host, port = "127.0.0.1", int(api_stack.url.rsplit(":", 1)[1])
    head = (
        f"POST /v1/listen HTTP/1.1\r\nHost: {host}\r\nAuthorization: Token {api_stack.key}\r\n"
        f"Content-Type: audio/wav\r\nContent-Length: {len(JFK)}\r\n\r\n"
    ).encode()
    assert api_stack.api is not None
    before = len(api_stack.api.lines)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head + JFK[: len(JFK) // 3])
    # The server is unharmed and answers the next request normally.
    assert _post(api_stack, JFK).status_code == 200
    assert httpx.get(f"{api_stack.url}/health", timeout=10).status_code == 200
    # ...and logs the disconnect as what it is (499), not as an unhandled error with a traceback.
    api_stack.api.wait_for_line("Status: 499", timeout=10, after=before)
    logged = "\n".join(api_stack.api.lines[before:])
    assert "Client disconnected before its request was read" in logged
    assert "Unhandled error" not in logged and "Traceback" not in logged


def test_multipart_with_many_parts_or_huge_field_is_refused(api_stack: ApiStack) -> None:
    many = {f"field{i}": "x" for i in range(40)}
    response = httpx.post(
        f"{api_stack.url}/v1/listen",
        headers=api_stack.auth(),
        files={"audio": ("a.wav", JFK, "audio/wav")},
        data=many,
        timeout=60,
    )
    assert response.status_code == 400 and response.json()["code"] == "INVALID_PARAMETER"
    huge = httpx.post(
        f"{api_stack.url}/v1/listen",
        headers=api_stack.auth(),
        files={"audio": ("a.wav", JFK, "audio/wav")},
        data={"language": "e" * 100_000},
        timeout=60,
    )
    assert huge.status_code == 413 and huge.json()["code"] == "PAYLOAD_TOO_LARGE"
