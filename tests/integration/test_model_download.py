"""Model download against real loopback servers: a Range-capable ``http.server`` and moto's S3."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import queue
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog

from asr_worker.model.bundle import verify_bundle
from asr_worker.model.fetch import COMPLETE_MARKER, cache_key, resolve_model
from oyez.errors import ModelError
from oyez.logs import configure_logging
from tests.bundle_factory import make_archive, make_bundle

FAST: dict[str, Any] = {"progress": False, "backoff_base_s": 0.01, "timeout_s": 5.0}
_RANGE_RE = re.compile(r"^bytes=(\d+)-$")


# --- the HTTP server ------------------------------------------------------------------------------


@dataclass
class Seen:
    path: str
    range: str | None


@dataclass
class ServerState:
    """What the server serves and how it misbehaves; what it saw."""

    payload: bytes = b""
    status: int | None = None  # answer every request with this status (e.g. 404)
    fail_first: int = 0  # answer the first N requests with 500
    drop_after: int | None = None  # cut the first body after this many bytes
    ignore_range: bool = False
    delay_s: float = 0.0  # pause before sending a body
    requests: list[Seen] = field(default_factory=list)
    bytes_sent: int = 0
    dropped: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ModelServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr lines."""

    def do_GET(self) -> None:
        state = self.server.state
        with state.lock:
            state.requests.append(Seen(self.path, self.headers.get("Range")))
            number = len(state.requests)
        if state.status is not None or number <= state.fail_first:
            self._send_empty(state.status or 500)
            return
        start = self._range_start(state)
        if start is None:
            return
        body = state.payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(state.payload) - 1}/{len(state.payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        time.sleep(state.delay_s)
        self._send_body(state, body)

    def _range_start(self, state: ServerState) -> int | None:
        """The byte to start from; ``None`` when a 416 was already sent."""
        match = _RANGE_RE.match(self.headers.get("Range", ""))
        if match is None or state.ignore_range:
            return 0
        start = int(match.group(1))
        if start >= len(state.payload):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(state.payload)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return start

    def _send_body(self, state: ServerState, body: bytes) -> None:
        with state.lock:
            drop = state.drop_after is not None and not state.dropped
            state.dropped = state.dropped or drop
        if drop:
            assert state.drop_after is not None
            self.wfile.write(body[: state.drop_after])
            self.wfile.flush()
            state.bytes_sent += state.drop_after
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)
        state.bytes_sent += len(body)

    def _send_empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _ModelServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = ServerState()

    def url(self, path: str = "/model.tar.gz", userinfo: str = "", query: str = "") -> str:
        host, port = self.server_address[:2]
        return f"http://{userinfo}{host!s}:{port}{path}{query}"


@pytest.fixture
def server() -> Iterator[_ModelServer]:
    httpd = _ModelServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def archive(tmp_path: Path) -> bytes:
    """A gzipped bundle archive with a 256 KiB incompressible file, so a body can be cut in half."""
    make_bundle(tmp_path / "bundle-src", extra_random_bytes=256 * 1024)
    return make_archive(tmp_path / "bundle-src", tmp_path / "model.tar.gz").read_bytes()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(component="test", fmt="text", stream=stream)
    yield stream
    structlog.reset_defaults()


def _cache_entries(cache: Path) -> list[str]:
    """Everything in the cache but lock files (which may stay)."""
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) if cache.exists() else []


# --- HTTP -------------------------------------------------------------------------------------


def test_download_verify_and_cache_hit(
    server: _ModelServer, archive: bytes, tmp_path: Path, logs: io.StringIO
) -> None:
    server.state.payload = archive
    cache = tmp_path / "cache"
    path = resolve_model(server.url(), cache_dir=cache, **FAST)
    assert path == cache / cache_key(server.url())
    assert "weights.bin" in verify_bundle(path).files
    assert (path / COMPLETE_MARKER).is_file()
    assert _cache_entries(cache) == [path.name]  # no .part or staging left
    assert "Downloading model from URL..." in logs.getvalue()

    assert resolve_model(server.url(), cache_dir=cache, **FAST) == path
    assert len(server.state.requests) == 1  # the second call never reached the server
    assert "Model found in cache" in logs.getvalue()


def test_corrupted_cache_entry_is_fetched_again(
    server: _ModelServer, archive: bytes, tmp_path: Path, logs: io.StringIO
) -> None:
    server.state.payload = archive
    cache = tmp_path / "cache"
    path = resolve_model(server.url(), cache_dir=cache, **FAST)
    (path / "weights.bin").write_bytes(b"bit rot")
    assert resolve_model(server.url(), cache_dir=cache, **FAST) == path
    assert len(server.state.requests) == 2
    assert "Cached model failed verification" in logs.getvalue()
    verify_bundle(path)


