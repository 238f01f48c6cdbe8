"""Resolve ``MODEL_URL`` to a verified model bundle directory, downloading and caching as needed.

Sources (:func:`resolve_model`):

* a local path or ``file://`` URL: a bundle directory is verified in place (no copy); a
  ``.tar``/``.tar.gz``/``.tgz`` archive is extracted into the cache like a download;
* ``http://``/``https://``: a tar(.gz) of a bundle, streamed to ``<key>.part`` with resume (HTTP
  ``Range``), timeouts, retries with exponential backoff and a progress bar;
* ``s3://bucket/key``: the same through boto3 (the optional ``s3`` extra), honouring the standard
  AWS environment (``AWS_ENDPOINT_URL``, credentials, region), resuming with ranged GetObject.

Cache layout under ``cache_dir``: ``<key>/`` is a verified bundle holding the completion marker
:data:`COMPLETE_MARKER`; ``<key>.lock`` serialises the processes (pods sharing a volume) that fetch
the same model; ``<key>.part`` is an unfinished download, resumed by whoever comes next. A bundle
is extracted into a staging directory on the same filesystem, verified against its manifest, marked
complete and only then moved into place with :func:`os.replace`, so readers see all or nothing.

HTTP uses ``httpx`` rather than ``urllib``: it is already a worker dependency (the ``worker``
extra), gives separate connect/read timeouts, streams the raw (never content-decoded) bytes a resume
needs, follows redirects while dropping credentials on cross-origin hops, and separates transport
errors (retried) from HTTP statuses (classified) with typed exceptions. It is imported lazily, so
local bundles need neither it nor boto3.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal
from urllib.parse import SplitResult, urlsplit, urlunsplit
from urllib.request import url2pathname

from filelock import FileLock, Timeout
from tqdm import tqdm

from asr_worker.model.bundle import sha256_file, verify_bundle
from asr_worker.model.extract import is_archive_name, is_disk_full, safe_extract_tar
from oyez.errors import ModelCacheFull, ModelError
from oyez.logs import get_logger

if TYPE_CHECKING:
    import httpx

COMPLETE_MARKER = ".oyez-complete"
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_LOCK_TIMEOUT_S = 3600.0
_MAX_BACKOFF_S = 30.0
_CHUNK = 1024 * 1024
_CONNECT_TIMEOUT_S = 10.0
_RETRYABLE_4XX = frozenset({408, 429})
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE_RE = re.compile(r"^bytes \*/(\d+)$")

SourceKind = Literal["local", "http", "s3"]


class _TransientError(Exception):
    """One download attempt failed in a way that another attempt may fix."""


@dataclass(frozen=True)
class _Source:
    """A parsed ``MODEL_URL``: ``url`` is used to fetch, ``safe_url`` is the one that may be shown."""

    kind: SourceKind
    url: str
    safe_url: str
    path: Path | None = None


@dataclass(frozen=True)
class _Options:
    attempts: int
    progress: bool
    backoff_base_s: float
    timeout_s: float
    lock_timeout_s: float


def _log() -> Any:
    # Looked up per call so that a later configure_logging() (tests, CLI) takes effect.
    return get_logger(__name__)


# ---------------------------------------------------------------------------------------------
# URLs, keys and the cache


def redact_url(url: str) -> str:
    """``url`` without credentials, query string or fragment: the form that may reach logs."""
    parts = urlsplit(url)
    if not parts.scheme or parts.scheme == "file":
        return url.split("?", 1)[0]
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, "", ""))


def _normalize_sha256(expected_sha256: str | None) -> str | None:
    if expected_sha256 is None or not expected_sha256.strip():
        return None
    value = expected_sha256.strip().lower()
    if not _SHA256_RE.match(value):
        raise ModelError("MODEL_SHA256 must be 64 hexadecimal characters (the archive's sha256)")
    return value


def _local_path(url: str, parts: SplitResult) -> Path:
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ModelError(f"file:// URL with a remote host is not supported: {redact_url(url)}")
        return Path(url2pathname(parts.path))
    return Path(url).expanduser()


def _parse_source(url: str) -> _Source:
    """Classify ``MODEL_URL`` by scheme."""
    if not url.strip():
        raise ModelError("MODEL_URL is empty: set it to a bundle directory, archive, http(s):// or s3:// URL")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        path = _local_path(url, parts).absolute()
        return _Source("local", path.as_uri(), str(path), path)
    if scheme in ("http", "https"):
        return _Source("http", url, redact_url(url))
    if scheme == "s3":
        return _Source("s3", url, redact_url(url))
    raise ModelError(f"Unsupported MODEL_URL scheme {scheme!r}: use a path, file://, http(s):// or s3://")


def _source_key(source: _Source, expected_sha256: str | None) -> str:
    if expected_sha256 is not None:
        return f"sha256-{expected_sha256}"
    identity = source.safe_url
    if source.path is not None and source.path.is_file():
        # A rebuilt local archive at the same path must not hit the old cache entry.
        stat = source.path.stat()
        identity = f"{source.path.as_uri()}|{stat.st_size}|{stat.st_mtime_ns}"
    return "url-" + hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


def cache_key(url: str, expected_sha256: str | None = None) -> str:
    """The name of ``url``'s entry under the cache directory.

    ``sha256-<MODEL_SHA256>`` when a hash is expected (the same archive from any mirror shares one
    entry); otherwise ``url-`` + a digest of the URL without credentials or query string (so a
    re-signed presigned URL still hits the cache), plus size and mtime for a local archive.
    """
    return _source_key(_parse_source(url), _normalize_sha256(expected_sha256))


def _is_cached(target: Path, safe_url: str) -> bool:
    """A completed, still-verified bundle at ``target``."""
    if not (target / COMPLETE_MARKER).is_file():
        return False
    try:
        verify_bundle(target)
    except ModelError as exc:
        _log().warning(
            "Cached model failed verification; fetching it again", path=str(target), reason=str(exc)
        )
        return False
    _log().info("Model found in cache", path=str(target), url=safe_url)
    return True


@contextmanager
def _cache_lock(path: Path, timeout_s: float, safe_url: str) -> Iterator[None]:
    """Hold ``path`` exclusively (across processes) for the duration of a fetch."""
    lock = FileLock(str(path), timeout=timeout_s)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _log().info("Waiting for another process fetching the model", lock=str(path), url=safe_url)
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout as exc:
            raise ModelError(
                f"Timed out after {timeout_s:g}s waiting for the model cache lock {path}: another process "
                f"is still fetching {safe_url}"
            ) from exc
    try:
        yield
    finally:
        lock.release()


def _remove_leftovers(cache_dir: Path, key: str) -> None:
    """Staging directories of a process that crashed mid-extraction (we hold the lock)."""
    for leftover in cache_dir.glob(f"*{key}.staging*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _install(archive: Path, target: Path, cache_dir: Path, key: str, marker: dict[str, str]) -> None:
    """Extract, verify, mark complete, then atomically move the bundle to ``target``."""
    staging = cache_dir / f".{key}.staging"
    try:
        safe_extract_tar(archive, staging)
        verify_bundle(staging)
        (staging / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_archive_sha256(archive: Path, expected_sha256: str | None) -> str:
    """The archive's sha256; a mismatch with ``expected_sha256`` is a ModelError."""
    actual = sha256_file(archive)
    if expected_sha256 is not None and actual != expected_sha256:
        raise ModelError(
            f"Model archive sha256 {actual} does not match MODEL_SHA256 {expected_sha256}",
            actual=actual,
            expected=expected_sha256,
        )
    return actual


