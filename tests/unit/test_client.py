"""``oyez transcribe`` against a small fake API server on 127.0.0.1 (an ``http.server`` thread)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from oyez import client
from oyez.cli import build_parser

KEY = "oyez1.test-key.signature"
RESULT = {
    "request_id": "req_1",
    "text": "And so my fellow Americans.",
    "confidence": 0.9,
    "duration": 2.5,
    "language": "en",
    "words": [
        {"word": "And", "start": 0.0, "end": 0.25, "confidence": 0.9},
        {"word": "so", "start": 0.25, "end": 0.5, "confidence": 0.9},
    ],
}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeApi:
    """Answers every request with ``status`` and ``body``; keeps what it received."""

    url: str = ""
    status: int = 200
    body: Any = field(default_factory=lambda: dict(RESULT))
    requests: list[Recorded] = field(default_factory=list)

    @property
    def last(self) -> Recorded:
        return self.requests[-1]


def _handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            api.requests.append(Recorded("POST", self.path, headers, body))
            payload = api.body if isinstance(api.body, bytes) else json.dumps(api.body).encode()
            self.send_response(api.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield api
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(client.ENV_API_KEY, raising=False)
    monkeypatch.delenv(client.ENV_SERVER, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state-home"))


def run(*argv: str) -> int:
    args = build_parser().parse_args(["transcribe", *argv])
    code: int = args.handler(args)
    return code


def multipart_parts(content_type: str, body: bytes) -> dict[str, tuple[dict[str, str], bytes]]:
    """name -> (part headers, content), split by hand so the bytes are exactly what was sent."""
    boundary = content_type.split("boundary=", 1)[1].encode()
    assert body.endswith(b"--" + boundary + b"--\r\n")
    parts: dict[str, tuple[dict[str, str], bytes]] = {}
    for raw in body.split(b"--" + boundary)[1:-1]:
        head, _, content = raw.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        name = headers["Content-Disposition"].split('name="', 1)[1].split('"', 1)[0]
        parts[name] = (headers, content.removesuffix(b"\r\n"))
    return parts


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    path = tmp_path / "clip.wav"
    path.write_bytes(b"RIFF" + bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n")
    return path


def test_file_is_uploaded_as_multipart_audio_part_with_token(
    fake_api: FakeApi, audio: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(str(audio), "--server", fake_api.url, "--key", KEY) == 0

    request = fake_api.last
    assert request.path == "/v1/listen"
    assert request.headers["authorization"] == f"Token {KEY}"
    assert "transfer-encoding" not in request.headers
    assert int(request.headers["content-length"]) == len(request.body)
    parts = multipart_parts(request.headers["content-type"], request.body)
    headers, content = parts["audio"]
    assert content == audio.read_bytes()
    assert 'filename="clip.wav"' in headers["Content-Disposition"]
    assert parts["timestamps"][1] == b"false"
    assert parts["punctuate"][1] == b"true"
    assert parts["language"][1] == b"en"
    assert capsys.readouterr().out == "And so my fellow Americans.\n"


def test_options_become_form_fields(fake_api: FakeApi, audio: Path) -> None:
    assert run(str(audio), "--server", fake_api.url, "--key", KEY, "--no-punctuate", "--language", "de") == 0
    parts = multipart_parts(fake_api.last.headers["content-type"], fake_api.last.body)
    assert parts["punctuate"][1] == b"false"
    assert parts["language"][1] == b"de"


def test_large_file_shows_upload_progress_on_stderr(
    fake_api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(b"\x01" * (client.PROGRESS_THRESHOLD_BYTES + 300_000))
    assert run(str(big), "--server", fake_api.url, "--key", KEY) == 0
    parts = multipart_parts(fake_api.last.headers["content-type"], fake_api.last.body)
    assert parts["audio"][1] == big.read_bytes()
    captured = capsys.readouterr()
    assert "upload" in captured.err
    assert captured.out == "And so my fellow Americans.\n"


def test_small_file_has_no_progress_bar(
    fake_api: FakeApi, audio: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(str(audio), "--server", fake_api.url, "--key", KEY) == 0
    assert capsys.readouterr().err == ""


def test_body_parses_with_the_api_servers_multipart_reader(audio: Path) -> None:
    request_body = pytest.importorskip("api_server.request_body")
    upload = client.MultipartUpload(audio, {"timestamps": "true", "language": "en"})
    body = b"".join(upload.chunks())
    assert len(body) == upload.content_length()

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    parsed = asyncio.run(request_body.read_multipart(stream(), upload.content_type, 10 * 1024 * 1024))
    assert parsed.audio == audio.read_bytes()
    assert parsed.filename == "clip.wav"


def test_url_is_sent_as_json(fake_api: FakeApi) -> None:
    audio_url = "https://example.com/a.wav"
    assert run("--url", audio_url, "--server", fake_api.url, "--key", KEY, "--timestamps") == 0
    request = fake_api.last
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == f"Token {KEY}"
    assert json.loads(request.body) == {
        "url": audio_url,
        "timestamps": True,
        "punctuate": True,
        "language": "en",
    }


def test_json_output_is_pretty(fake_api: FakeApi, audio: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(audio), "--server", fake_api.url, "--key", KEY, "--json") == 0
    out = capsys.readouterr().out
    assert json.loads(out) == RESULT
    assert out.startswith("{\n  ")


def test_timestamps_print_one_line_per_word(
    fake_api: FakeApi, audio: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(str(audio), "--server", fake_api.url, "--key", KEY, "--timestamps") == 0
    assert capsys.readouterr().out == "0.00-0.25 And\n0.25-0.50 so\n"
    parts = multipart_parts(fake_api.last.headers["content-type"], fake_api.last.body)
    assert parts["timestamps"][1] == b"true"


def test_diarize_sends_the_options_and_prints_speaker_turns(
    fake_api: FakeApi, audio: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.body = {
        **RESULT,
        "speakers": [
            {"speaker": "SPEAKER_00", "text": "And so", "start": 0.0, "end": 0.5},
            {"speaker": "SPEAKER_01", "text": "my fellow Americans.", "start": 0.6, "end": 2.5},
        ],
    }
    assert run(str(audio), "--server", fake_api.url, "--key", KEY, "--diarize", "--num-speakers", "2") == 0
    parts = multipart_parts(fake_api.last.headers["content-type"], fake_api.last.body)
    assert (parts["diarize"][1], parts["num_speakers"][1]) == (b"true", b"2")
    assert capsys.readouterr().out == (
        "[   0.00-   0.50] SPEAKER_00: And so\n[   0.60-   2.50] SPEAKER_01: my fellow Americans.\n"
    )


def test_without_diarize_no_speaker_options_are_sent(fake_api: FakeApi, audio: Path) -> None:
    assert run(str(audio), "--server", fake_api.url, "--key", KEY) == 0
    parts = multipart_parts(fake_api.last.headers["content-type"], fake_api.last.body)
    assert "diarize" not in parts and "num_speakers" not in parts


def test_http_error_prints_error_code_and_detail(
    fake_api: FakeApi, audio: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.status = 401
    fake_api.body = {"error": "Invalid license key", "code": "INVALID_LICENSE", "detail": "key is forged"}
    assert run(str(audio), "--server", fake_api.url, "--key", KEY) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == "error: Invalid license key (INVALID_LICENSE): key is forged"
    assert captured.out == ""


def test_http_error_without_json_body(
    fake_api: FakeApi, audio: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_api.status = 502
    fake_api.body = b"Bad gateway"
    assert run(str(audio), "--server", fake_api.url, "--key", KEY) == 1
    assert capsys.readouterr().err.strip() == "error: HTTP 502: Bad gateway"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_suggests_oyez_up(audio: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = f"http://127.0.0.1:{_closed_port()}"
    assert run(str(audio), "--server", server, "--key", KEY) == 1
    err = capsys.readouterr().err
    assert "not running" in err
    assert "oyez up" in err
    assert server in err


def test_missing_file_exits_2(fake_api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.wav"
    assert run(str(missing), "--server", fake_api.url, "--key", KEY) == 2
    assert f"no such file: {missing}" in capsys.readouterr().err
    assert fake_api.requests == []


def test_directory_is_not_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(tmp_path), "--key", KEY) == 2
    assert "not a file" in capsys.readouterr().err


def test_no_key_anywhere_is_a_clear_error(
    fake_api: FakeApi, audio: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(str(audio), "--server", fake_api.url) == 2
    err = capsys.readouterr().err
    assert "no API key" in err
    assert "--key" in err and "OYEZ_API_KEY" in err
    assert fake_api.requests == []


def test_key_from_environment(fake_api: FakeApi, audio: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(client.ENV_API_KEY, "oyez1.from-env.sig")
    assert run(str(audio), "--server", fake_api.url) == 0
    assert fake_api.last.headers["authorization"] == "Token oyez1.from-env.sig"


def test_key_from_local_dev_key_file_without_creating_one(
    fake_api: FakeApi, audio: Path, tmp_path: Path
) -> None:
    from oyez.local_stack import default_state_dir, key_path

    state = default_state_dir()
    assert str(state).startswith(str(tmp_path))
    assert run(str(audio), "--server", fake_api.url) == 2
    assert not key_path(state).exists()

    state.mkdir(parents=True)
    key_path(state).write_text("oyez1.from-file.sig\n")
    assert run(str(audio), "--server", fake_api.url) == 0
    assert fake_api.last.headers["authorization"] == "Token oyez1.from-file.sig"


def test_server_from_environment(fake_api: FakeApi, audio: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(client.ENV_SERVER, fake_api.url + "/")
    assert run(str(audio), "--key", KEY) == 0
    assert fake_api.last.path == "/v1/listen"


def test_default_server() -> None:
    assert client.server_url(None, {}) == "http://localhost:7100"
    assert client.server_url(None, {"OYEZ_SERVER": "http://h:1/"}) == "http://h:1"
    assert client.server_url("http://x:2", {"OYEZ_SERVER": "http://h:1"}) == "http://x:2"


def test_filename_quotes_are_escaped(tmp_path: Path) -> None:
    path = tmp_path / 'we"ird.wav'
    path.write_bytes(b"abc")
    head = client.MultipartUpload(path, {}).head().decode()
    assert 'filename="we%22ird.wav"' in head
