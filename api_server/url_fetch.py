"""Download the audio behind a user-supplied ``url`` for ``POST /v1/listen``, safely.

The URL comes from an untrusted caller, so the fetch is guarded against server-side request forgery
(SSRF) and against resource exhaustion:

* Only ``http://``, ``https://`` and ``s3://bucket/key`` are accepted. URLs with user information
  (``http://user:pass@host``), without a host, with an invalid port or with a malformed host are refused.
* The host is resolved once, here, with ``loop.getaddrinfo``. If *any* resolved address is not globally
  routable (private, loopback, link-local, unspecified, CGNAT, reserved, multicast) or is a cloud
  metadata endpoint (``169.254.169.254``, ``fd00:ec2::254``), the URL is refused. IPv4 addresses carried
  inside IPv6 ones (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible, 6to4, NAT64) are judged as IPv4.
* Exemptions: ``FetchPolicy.allowed_hosts`` (setting ``OYEZ_URL_ALLOWED_HOSTS``) lists host names, IP
  addresses or CIDR ranges that may be reached although blocked; ``allow_private`` (setting
  ``OYEZ_URL_ALLOW_PRIVATE``) lifts the block entirely.
* To defeat DNS rebinding the connection goes to the address that was checked, never to a second
  resolution: the request URL carries that IP, the ``Host`` header the real name, and for https the
  ``sni_hostname`` extension makes TLS send and verify the certificate against the real name.
* Redirects are followed by hand, at most ``max_redirects`` of them, and every ``Location`` (relative
  ones resolved against the current URL) passes all of the checks above again; it must be http(s).
* A ``Content-Length`` above ``max_bytes`` is refused before the body is read; otherwise the body is
  streamed and reading stops as soon as it passes ``max_bytes``, so at most ``max_bytes`` plus one
  network chunk is ever held. ``identity`` encoding is requested and a compressed body refused, so no
  decompression can inflate a chunk. The whole fetch (DNS, redirects, body) runs under
  ``total_timeout_s``.
* ``s3://`` objects are read through boto3 (endpoint and credentials from the standard AWS environment,
  e.g. ``AWS_ENDPOINT_URL``) with the same size limit, checked by ``HeadObject`` first.

Failures are typed: :class:`~oyez.errors.InvalidParameter` for a URL we will not fetch,
:class:`~oyez.errors.FileTooLarge`, :class:`~oyez.errors.EmptyAudio`, and :class:`UrlFetchFailed` for
network, DNS, timeout and upstream-status failures. Messages never echo the query string, which may hold
credentials (pre-signed URLs).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import httpx

from oyez.constants import MAX_UPLOAD_BYTES
from oyez.errors import EmptyAudio, FileTooLarge, InvalidParameter, OyezError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = ("http", "https", "s3")
_HTTP_SCHEMES = ("http", "https")
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MAX_URL_CHARS = 8192
_CHUNK = 64 * 1024
_MIB = 1024 * 1024
_ALLOWED_HOSTS_SETTING = "OYEZ_URL_ALLOWED_HOSTS"
_ALLOW_PRIVATE_SETTING = "OYEZ_URL_ALLOW_PRIVATE"
_HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$")
_S3_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_REQUEST_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "oyez-api-url-fetch"}


class UrlFetchFailed(OyezError):
    """The audio URL could not be fetched: network, DNS, timeout or a non-2xx upstream answer."""

    code = "URL_FETCH_FAILED"


@dataclass(frozen=True)
class FetchPolicy:
    """Limits and SSRF exemptions for one fetch; built from the API server's settings."""

    max_bytes: int = MAX_UPLOAD_BYTES
    max_redirects: int = 3
    connect_timeout_s: float = 10.0
    total_timeout_s: float = 120.0
    allow_private: bool = False
    allowed_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Target:
    """An http(s) URL that passed every check, with the addresses it may be fetched from."""

    url: httpx.URL
    host: str
    addresses: tuple[str, ...]


async def fetch_url(
    url: str, policy: FetchPolicy, *, s3_client_factory: Callable[[], Any] | None = None
) -> bytes:
    """Return the bytes behind ``url`` (http, https or s3), enforcing ``policy``; see the module doc."""
    scheme = _scheme(url)
    try:
        async with asyncio.timeout(policy.total_timeout_s):
            if scheme == "s3":
                factory = s3_client_factory or functools.partial(_default_s3_client, policy)
                data = await _fetch_s3(url, policy, factory)
            else:
                data = await _fetch_http(url, policy)
    except TimeoutError as exc:
        raise UrlFetchFailed(
            f"the audio URL did not finish downloading within {policy.total_timeout_s:g} s"
        ) from exc
    if not data:
        raise EmptyAudio("the audio URL returned an empty body")
    return data


# --- URL checks ------------------------------------------------------------------------------