# ---------------------------------------------------------------------------------------------
# Downloads: one attempt per call, retried by _download_with_retries


def _backoff_s(attempt: int, base_s: float) -> float:
    return float(min(base_s * 2 ** (attempt - 1), _MAX_BACKOFF_S))


def _download_with_retries(attempt_once: Callable[[], None], safe_url: str, options: _Options) -> None:
    """Run ``attempt_once`` until it succeeds; transient failures are retried with backoff."""
    last_reason = "no attempt was made"
    for attempt in range(1, options.attempts + 1):
        try:
            attempt_once()
            return
        except _TransientError as exc:
            last_reason = str(exc)
            _log().warning(
                "Download attempt failed",
                attempt=attempt,
                attempts=options.attempts,
                url=safe_url,
                reason=last_reason,
            )
            if attempt < options.attempts:
                time.sleep(_backoff_s(attempt, options.backoff_base_s))
    _log().error(f"Download failed after {options.attempts} attempts", url=safe_url, reason=last_reason)
    raise ModelError(
        f"Downloading the model from {safe_url} failed after {options.attempts} attempts: {last_reason}",
        url=safe_url,
    )


def _progress_bar(total: int | None, initial: int, label: str, enabled: bool) -> tqdm[Any]:
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=label,
        file=sys.stderr,
        disable=not (enabled and sys.stderr.isatty()),
    )


