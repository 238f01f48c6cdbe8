"""``api_server.url_fetch``: SSRF guard, redirects, size/time limits and s3:// against loopback servers.

Nothing leaves 127.0.0.1: refused targets are refused before a client is even built (asserted by
replacing the client factory), host names are resolved by a stub resolver, and S3 is moto's in-process
mock.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import ipaddress
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from api_server import url_fetch
from api_server.url_fetch import FetchPolicy, UrlFetchFailed, fetch_url
from oyez.errors import EmptyAudio, FileTooLarge, InvalidParameter, OyezError

WAV = b"RIFF" + (36 + 4000).to_bytes(4, "little") + b"WAVEfmt " + bytes(range(256)) * 16
LOOPBACK = FetchPolicy(allowed_hosts=frozenset({"127.0.0.1"}))
ENDLESS_CHUNK = b"\0" * 16384


class _State:
    """What the test server saw and did, shared with the tests."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.endless_sent = 0
        self.endless_stopped = threading.Event()
        self.stop = threading.Event()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State
    port: int

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log."""

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):  # the client under test hangs up early, on purpose
            super().handle()

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.state.paths.append(self.path)
        route = self.path.split("?", 1)[0]
        if route.startswith("/redirect/"):
            self._redirect_chain(int(route.rsplit("/", 1)[1]))
            return
        handler = _ROUTES.get(route)
        if handler is None:
            self._send(404, b"not here")
        else:
            handler(self)

    def _redirect_chain(self, left: int) -> None:
        # Alternate relative and absolute Locations; the last hop lands on the audio.
        if left <= 1:
            location = f"http://127.0.0.1:{self.port}/audio.wav"
        elif left % 2:
            location = f"/redirect/{left - 1}"
        else:
            location = f"../redirect/{left - 1}"
        self._send(302, headers={"Location": location})

    def audio(self) -> None:
        self._send(200, WAV, {"Content-Type": "audio/wav"})

    def echo_host(self) -> None:
        self._send(200, self.headers.get("Host", "").encode())

    def huge(self) -> None:
        self._send(200, b"x" * 100, {"Content-Length": str(10**12)})

    def empty(self) -> None:
        self._send(200, b"")

    def endless(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        frame = f"{len(ENDLESS_CHUNK):x}\r\n".encode() + ENDLESS_CHUNK + b"\r\n"
        try:
            while not self.state.stop.is_set() and self.state.endless_sent < 1 << 30:
                self.wfile.write(frame)
                self.state.endless_sent += len(ENDLESS_CHUNK)
        except OSError:
            pass
        finally:
            self.state.endless_stopped.set()
            self.close_connection = True

    def slow_headers(self) -> None:
        if not self.state.stop.wait(2.0):
            self._send(200, WAV)

    def trickle(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                if self.state.stop.wait(0.02):
                    return
                self.wfile.write(b"x")
                self.wfile.flush()
        except OSError:
            pass

    def gzip(self) -> None:
        self._send(200, b"\x1f\x8b compressed", {"Content-Encoding": "gzip"})

    def redirect_loop(self) -> None:
        self._send(301, headers={"Location": "/loop"})

    def redirect_no_location(self) -> None:
        self._send(302)

    def redirect_to(self, location: str) -> None:
        self._send(307, headers={"Location": location})


_ROUTES: dict[str, Callable[[_Handler], None]] = {
    "/audio.wav": _Handler.audio,
    "/echo-host": _Handler.echo_host,
    "/huge": _Handler.huge,
    "/empty": _Handler.empty,
    "/endless": _Handler.endless,
    "/slow-headers": _Handler.slow_headers,
    "/trickle": _Handler.trickle,
    "/gzip": _Handler.gzip,
    "/loop": _Handler.redirect_loop,
    "/no-location": _Handler.redirect_no_location,
    "/to-metadata": lambda h: h.redirect_to("http://169.254.169.254/latest/meta-data/"),
    "/to-loopback-name": lambda h: h.redirect_to(f"http://loopback.example:{h.port}/audio.wav"),
    "/to-private-name": lambda h: h.redirect_to("https://internal.example/audio.wav"),
    "/to-ftp": lambda h: h.redirect_to("ftp://127.0.0.1/audio.wav"),
    "/to-s3": lambda h: h.redirect_to("s3://bucket/audio.wav"),
}


class _Server:
    def __init__(self, state: _State, port: int) -> None:
        self.state = state
        self.port = port

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    state = _State()

    class Handler(_Handler):
        pass

    Handler.state = state
    handler = Handler
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    handler.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield _Server(state, handler.port)
    finally:
        state.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def no_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a refused URL ever gets as far as building an HTTP client."""

    def forbidden(policy: FetchPolicy) -> httpx.AsyncClient:
        raise AssertionError("an HTTP client was built for a URL that should have been refused")

    monkeypatch.setattr(url_fetch, "_client", forbidden)