def _scheme(url: str) -> str:
    """The lower-cased scheme of ``url`` when it is one we fetch; InvalidParameter otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidParameter("`url` must be a non-empty URL")
    if len(url) > _MAX_URL_CHARS:
        raise InvalidParameter(f"`url` is longer than {_MAX_URL_CHARS} characters")
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise InvalidParameter(f"`url` is not a valid URL: {exc}") from exc
    if not scheme:
        raise InvalidParameter("`url` must be an absolute URL: http://, https:// or s3://")
    if scheme not in ALLOWED_SCHEMES:
        raise InvalidParameter(
            f"`url` scheme {scheme!r} is not supported; use one of: {', '.join(ALLOWED_SCHEMES)}"
        )
    return scheme


def _parse_http(url: str, name: str = "`url`") -> httpx.URL:
    """Parse an http(s) URL and refuse user info, a missing or malformed host and a bad port."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidParameter(f"{name} is not a valid URL: {exc}") from exc
    if parsed.scheme not in _HTTP_SCHEMES:
        raise InvalidParameter(f"{name} must be http:// or https://, got {parsed.scheme or 'no'} scheme")
    if parsed.userinfo or "@" in urlsplit(url).netloc:
        raise InvalidParameter(f"{name} must not contain user information (user:password@host)")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise InvalidParameter(f"{name} has no host")
    if _ip_literal(host) is None and (len(host) > 253 or not _HOST_NAME.match(host)):
        raise InvalidParameter(f"{name} has a malformed host name")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise InvalidParameter(f"{name} has an invalid port {parsed.port}")
    return parsed


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _redact(url: httpx.URL) -> str:
    """The URL without query and fragment, which may carry credentials."""
    return str(url.copy_with(query=None, fragment=None))


# --- SSRF guard ------------------------------------------------------------------------------