def _write_chunks(
    chunks: Iterable[bytes], part: Path, start: int, total: int | None, label: str, progress: bool
) -> int:
    """Write ``chunks`` into ``part`` from byte ``start`` (truncating anything after); return its size."""
    mode = "r+b" if start and part.exists() else "wb"
    with part.open(mode) as handle, _progress_bar(total, start, label, progress) as bar:
        handle.seek(start)
        handle.truncate()
        for chunk in chunks:
            handle.write(chunk)
            bar.update(len(chunk))
        return handle.tell()


def _require_complete(size: int, total: int | None, safe_url: str) -> None:
    if total is not None and size != total:
        raise _TransientError(f"incomplete download of {safe_url}: {size} of {total} bytes")


def _part_size(part: Path) -> int:
    return part.stat().st_size if part.exists() else 0


def _label(source: _Source) -> str:
    """The progress bar's caption: the archive's file name."""
    return Path(urlsplit(source.safe_url).path).name or source.safe_url


def _scrub(text: str, source: _Source) -> str:
    """Remove the URL's credentials and query string from an error text that may quote it."""
    parts = urlsplit(source.url)
    text = text.replace(source.url, source.safe_url)
    for secret in (parts.query, parts.password, parts.username):
        if secret:
            text = text.replace(secret, "***")
    return text


# --- HTTP ------------------------------------------------------------------------------------


def _http_status_error(status: int, safe_url: str) -> Exception:
    """A fatal ModelError for client errors, a transient one for the rest."""
    if 400 <= status < 500 and status not in _RETRYABLE_4XX:
        return ModelError(f"HTTP {status} for {safe_url}", status=status, url=safe_url)
    return _TransientError(f"HTTP {status} for {safe_url}")


def _http_start(response: httpx.Response, offset: int, part: Path, safe_url: str) -> int:
    """Where the response body goes in ``part``: ``offset`` for a 206, 0 when Range was ignored."""
    if response.status_code == 200:
        if offset:
            _log().info("Server ignored the Range request; restarting the download", url=safe_url)
        return 0
    match = _CONTENT_RANGE_RE.match(response.headers.get("content-range", ""))
    if match is None or int(match.group(1)) != offset:
        part.unlink(missing_ok=True)
        raise _TransientError(f"unexpected Content-Range {response.headers.get('content-range')!r}")
    return offset


def _http_total(response: httpx.Response, start: int) -> int | None:
    """The full archive size, when the server says."""
    match = _CONTENT_RANGE_RE.match(response.headers.get("content-range", ""))
    if response.status_code == 206 and match is not None and match.group(3) != "*":
        return int(match.group(3))
    length = response.headers.get("content-length")
    return start + int(length) if length is not None and length.isdigit() else None


def _http_range_unsatisfiable(response: httpx.Response, offset: int, part: Path) -> None:
    """A 416 on resume: the ``.part`` is either already complete, or wrong and discarded."""
    match = _UNSATISFIED_RANGE_RE.match(response.headers.get("content-range", ""))
    if match is not None and int(match.group(1)) == offset:
        return
    part.unlink(missing_ok=True)
    raise _TransientError("HTTP 416: the partial download does not match the remote file; restarting")