def test_resume_after_dropped_connection(server: _ModelServer, archive: bytes, tmp_path: Path) -> None:
    half = len(archive) // 2
    server.state.payload, server.state.drop_after = archive, half
    path = resolve_model(server.url(), cache_dir=tmp_path / "cache", **FAST)
    verify_bundle(path)
    assert [seen.range for seen in server.state.requests] == [None, f"bytes={half}-"]
    assert server.state.bytes_sent == len(archive) < 2 * len(archive)


def test_server_ignoring_range_restarts_cleanly(server: _ModelServer, archive: bytes, tmp_path: Path) -> None:
    half = len(archive) // 2
    server.state.payload, server.state.drop_after, server.state.ignore_range = archive, half, True
    path = resolve_model(server.url(), cache_dir=tmp_path / "cache", **FAST)
    verify_bundle(path)
    assert server.state.requests[1].range == f"bytes={half}-"  # asked to resume, got a 200
    assert server.state.bytes_sent == half + len(archive)


def test_stale_part_from_crashed_process_is_resumed(
    server: _ModelServer, archive: bytes, tmp_path: Path
) -> None:
    server.state.payload = archive
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{cache_key(server.url())}.part").write_bytes(archive[:100_000])
    verify_bundle(resolve_model(server.url(), cache_dir=cache, **FAST))
    assert [seen.range for seen in server.state.requests] == ["bytes=100000-"]
    assert server.state.bytes_sent == len(archive) - 100_000


def test_complete_part_is_not_downloaded_again(server: _ModelServer, archive: bytes, tmp_path: Path) -> None:
    """A crash after the download but before extraction: the server answers 416, nothing re-sent."""
    server.state.payload = archive
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"{cache_key(server.url())}.part").write_bytes(archive)
    verify_bundle(resolve_model(server.url(), cache_dir=cache, **FAST))
    assert server.state.bytes_sent == 0


def test_transient_errors_are_retried(server: _ModelServer, archive: bytes, tmp_path: Path) -> None:
    server.state.payload, server.state.fail_first = archive, 2
    verify_bundle(resolve_model(server.url(), cache_dir=tmp_path / "cache", **FAST))
    assert len(server.state.requests) == 3


def test_gives_up_after_three_attempts_without_leaking_credentials(
    server: _ModelServer, archive: bytes, tmp_path: Path, logs: io.StringIO
) -> None:
    server.state.payload, server.state.fail_first = archive, 100
    url = server.url(userinfo="alice:hunter2@", query="?X-Amz-Signature=sig123")
    cache = tmp_path / "cache"
    with pytest.raises(ModelError) as excinfo:
        resolve_model(url, cache_dir=cache, **FAST)
    assert len(server.state.requests) == 3
    lines = logs.getvalue().splitlines()
    assert any(line.startswith("ERROR: Download failed after 3 attempts") for line in lines)
    assert "HTTP 500" in excinfo.value.message
    assert server.url() in excinfo.value.message
    for secret in ("hunter2", "alice", "sig123"):
        assert secret not in excinfo.value.message
        assert secret not in logs.getvalue()
    assert _cache_entries(cache) == []


def test_client_error_is_not_retried(server: _ModelServer, tmp_path: Path) -> None:
    server.state.status = 404
    url = server.url("/missing.tar.gz")
    with pytest.raises(ModelError) as excinfo:
        resolve_model(url, cache_dir=tmp_path / "cache", **FAST)
    assert excinfo.value.message == f"HTTP 404 for {url}"
    assert len(server.state.requests) == 1


def test_sha256_mismatch_caches_nothing(server: _ModelServer, archive: bytes, tmp_path: Path) -> None:
    server.state.payload = archive
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match="does not match MODEL_SHA256"):
        resolve_model(server.url(), cache_dir=cache, expected_sha256="0" * 64, **FAST)
    assert _cache_entries(cache) == []

    digest = hashlib.sha256(archive).hexdigest()
    path = resolve_model(server.url(), cache_dir=cache, expected_sha256=digest.upper(), **FAST)
    assert path.name == f"sha256-{digest}"
    verify_bundle(path)