async def _resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, as strings. Tests replace this function."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def _addresses(host: str, port: int, what: str = "audio URL") -> list[str]:
    """Resolve ``host`` (an IP literal resolves to itself); UrlFetchFailed when it cannot."""
    if _ip_literal(host) is not None:
        return [host]
    try:
        found = await _resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise UrlFetchFailed(f"could not resolve the {what} host {host!r}: {exc}") from exc
    if not found:
        raise UrlFetchFailed(f"the {what} host {host!r} resolved to no address")
    return found


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries: IPv4-compatible, 6to4 and NAT64 forms."""
    found: list[ipaddress.IPv4Address] = []
    if addr.sixtofour is not None:
        found.append(addr.sixtofour)
    if addr in _IPV4_COMPATIBLE or any(addr in net for net in _NAT64):
        found.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return found


def _unwrap(addr: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address is the IPv4 address it maps."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _address_class(addr: IPAddress) -> str | None:
    """Why ``addr`` (already unwrapped) is blocked, as an address class; None when it is public."""
    if addr in _METADATA_ADDRESSES:
        return "cloud metadata"
    checks: tuple[tuple[bool, str], ...] = (
        (addr.is_unspecified, "unspecified"),
        (addr.is_loopback, "loopback"),
        (addr.is_link_local, "link-local"),
        (addr.is_multicast, "multicast"),
        (isinstance(addr, ipaddress.IPv4Address) and addr in _CGNAT, "shared (CGNAT)"),
        (addr.is_private, "private"),
        (addr.is_reserved, "reserved"),
        (not addr.is_global, "non-public"),
    )
    for blocked, name in checks:
        if blocked:
            return name
    if isinstance(addr, ipaddress.IPv6Address):
        for inner in _embedded_ipv4(addr):
            inner_class = _address_class(inner)
            if inner_class is not None:
                return f"{inner_class} (embedded in IPv6)"
    return None


def _exemptions(entries: Iterable[str]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """Split ``allowed_hosts`` into host names and IP networks (a bare IP is a one-address network)."""
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = raw.strip().strip("[]").lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.rstrip("."))
    return frozenset(names), tuple(networks)


def _block_reason(host: str, addresses: Iterable[str], policy: FetchPolicy) -> str | None:
    """The address class that makes ``host`` unreachable under ``policy``; None when it may be fetched."""
    if policy.allow_private:
        return None
    names, networks = _exemptions(policy.allowed_hosts)
    if host.lower().rstrip(".") in names:
        return None
    for text in addresses:
        addr = _unwrap(ipaddress.ip_address(text))
        if any(addr in net for net in networks):
            continue
        reason = _address_class(addr)
        if reason is not None:
            return reason
    return None


async def _http_target(
    url: str, policy: FetchPolicy, name: str = "`url`", what: str = "audio URL"
) -> _Target:
    """Run every check on an http(s) URL and resolve it: the only way to obtain a ``_Target``."""
    parsed = _parse_http(url, name)
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = await _addresses(host, port, what)
    reason = _block_reason(host, addresses, policy)
    if reason is not None:
        raise InvalidParameter(
            f"the {what} host {host!r} is a {reason} address, which is blocked to protect internal "
            f"services; an operator can permit it with {_ALLOWED_HOSTS_SETTING} (host name, IP or CIDR) "
            f"or {_ALLOW_PRIVATE_SETTING}=true",
            host=host,
        )
    return _Target(url=parsed, host=host, addresses=tuple(dict.fromkeys(addresses)))


# Public name of a checked http(s) URL, for callers outside this module (webhook delivery).
CheckedUrl = _Target


async def check_http_url(url: str, policy: FetchPolicy, *, name: str, what: str) -> CheckedUrl:
    """The same parse, resolve and SSRF checks a fetch makes, for an http(s) URL another part of the
    server connects to (``callback_url``). ``name`` labels the parameter in messages (``callback_url``),
    ``what`` the host (``callback URL``). Connect only to the returned ``addresses`` (never resolve
    again), sending ``Host`` and SNI for ``host``: that defeats DNS rebinding."""
    return await _http_target(url, policy, name, what)


async def check_audio_url(url: str, policy: FetchPolicy) -> None:
    """Every check :func:`fetch_url` makes before its first byte, without fetching: the scheme, the
    URL's shape and, for http(s), the resolved addresses against the SSRF guard. For a URL kept to be
    fetched later (an asynchronous job): the fetch checks it all again."""
    if _scheme(url) == "s3":
        _s3_location(url)
    else:
        await _http_target(url, policy)


# --- HTTP ------------------------------------------------------------------------------------


def _client(policy: FetchPolicy) -> httpx.AsyncClient:
    """A fresh client per request, so no pooled connection is shared between hosts. Tests replace it."""
    timeout = httpx.Timeout(policy.total_timeout_s, connect=policy.connect_timeout_s)
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)


async def _fetch_http(url: str, policy: FetchPolicy) -> bytes:
    target = await _http_target(url, policy)
    redirects = 0
    while True:
        result = await _request(target, policy)
        if isinstance(result, bytes):
            return result
        if redirects >= policy.max_redirects:
            raise InvalidParameter(
                f"the audio URL redirected more than {policy.max_redirects} times", url=_redact(target.url)
            )
        redirects += 1
        try:
            target = await _http_target(str(result), policy)
        except InvalidParameter as exc:
            raise InvalidParameter(
                f"the audio URL redirected to a URL we will not fetch: {exc.message}"
            ) from exc


async def _request(target: _Target, policy: FetchPolicy) -> bytes | httpx.URL:
    """GET ``target``: its body, or the absolute URL it redirects to."""
    async with _client(policy) as client:
        try:
            response = await send_pinned(client, "GET", target, _REQUEST_HEADERS, stream=True)
        except httpx.TimeoutException as exc:
            raise UrlFetchFailed(f"the audio URL {_redact(target.url)} timed out: {exc}") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise UrlFetchFailed(
                f"could not connect to the audio URL {_redact(target.url)}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            return await _handle(response, target, policy)
        finally:
            await response.aclose()


async def send_pinned(
    client: httpx.AsyncClient,
    method: str,
    target: CheckedUrl,
    headers: dict[str, str],
    *,
    content: bytes | None = None,
    stream: bool = False,
) -> httpx.Response:
    """Send to each checked address in turn until one accepts the connection, never resolving the
    name again (no DNS rebinding); the real name goes in ``Host`` and, for https, SNI."""
    last: httpx.ConnectError | None = None
    for address in target.addresses:
        request = client.build_request(
            method,
            target.url.copy_with(host=address),
            headers={**headers, "Host": target.url.netloc.decode("ascii")},
            content=content,
            extensions={"sni_hostname": target.host},
        )
        try:
            return await client.send(request, stream=stream)
        except httpx.ConnectError as exc:
            last = exc
    assert last is not None  # addresses is never empty
    raise last


async def _handle(response: httpx.Response, target: _Target, policy: FetchPolicy) -> bytes | httpx.URL:
    status = f"{response.status_code} {response.reason_phrase}".strip()
    if response.status_code in _REDIRECT_STATUSES:
        location = response.headers.get("Location")
        if not location:
            raise UrlFetchFailed(f"the audio URL answered {status} without a Location")
        try:
            return target.url.join(location)
        except httpx.InvalidURL as exc:
            raise InvalidParameter(f"the audio URL redirected to an invalid URL: {exc}") from exc
    if not 200 <= response.status_code < 300:
        raise UrlFetchFailed(f"the audio URL answered {status}", status=response.status_code)
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UrlFetchFailed(
            f"the audio URL sent a {encoding!r}-encoded body although identity was requested; "
            "serve the file without Content-Encoding"
        )
    _check_declared_size(response.headers.get("Content-Length"), policy.max_bytes)
    return await _read_limited(response, policy.max_bytes)


def _check_declared_size(content_length: str | None, max_bytes: int) -> None:
    if content_length is None or not content_length.strip().isdigit():
        return
    size = int(content_length)
    if size > max_bytes:
        raise _too_large(f"Content-Length: {size} bytes", max_bytes)


async def _read_limited(response: httpx.Response, max_bytes: int) -> bytes:
    """The body, read chunk by chunk; stops as soon as it passes ``max_bytes``."""
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received > max_bytes:
                raise _too_large(f"more than {max_bytes} bytes", max_bytes)
            chunks.append(chunk)
    except httpx.TimeoutException as exc:
        raise UrlFetchFailed(f"reading the audio URL body timed out: {exc}") from exc
    except httpx.HTTPError as exc:
        raise UrlFetchFailed(f"reading the audio URL body failed: {type(exc).__name__}: {exc}") from exc
    return b"".join(chunks)


def _too_large(size_hint: str, max_bytes: int) -> FileTooLarge:
    limit_mb = max_bytes // _MIB if max_bytes % _MIB == 0 else round(max_bytes / _MIB, 3)
    return FileTooLarge(
        f"the audio at the URL is too large ({size_hint}); the limit is {limit_mb} MB",
        max_size_mb=limit_mb,
    )


# --- S3 --------------------------------------------------------------------------------------


def _s3_location(url: str) -> tuple[str, str]:
    """``(bucket, key)`` of ``s3://bucket/key``; the key is taken literally, as the AWS CLI does."""
    rest = url.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise InvalidParameter("an s3:// `url` must name a bucket and a key: s3://bucket/key")
    if not _S3_BUCKET.match(bucket):
        raise InvalidParameter(f"an s3:// `url` has an invalid bucket name {bucket!r}")
    return bucket, key