def _stub_resolver(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Replace DNS with ``answers``; returns the list of names looked up."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    monkeypatch.setattr(url_fetch, "_resolve", resolve)
    return asked


class _Chunks(httpx.AsyncByteStream):
    """A response body that is streamed, as a network one is (``content=`` would be pre-read)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


def _fetch(url: str, policy: FetchPolicy = LOOPBACK, **kwargs: Any) -> bytes:
    return asyncio.run(fetch_url(url, policy, **kwargs))


def _fails(url: str, policy: FetchPolicy = LOOPBACK, **kwargs: Any) -> OyezError:
    with pytest.raises(OyezError) as excinfo:
        _fetch(url, policy, **kwargs)
    return excinfo.value


# --- success paths ---------------------------------------------------------------------------


def test_fetches_a_body(server: _Server) -> None:
    assert _fetch(server.url("/audio.wav")) == WAV


def test_default_policy_matches_the_upload_limit() -> None:
    policy = FetchPolicy()
    assert policy.max_bytes == 100 * 1024 * 1024
    assert (policy.max_redirects, policy.allow_private, policy.allowed_hosts) == (3, False, frozenset())


def test_connects_to_the_checked_address_with_the_real_host_header(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # audio.test is not resolvable by the system: only the stub knows it. Reaching the server proves
    # that the connection went to the checked IP, not to a second (rebindable) resolution.
    asked = _stub_resolver(monkeypatch, {"audio.test": ["127.0.0.1"]})
    policy = FetchPolicy(allowed_hosts=frozenset({"audio.test"}))
    body = _fetch(server.url("/echo-host", host="audio.test"), policy)
    assert body == f"audio.test:{server.port}".encode()
    assert asked == ["audio.test"]


def test_https_request_targets_the_ip_and_verifies_the_real_name(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=_Chunks([WAV]))

    def client(policy: FetchPolicy) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=False)

    monkeypatch.setattr(url_fetch, "_client", client)
    _stub_resolver(monkeypatch, {"audio.example.com": ["93.184.216.34"]})
    assert _fetch("https://audio.example.com/a.wav?sig=1", FetchPolicy()) == WAV
    (request,) = seen
    assert str(request.url) == "https://93.184.216.34/a.wav?sig=1"
    assert request.headers["Host"] == "audio.example.com"
    assert request.extensions["sni_hostname"] == "audio.example.com"
    assert request.headers["Accept-Encoding"] == "identity"


@pytest.mark.parametrize("hops", [1, 3])
def test_follows_redirects_up_to_the_limit(server: _Server, hops: int) -> None:
    before = len(server.state.paths)
    assert _fetch(server.url(f"/redirect/{hops}")) == WAV
    assert server.state.paths[before:] == [f"/redirect/{n}" for n in range(hops, 0, -1)] + ["/audio.wav"]


def test_refuses_too_many_redirects(server: _Server) -> None:
    before = len(server.state.paths)
    error = _fails(server.url("/redirect/4"))
    assert error.code == "INVALID_PARAMETER"
    assert "redirected more than 3 times" in error.message
    assert "/audio.wav" not in server.state.paths[before:]  # stopped before following the 5th hop


def test_redirect_limit_is_configurable(server: _Server) -> None:
    error = _fails(server.url("/redirect/1"), FetchPolicy(max_redirects=0, allow_private=True))
    assert error.code == "INVALID_PARAMETER"
    assert "more than 0 times" in error.message
    assert _fails(server.url("/loop")).code == "INVALID_PARAMETER"


# --- SSRF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "address_class"),
    [
        ("http://127.0.0.1:{port}/audio.wav", "loopback"),
        ("http://localhost:{port}/audio.wav", "loopback"),
        ("http://10.0.0.1/audio.wav", "private"),
        ("http://192.168.1.20/audio.wav", "private"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),
        ("http://[::1]:{port}/audio.wav", "loopback"),
        ("http://[::ffff:127.0.0.1]:{port}/audio.wav", "loopback"),
        ("http://[::ffff:10.1.2.3]/audio.wav", "private"),
        ("http://0.0.0.0:{port}/audio.wav", "unspecified"),
        ("http://100.64.0.1/audio.wav", "shared (CGNAT)"),
        ("http://[fe80::1]/audio.wav", "link-local"),
        ("http://224.0.0.1/audio.wav", "multicast"),
        # IPv4 inside 6to4 / NAT64: older Pythons call these global, newer reserved or private.
        ("http://[2002:7f00:1::]/audio.wav", ""),
        ("http://[64:ff9b::a00:1]/audio.wav", ""),
        ("https://2130706433/audio.wav", "loopback"),  # 127.0.0.1 in decimal, as getaddrinfo reads it
    ],
)
@pytest.mark.usefixtures("no_client")
def test_refuses_blocked_addresses(server: _Server, url: str, address_class: str) -> None:
    error = _fails(url.format(port=server.port), FetchPolicy())
    assert isinstance(error, InvalidParameter)
    assert error.code == "INVALID_PARAMETER"
    assert f"{address_class} address, which is blocked" in error.message
    assert "OYEZ_URL_ALLOWED_HOSTS" in error.message


@pytest.mark.usefixtures("no_client")
def test_refuses_a_name_resolving_to_a_private_address(monkeypatch: pytest.MonkeyPatch) -> None:
    _stub_resolver(monkeypatch, {"audio.example.com": ["10.20.30.40"]})
    error = _fails("https://audio.example.com/a.wav", FetchPolicy())
    assert error.code == "INVALID_PARAMETER"
    assert "'audio.example.com' is a private address" in error.message
    assert "10.20.30.40" not in error.message  # internal DNS answers are not disclosed


@pytest.mark.usefixtures("no_client")
def test_refuses_when_any_resolved_address_is_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    _stub_resolver(monkeypatch, {"mixed.example.com": ["93.184.216.34", "2606:4700::1", "127.0.0.1"]})
    error = _fails("http://mixed.example.com/a.wav", FetchPolicy())
    assert error.code == "INVALID_PARAMETER"
    assert "loopback" in error.message


@pytest.mark.usefixtures("no_client")
def test_dns_failure_is_a_fetch_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    _stub_resolver(monkeypatch, {})
    error = _fails("http://nowhere.example.com/a.wav", FetchPolicy())
    assert isinstance(error, UrlFetchFailed)
    assert error.code == "URL_FETCH_FAILED"
    assert "could not resolve the audio URL host 'nowhere.example.com'" in error.message


def test_cidr_allow_list(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _fetch(server.url("/audio.wav"), FetchPolicy(allowed_hosts=frozenset({"127.0.0.0/8"}))) == WAV
    error = _fails(server.url("/audio.wav"), FetchPolicy(allowed_hosts=frozenset({"10.0.0.0/8"})))
    assert error.code == "INVALID_PARAMETER"
    assert "loopback" in error.message
    _stub_resolver(monkeypatch, {"minio.internal": ["10.9.8.7"]})
    monkeypatch.setattr(url_fetch, "_client", lambda policy: pytest.fail("must not connect"))
    error = _fails("http://minio.internal/a.wav", FetchPolicy(allowed_hosts=frozenset({"192.168.0.0/16"})))
    assert "private" in error.message


def test_allow_private_lifts_the_block(server: _Server) -> None:
    assert _fetch(server.url("/audio.wav"), FetchPolicy(allow_private=True)) == WAV


@pytest.mark.parametrize(
    ("address", "allowed", "blocked"),
    [
        ("::ffff:127.0.0.1", {"127.0.0.1"}, None),  # mapped addresses are judged, and allowed, as IPv4
        ("::ffff:127.0.0.1", set(), "loopback"),
        ("::ffff:8.8.8.8", set(), None),
        ("10.1.2.3", {"10.0.0.0/8"}, None),
        ("10.1.2.3", {"10.0.0.0/24"}, "private"),
        ("fd12::1", {"fd00::/8"}, None),
        ("fd12::1", {"[fd12::1]"}, None),
        ("169.254.169.254", {"10.0.0.0/8"}, "cloud metadata"),
        ("8.8.8.8", set(), None),
        ("2606:4700::1", set(), None),
    ],
)
def test_block_reason(address: str, allowed: set[str], blocked: str | None) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset(allowed))
    assert url_fetch._block_reason("host.example", [address], policy) == blocked


def test_allowed_host_names_match_case_insensitively() -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({"MinIO.Internal."}))
    assert url_fetch._block_reason("minio.internal", ["10.0.0.5"], policy) is None
    assert url_fetch._block_reason("evil.internal", ["10.0.0.5"], policy) == "private"


@pytest.mark.parametrize(
    ("path", "address_class"),
    [
        ("/to-metadata", "cloud metadata"),
        ("/to-loopback-name", "loopback"),
        ("/to-private-name", "private"),
    ],
)
def test_redirect_targets_are_checked_again(
    server: _Server, monkeypatch: pytest.MonkeyPatch, path: str, address_class: str
) -> None:
    _stub_resolver(monkeypatch, {"loopback.example": ["127.0.0.2"], "internal.example": ["172.16.5.4"]})
    before = len(server.state.paths)
    error = _fails(server.url(path))  # only 127.0.0.1 itself is allowed
    assert error.code == "INVALID_PARAMETER"
    assert f"is a {address_class} address, which is blocked" in error.message
    assert error.message.startswith("the audio URL redirected to a URL we will not fetch: ")
    assert server.state.paths[before:] == [path]  # the blocked target was never requested


@pytest.mark.parametrize("path", ["/to-ftp", "/to-s3"])
def test_redirect_to_another_scheme_is_refused(server: _Server, path: str) -> None:
    error = _fails(server.url(path))
    assert error.code == "INVALID_PARAMETER"
    assert "must be http:// or https://" in error.message


# --- URL shape -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/a.wav", "scheme 'ftp' is not supported; use one of: http, https, s3"),
        ("file:///etc/passwd", "scheme 'file' is not supported"),
        ("gopher://127.0.0.1:6379/_INFO", "scheme 'gopher' is not supported"),
        ("javascript:alert(1)", "scheme 'javascript' is not supported"),
        ("http://user:secret@example.com/a.wav", "must not contain user information"),
        ("https://user@example.com/a.wav", "must not contain user information"),
        ("http://@example.com/a.wav", "must not contain user information"),
        ("//example.com/a.wav", "must be an absolute URL"),
        ("example.com/a.wav", "must be an absolute URL"),
        ("", "must be a non-empty URL"),
        ("http://", "has no host"),
        ("http:///a.wav", "has no host"),
        ("http://[::1/a.wav", "not a valid URL"),
        ("http://exa mple.com/a.wav", "malformed host name"),
        ("http://exa\nmple.com/a.wav", "not a valid URL"),
        ("http://example.com:99999/a.wav", "invalid port 99999"),
        ("http://" + "a" * 9000 + ".com/", "longer than 8192 characters"),
        ("s3://bucket-only", "must name a bucket and a key"),
        ("s3:///key.wav", "must name a bucket and a key"),
        ("s3://user@bucket/key.wav", "invalid bucket name"),
    ],
)
@pytest.mark.usefixtures("no_client")
def test_refuses_malformed_or_unsupported_urls(url: str, message: str) -> None:
    error = _fails(url, FetchPolicy())
    assert error.code == "INVALID_PARAMETER"
    assert message in error.message
    assert "secret" not in error.message


# --- upstream answers and limits ---------------------------------------------------------------


def test_non_2xx_is_a_fetch_failure(server: _Server) -> None:
    error = _fails(server.url("/missing.wav?token=secret"))
    assert error.code == "URL_FETCH_FAILED"
    assert "the audio URL answered 404 Not Found" in error.message
    assert error.details["status"] == 404
    assert "secret" not in error.message


def test_redirect_without_location_is_a_fetch_failure(server: _Server) -> None:
    error = _fails(server.url("/no-location"))
    assert error.code == "URL_FETCH_FAILED"
    assert "302 Found without a Location" in error.message


def test_refuses_a_large_content_length_before_reading(server: _Server) -> None:
    error = _fails(server.url("/huge"))
    assert isinstance(error, FileTooLarge)
    assert error.code == "FILE_TOO_LARGE"
    assert f"Content-Length: {10**12} bytes" in error.message
    assert error.to_dict()["max_size_mb"] == 100


def test_stops_reading_a_stream_past_the_limit(server: _Server) -> None:
    start = time.monotonic()
    error = _fails(server.url("/endless"), FetchPolicy(max_bytes=10_000, allow_private=True))
    assert error.code == "FILE_TOO_LARGE"
    assert "more than 10000 bytes" in error.message
    # The server notices the closed connection and stops, far short of its 1 GiB body.
    assert server.state.endless_stopped.wait(5.0)
    assert server.state.endless_sent < 64 << 20
    assert time.monotonic() - start < 5.0


def test_body_exactly_at_the_limit_is_accepted(server: _Server) -> None:
    assert _fetch(server.url("/audio.wav"), FetchPolicy(max_bytes=len(WAV), allow_private=True)) == WAV
    error = _fails(server.url("/audio.wav"), FetchPolicy(max_bytes=len(WAV) - 1, allow_private=True))
    assert error.code == "FILE_TOO_LARGE"  # refused on Content-Length


def test_empty_body_is_empty_audio(server: _Server) -> None:
    error = _fails(server.url("/empty"))
    assert isinstance(error, EmptyAudio)
    assert error.code == "EMPTY_AUDIO"
    assert "empty body" in error.message


def test_compressed_body_is_refused(server: _Server) -> None:
    error = _fails(server.url("/gzip"))
    assert error.code == "URL_FETCH_FAILED"
    assert "'gzip'-encoded body" in error.message


@pytest.mark.parametrize("path", ["/slow-headers", "/trickle"])
def test_total_timeout_covers_the_whole_download(server: _Server, path: str) -> None:
    # /trickle sends a byte every 20 ms: no single read times out, only the total deadline can.
    start = time.monotonic()
    error = _fails(server.url(path), FetchPolicy(total_timeout_s=0.3, allow_private=True))
    assert error.code == "URL_FETCH_FAILED"
    assert "did not finish downloading within 0.3 s" in error.message
    assert time.monotonic() - start < 1.5


def test_connection_refused_is_a_fetch_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        error = _fails(f"http://127.0.0.1:{port}/a.wav", LOOPBACK)
    assert error.code == "URL_FETCH_FAILED"
    assert "could not connect to the audio URL" in error.message


def test_read_stream_stops_one_chunk_past_the_limit() -> None:
    class Body:
        reads = 0

        def read(self, size: int) -> bytes:
            self.reads += 1
            return b"x" * size

    body = Body()
    with pytest.raises(FileTooLarge):
        url_fetch._read_stream(body, 100_000)  # type: ignore[arg-type]
    assert body.reads == 2  # 64 KiB, then 128 KiB > 100 000: stop


# --- s3:// (moto) ----------------------------------------------------------------------------


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], Any]]:
    moto = pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="audio")
        client.put_object(Bucket="audio", Key="calls/one.wav", Body=WAV)
        client.put_object(Bucket="audio", Key="empty.wav", Body=b"")
        yield lambda: client


def test_s3_fetch(s3_bucket: Callable[[], Any]) -> None:
    assert _fetch("s3://audio/calls/one.wav", FetchPolicy(), s3_client_factory=s3_bucket) == WAV


def test_s3_default_client_factory(s3_bucket: Callable[[], Any]) -> None:
    assert _fetch("s3://audio/calls/one.wav", FetchPolicy()) == WAV


@pytest.mark.parametrize("url", ["s3://audio/calls/missing.wav", "s3://no-such-bucket/one.wav"])
def test_s3_missing_object_is_a_fetch_failure(s3_bucket: Callable[[], Any], url: str) -> None:
    error = _fails(url, FetchPolicy(), s3_client_factory=s3_bucket)
    assert error.code == "URL_FETCH_FAILED"
    assert f"the audio URL {url} does not exist" in error.message


def test_s3_too_large(s3_bucket: Callable[[], Any]) -> None:
    error = _fails("s3://audio/calls/one.wav", FetchPolicy(max_bytes=1000), s3_client_factory=s3_bucket)
    assert error.code == "FILE_TOO_LARGE"
    assert f"({len(WAV)} bytes)" in error.message


def test_s3_empty_object(s3_bucket: Callable[[], Any]) -> None:
    error = _fails("s3://audio/empty.wav", FetchPolicy(), s3_client_factory=s3_bucket)
    assert error.code == "EMPTY_AUDIO"
    assert "empty body" in error.message


def test_s3_access_denied_is_a_fetch_failure() -> None:
    botocore_exceptions = pytest.importorskip("botocore.exceptions")

    class Denied:
        def head_object(self, **kwargs: str) -> dict[str, Any]:
            raise botocore_exceptions.ClientError(
                {
                    "Error": {"Code": "403", "Message": "Forbidden"},
                    "ResponseMetadata": {"HTTPStatusCode": 403},
                },
                "HeadObject",
            )

    error = _fails("s3://audio/one.wav", FetchPolicy(), s3_client_factory=Denied)
    assert error.code == "URL_FETCH_FAILED"
    assert "access to the audio URL s3://audio/one.wav was denied" in error.message


def test_ipaddress_assumptions_hold() -> None:
    # The guard relies on these: if a Python upgrade changes them, the explicit checks still refuse.
    assert not ipaddress.ip_address("100.64.0.1").is_global
    assert url_fetch._address_class(ipaddress.ip_address("224.0.0.1")) == "multicast"