def _http_attempt(client: httpx.Client, source: _Source, part: Path, progress: bool) -> None:
    """One GET, resuming from the size of ``part``."""
    import httpx

    offset = _part_size(part)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with client.stream("GET", source.url, headers=headers) as response:
            if response.status_code == 416 and offset:
                _http_range_unsatisfiable(response, offset, part)
                return
            if response.status_code not in (200, 206):
                raise _http_status_error(response.status_code, source.safe_url)
            start = _http_start(response, offset, part, source.safe_url)
            total = _http_total(response, start)
            size = _write_chunks(response.iter_raw(), part, start, total, _label(source), progress)
    except httpx.TransportError as exc:
        raise _TransientError(_scrub(f"{type(exc).__name__}: {exc}", source)) from exc
    _require_complete(size, total, source.safe_url)


def _download_http(source: _Source, part: Path, options: _Options) -> None:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - httpx ships with the worker extra
        raise ModelError("http(s):// MODEL_URL needs httpx: install the `worker` extra") from exc
    timeout = httpx.Timeout(options.timeout_s, connect=min(options.timeout_s, _CONNECT_TIMEOUT_S))
    headers = {"Accept-Encoding": "identity", "User-Agent": "oyez-model-fetch"}
    with httpx.Client(timeout=timeout, follow_redirects=True, headers=headers) as client:
        _download_with_retries(
            lambda: _http_attempt(client, source, part, options.progress), source.safe_url, options
        )


# --- S3 --------------------------------------------------------------------------------------


def _s3_location(source: _Source) -> tuple[str, str]:
    parts = urlsplit(source.url)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket or not key:
        raise ModelError(f"s3:// MODEL_URL must be s3://bucket/key, got {source.safe_url}")
    return bucket, key


def _s3_client(timeout_s: float) -> Any:
    """A boto3 S3 client from the standard AWS environment; our loop does the retrying."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise ModelError(
            "s3:// MODEL_URL needs boto3: install the `s3` extra (pip install 'oyez[s3]')"
        ) from exc
    config = Config(
        connect_timeout=min(timeout_s, _CONNECT_TIMEOUT_S),
        read_timeout=timeout_s,
        retries={"total_max_attempts": 1},
    )
    return boto3.client("s3", config=config)


def _s3_error(exc: Exception, safe_url: str) -> Exception:
    """Classify a botocore ClientError: client errors are fatal, the rest transient."""
    response: dict[str, Any] = getattr(exc, "response", {}) or {}
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    code = str(response.get("Error", {}).get("Code", "")) or f"HTTP {status}"
    if status in (403, 404) or (400 <= status < 500 and status not in _RETRYABLE_4XX):
        return ModelError(f"S3 {code} (HTTP {status}) for {safe_url}", status=status, url=safe_url)
    return _TransientError(f"S3 {code} (HTTP {status}) for {safe_url}")


def _s3_attempt(client: Any, source: _Source, part: Path, progress: bool) -> None:
    """One HeadObject + (ranged) GetObject, resuming from the size of ``part``."""
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError as Urllib3Error

    bucket, key = _s3_location(source)
    try:
        total = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        offset = _part_size(part)
        if offset == total:
            return
        if offset > total:
            part.unlink()
            offset = 0
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        response = client.get_object(Bucket=bucket, Key=key, **extra)
        start = offset if extra and response.get("ContentRange") else 0  # 0: the range was ignored
        body: BinaryIO = response["Body"]
        size = _write_chunks(_iter_body(body), part, start, total, _label(source), progress)
    except ClientError as exc:
        raise _s3_error(exc, source.safe_url) from exc
    except (BotoCoreError, Urllib3Error) as exc:
        raise _TransientError(f"{type(exc).__name__}: {exc}") from exc
    _require_complete(size, total, source.safe_url)


def _iter_body(body: BinaryIO) -> Iterator[bytes]:
    with body:
        while chunk := body.read(_CHUNK):
            yield chunk


def _download_s3(source: _Source, part: Path, options: _Options) -> None:
    client = _s3_client(options.timeout_s)
    _download_with_retries(
        lambda: _s3_attempt(client, source, part, options.progress), source.safe_url, options
    )


# ---------------------------------------------------------------------------------------------
# Resolution


def _obtain_archive(source: _Source, part: Path, options: _Options) -> Path:
    """The archive to extract: the local file itself, or a completed download at ``part``."""
    if source.kind == "local":
        assert source.path is not None
        _log().info("Extracting model archive", path=source.safe_url)
        return source.path
    if part.exists():
        _log().info("Resuming partial model download", url=source.safe_url, have_bytes=part.stat().st_size)
    _log().info("Downloading model from URL...", url=source.safe_url)
    if source.kind == "http":
        _download_http(source, part, options)
    else:
        _download_s3(source, part, options)
    return part


def _materialize(source: _Source, cache_dir: Path, expected_sha256: str | None, options: _Options) -> Path:
    """Return the cached bundle for ``source``, fetching and installing it under the lock if needed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _source_key(source, expected_sha256)
    target = cache_dir / key
    if _is_cached(target, source.safe_url):
        return target
    with _cache_lock(cache_dir / f"{key}.lock", options.lock_timeout_s, source.safe_url):
        if _is_cached(target, source.safe_url):  # someone finished while we waited
            return target
        _remove_leftovers(cache_dir, key)
        part = cache_dir / f"{key}.part"
        try:
            archive = _obtain_archive(source, part, options)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            part.unlink(missing_ok=True)  # a partial download must not keep the disk full
            raise _cache_full(cache_dir, source, exc) from exc
        owned = archive != source.path
        try:
            digest = _check_archive_sha256(archive, expected_sha256)
            marker = {
                "url": source.safe_url,
                "archive_sha256": digest,
                "completed_at": datetime.now(UTC).isoformat(),
            }
            _install(archive, target, cache_dir, key, marker)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise _cache_full(cache_dir, source, exc) from exc
        finally:
            if owned:  # a bad archive must not be resumed; a good one is no longer needed
                archive.unlink(missing_ok=True)
    _log().info("Model ready", path=str(target), url=source.safe_url)
    return target