def _default_s3_client(policy: FetchPolicy) -> Any:
    """A boto3 S3 client from the standard AWS environment (``AWS_ENDPOINT_URL`` included)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise UrlFetchFailed("s3:// URLs need boto3 on the API server (the `s3` extra)") from exc
    config = Config(
        connect_timeout=policy.connect_timeout_s,
        read_timeout=policy.total_timeout_s,
        retries={"total_max_attempts": 2},
    )
    return boto3.client("s3", config=config)


def _s3_failure(exc: Exception, where: str) -> UrlFetchFailed:
    """A clear UrlFetchFailed for a botocore error."""
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    code = str(response.get("Error", {}).get("Code", "")) or type(exc).__name__
    if status == 404 or code in ("NoSuchKey", "NoSuchBucket", "NotFound", "404"):
        return UrlFetchFailed(f"the audio URL {where} does not exist (S3 {code})", status=404)
    if status == 403 or code in ("AccessDenied", "Forbidden", "403"):
        return UrlFetchFailed(
            f"access to the audio URL {where} was denied (S3 {code}); check the bucket policy "
            "and the API server's AWS credentials",
            status=403,
        )
    if status:
        return UrlFetchFailed(f"S3 answered {code} (HTTP {status}) for the audio URL {where}", status=status)
    return UrlFetchFailed(f"could not fetch the audio URL {where} from S3: {code}: {exc}")


def _s3_download(factory: Callable[[], Any], bucket: str, key: str, max_bytes: int) -> bytes:
    """Blocking: HeadObject (size check), then GetObject read with the same limit."""
    client = factory()
    head = client.head_object(Bucket=bucket, Key=key)
    size = int(head.get("ContentLength", 0) or 0)
    if size > max_bytes:
        raise _too_large(f"{size} bytes", max_bytes)
    body: BinaryIO = client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        return _read_stream(body, max_bytes)
    finally:
        body.close()


def _read_stream(body: BinaryIO, max_bytes: int) -> bytes:
    """Read a blocking stream in chunks; stops as soon as it passes ``max_bytes``."""
    chunks: list[bytes] = []
    received = 0
    while chunk := body.read(_CHUNK):
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(f"more than {max_bytes} bytes", max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


async def _fetch_s3(url: str, policy: FetchPolicy, factory: Callable[[], Any]) -> bytes:
    bucket, key = _s3_location(url)
    where = f"s3://{bucket}/{key}"
    try:
        return await asyncio.to_thread(_s3_download, factory, bucket, key, policy.max_bytes)
    except _s3_errors() as exc:
        raise _s3_failure(exc, where) from exc


def _s3_errors() -> tuple[type[Exception], ...]:
    """The exceptions a boto3 call raises for S3 and network failures (botocore imported lazily)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return (OSError,)
    return (BotoCoreError, ClientError, OSError)