def test_corrupt_manifest_hash_is_refused(server: _ModelServer, tmp_path: Path) -> None:
    make_bundle(tmp_path / "src")
    (tmp_path / "src" / "decoder.onnx").write_bytes(b"not what the manifest hashed")
    server.state.payload = make_archive(tmp_path / "src", tmp_path / "bad.tar.gz").read_bytes()
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match=r"decoder\.onnx"):
        resolve_model(server.url(), cache_dir=cache, **FAST)
    assert _cache_entries(cache) == []


def _resolve_in_child(url: str, cache_dir: str, barrier: Any, results: Any) -> None:
    """Spawned process: log to a buffer, start together with the sibling, report path + log."""
    stream = io.StringIO()
    configure_logging(component="child", fmt="text", stream=stream)
    barrier.wait(timeout=60)
    try:
        path = resolve_model(url, cache_dir=Path(cache_dir), **FAST)
        results.put((str(path), stream.getvalue(), None))
    except ModelError as exc:
        results.put((None, stream.getvalue(), exc.message))


def test_two_processes_share_one_download(server: _ModelServer, archive: bytes, tmp_path: Path) -> None:
    server.state.payload, server.state.delay_s = archive, 1.0
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    args = (server.url(), str(tmp_path / "cache"), barrier, results)
    children = [context.Process(target=_resolve_in_child, args=args) for _ in range(2)]
    for child in children:
        child.start()
    try:
        outcomes = [results.get(timeout=120) for _ in children]
    except queue.Empty:
        pytest.fail("a child process did not report")
    finally:
        for child in children:
            child.join(timeout=30)
    assert [error for _, _, error in outcomes] == [None, None]
    assert outcomes[0][0] == outcomes[1][0] == str(tmp_path / "cache" / cache_key(server.url()))
    assert len(server.state.requests) == 1
    assert server.state.bytes_sent == len(archive)
    child_logs = sorted((log for _, log, _ in outcomes), key=lambda log: "Downloading model" in log)
    waiter, downloader = child_logs
    assert "Downloading model from URL..." in downloader
    assert "Downloading model from URL..." not in waiter
    assert "Waiting for another process fetching the model" in waiter
    assert "Model found in cache" in waiter


# --- local sources ------------------------------------------------------------------------------


def test_file_url_archive_and_plain_path_directory(tmp_path: Path) -> None:
    make_bundle(tmp_path / "src")
    archive = make_archive(tmp_path / "src", tmp_path / "model.tgz", wrap=None)
    cache = tmp_path / "cache"
    from_file_url = resolve_model(archive.as_uri(), cache_dir=cache, **FAST)
    assert from_file_url.parent == cache
    verify_bundle(from_file_url)
    from_plain_path = resolve_model(str(archive), cache_dir=cache, **FAST)
    assert from_plain_path == from_file_url
    assert resolve_model(str(tmp_path / "src"), cache_dir=cache, **FAST) == tmp_path / "src"


# --- S3 (moto) ----------------------------------------------------------------------------------


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    pytest.importorskip("boto3", reason="boto3 (the s3 extra) is not installed")
    moto = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield endpoint
    finally:
        moto.stop()


def test_s3_download_resume_and_cache(
    s3_endpoint: str, archive: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="whisper/tiny.tar.gz", Body=archive)
    url = "s3://models/whisper/tiny.tar.gz"
    cache = tmp_path / "cache"
    cache.mkdir()
    half = len(archive) // 2
    (cache / f"{cache_key(url)}.part").write_bytes(archive[:half])  # a crashed download, resumed
    ranges: list[bytes | None] = []
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # restored afterwards, with our hook gone
    boto3.setup_default_session()  # resolve_model's client comes from this session: watch its GETs
    boto3.DEFAULT_SESSION.events.register(
        "before-send.s3.GetObject", lambda request, **_: ranges.append(request.headers.get("Range"))
    )

    path = resolve_model(url, cache_dir=cache, **FAST)
    assert ranges == [f"bytes={half}-".encode()]
    assert "weights.bin" in verify_bundle(path).files
    assert _cache_entries(cache) == [path.name]

    s3.delete_object(Bucket="models", Key="whisper/tiny.tar.gz")
    assert resolve_model(url, cache_dir=cache, **FAST) == path  # cache hit: S3 no longer needed


def test_s3_missing_object_is_not_retried(s3_endpoint: str, tmp_path: Path) -> None:
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="models")
    started = time.monotonic()
    with pytest.raises(ModelError, match=r"S3 .*404.* for s3://models/nope\.tar\.gz"):
        resolve_model("s3://models/nope.tar.gz", cache_dir=tmp_path / "cache", attempts=3, **FAST)
    assert time.monotonic() - started < 5