def _cache_full(cache_dir: Path, source: _Source, exc: OSError) -> ModelCacheFull:
    """The error for a full cache disk; partial files are already gone, so the space is free again."""
    free_mb = shutil.disk_usage(cache_dir).free / 1e6
    return ModelCacheFull(
        f"The model cache {cache_dir} (OYEZ_MODEL_CACHE_DIR) ran out of space while storing the model "
        f"from {source.safe_url} ({exc.strerror}); {free_mb:.0f} MB are free now that the partial files "
        "are removed. Give the cache volume more room (the model's archive plus its unpacked size) or "
        "free space on it.",
        cache_dir=str(cache_dir),
        free_mb=round(free_mb, 1),
    )


def _verify_in_place(directory: Path, expected_sha256: str | None) -> Path:
    if expected_sha256 is not None:
        _log().warning(
            "MODEL_SHA256 applies to archives; a bundle directory is checked against its manifest",
            path=str(directory),
        )
    verify_bundle(directory)
    _log().info("Using model bundle directory", path=str(directory))
    return directory


def resolve_model(
    url: str,
    *,
    cache_dir: Path,
    expected_sha256: str | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    progress: bool = True,
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> Path:
    """Return the directory of a verified model bundle for ``url`` (``MODEL_URL``).

    A bundle directory is verified in place. Archives (local, http(s), s3) are cached under
    ``cache_dir/<key>/`` (see :func:`cache_key`); a cached, verified bundle is returned without any
    download. ``expected_sha256`` (``MODEL_SHA256``) must match the archive. Downloads are tried
    ``attempts`` times, waiting ``backoff_base_s * 2**n`` between them; ``timeout_s`` bounds each
    network read, ``lock_timeout_s`` the wait for another process fetching the same model.
    Every failure is a :class:`~oyez.errors.ModelError` whose message carries no credentials.
    """
    if attempts < 1:
        raise ModelError(f"attempts must be at least 1, got {attempts}")
    expected = _normalize_sha256(expected_sha256)
    source = _parse_source(url)
    if source.kind == "local":
        assert source.path is not None
        if source.path.is_dir():
            return _verify_in_place(source.path, expected)
        if not source.path.is_file():
            raise ModelError(f"Model path {source.safe_url} does not exist")
        if not is_archive_name(source.path.name):
            raise ModelError(
                f"Model path {source.safe_url} is neither a bundle directory nor a .tar/.tar.gz/.tgz archive"
            )
    options = _Options(attempts, progress, backoff_base_s, timeout_s, lock_timeout_s)
    return _materialize(source, cache_dir, expected, options)
