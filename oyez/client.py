"""``oyez transcribe``: send a file (or a URL) to a running API server and print the transcript.

A file goes up as ``multipart/form-data`` (the part ``audio``, options as form fields), streamed
from disk with an exact ``Content-Length`` and, above 5 MB, an upload progress bar on stderr. A
``--url`` goes as JSON for the server to fetch. The key comes from ``--key``, ``$OYEZ_API_KEY`` or
the local development key that ``oyez up`` keeps (never created here).

Exit codes: 0 success; 1 the server answered an error or could not be reached; 2 bad arguments
(no such file, no key).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import secrets
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from oyez import local_stack

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_SERVER = "http://localhost:7100"
ENV_SERVER = "OYEZ_SERVER"
ENV_API_KEY = "OYEZ_API_KEY"
LISTEN_PATH = "/v1/listen"
AUDIO_PART = "audio"
PROGRESS_THRESHOLD_BYTES = 5 * 1024 * 1024
CHUNK_BYTES = 256 * 1024
CONNECT_TIMEOUT_S = 10.0


class ClientError(Exception):
    """A failure with a one-line message and the exit code it maps to."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# --- inputs -----------------------------------------------------------------------------------------
def server_url(arg: str | None, env: Mapping[str, str]) -> str:
    return (arg or env.get(ENV_SERVER) or DEFAULT_SERVER).rstrip("/")


def resolve_key(arg: str | None, env: Mapping[str, str], state_dir: Path) -> str:
    """``--key``, else ``$OYEZ_API_KEY``, else the local development key; :class:`ClientError` if none."""
    key = (arg or env.get(ENV_API_KEY) or local_stack.read_dev_key(state_dir) or "").strip()
    if not key:
        raise ClientError(
            "no API key: pass --key, set OYEZ_API_KEY, or run 'oyez up' once "
            f"(it keeps a development key in {local_stack.key_path(state_dir)})",
            EXIT_USAGE,
        )
    return key


def listen_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "timestamps": bool(args.timestamps),
        "punctuate": not args.no_punctuate,
        "language": args.language,
    }
    if getattr(args, "diarize", False):
        options["diarize"] = True
    if getattr(args, "num_speakers", None) is not None:
        options["num_speakers"] = args.num_speakers  # the server says so if diarize is missing
    return options


def form_value(value: Any) -> str:
    """A JSON option as a form field: booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def audio_file(name: str) -> Path:
    path = Path(name)
    if not path.exists():
        raise ClientError(f"no such file: {name}", EXIT_USAGE)
    if not path.is_file():
        raise ClientError(f"not a file: {name}", EXIT_USAGE)
    if not os.access(path, os.R_OK):
        raise ClientError(f"cannot read {name}: permission denied", EXIT_USAGE)
    return path


# --- a streamed multipart body ----------------------------------------------------------------------
def _quoted(text: str) -> str:
    """A header parameter value: quotes and line breaks percent-encoded (as browsers do)."""
    return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


@dataclass(frozen=True)
class MultipartUpload:
    """``multipart/form-data`` with text fields and one file part, produced in chunks from disk."""

    path: Path
    fields: Mapping[str, str]
    file_part: str = AUDIO_PART
    boundary: str = ""

    def __post_init__(self) -> None:
        if not self.boundary:
            object.__setattr__(self, "boundary", f"oyez-{secrets.token_hex(16)}")

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def file_size(self) -> int:
        return self.path.stat().st_size

    def head(self) -> bytes:
        lines: list[str] = []
        for name, value in self.fields.items():
            lines += [f"--{self.boundary}", f'Content-Disposition: form-data; name="{_quoted(name)}"', ""]
            lines.append(value)
        media_type = mimetypes.guess_type(self.path.name)[0] or "application/octet-stream"
        lines += [
            f"--{self.boundary}",
            f'Content-Disposition: form-data; name="{self.file_part}"; filename="{_quoted(self.path.name)}"',
            f"Content-Type: {media_type}",
            "",
            "",
        ]
        return "\r\n".join(lines).encode("utf-8")

    def tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode("ascii")

    def content_length(self) -> int:
        return len(self.head()) + self.file_size + len(self.tail())

    def chunks(self, on_file_bytes: Callable[[int], object] = lambda _: None) -> Iterator[bytes]:
        """The body; ``on_file_bytes`` hears how many file bytes each chunk carried."""
        yield self.head()
        with self.path.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                on_file_bytes(len(chunk))
                yield chunk
        yield self.tail()


def _with_progress(upload: MultipartUpload, size: int) -> Iterator[bytes]:
    """The upload's chunks, with a progress bar on stderr for files over the threshold."""
    with tqdm(
        total=size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="upload",
        file=sys.stderr,
        disable=size <= PROGRESS_THRESHOLD_BYTES,
        leave=False,
    ) as bar:
        yield from upload.chunks(bar.update)


# --- sending ----------------------------------------------------------------------------------------
def _headers(key: str, extra: Mapping[str, str]) -> dict[str, str]:
    return {"Authorization": f"Token {key}", "Accept": "application/json", **extra}


def send_file(
    client: httpx.Client, url: str, key: str, path: Path, options: Mapping[str, Any]
) -> httpx.Response:
    upload = MultipartUpload(path, {name: form_value(value) for name, value in options.items()})
    headers = _headers(
        key, {"Content-Type": upload.content_type, "Content-Length": str(upload.content_length())}
    )
    body = _with_progress(upload, upload.file_size)
    return client.post(url, content=body, headers=headers)


def send_url(
    client: httpx.Client, url: str, key: str, audio_url: str, options: Mapping[str, Any]
) -> httpx.Response:
    return client.post(url, json={"url": audio_url, **options}, headers=_headers(key, {}))


def _connection_error(server: str, exc: httpx.TransportError) -> ClientError:
    if isinstance(exc, httpx.TimeoutException):
        return ClientError(f"no answer from {server} in time ({exc or type(exc).__name__}); try --timeout")
    refused = isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower()
    if refused:
        return ClientError(
            f"the Oyez API server at {server} is not running (connection refused); start it with 'oyez up'"
        )
    return ClientError(f"cannot talk to {server}: {exc or type(exc).__name__}")


# --- output -----------------------------------------------------------------------------------------
def error_line(response: httpx.Response) -> str:
    """``error: <error> (<code>): <detail>`` from the API's error body, or the raw status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "error" not in body:
        text = response.text.strip()[:200]
        return f"error: HTTP {response.status_code}" + (f": {text}" if text else "")
    line = f"error: {body['error']} ({body.get('code') or response.status_code})"
    detail = body.get("detail")
    return f"{line}: {detail}" if detail else line


def format_result(body: Mapping[str, Any], *, as_json: bool, timestamps: bool) -> str:
    """What to print for a successful answer."""
    if as_json:
        return json.dumps(body, indent=2, ensure_ascii=False)
    words = body.get("words")
    if timestamps and isinstance(words, list):
        return "\n".join(
            f"{word['start']:.2f}-{word['end']:.2f} "
            + (f"{word['speaker']}: " if "speaker" in word else "")
            + str(word["word"])
            for word in words
        )
    speakers = body.get("speakers")
    if isinstance(speakers, list) and speakers:
        return "\n".join(
            f"[{turn['start']:7.2f}-{turn['end']:7.2f}] {turn['speaker']}: {turn['text']}"
            for turn in speakers
        )
    return str(body.get("text", ""))


# --- the command ------------------------------------------------------------------------------------
def _request(args: argparse.Namespace, env: Mapping[str, str]) -> httpx.Response:
    path = audio_file(args.file) if args.url is None else None
    key = resolve_key(args.key, env, local_stack.default_state_dir())
    server = server_url(args.server, env)
    url = server + LISTEN_PATH
    options = listen_options(args)
    timeout = httpx.Timeout(args.timeout, connect=min(CONNECT_TIMEOUT_S, args.timeout))
    try:
        with httpx.Client(timeout=timeout) as client:
            if path is not None:
                return send_file(client, url, key, path, options)
            return send_url(client, url, key, args.url, options)
    except httpx.TransportError as exc:
        raise _connection_error(server, exc) from None
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from None


def transcribe(args: argparse.Namespace) -> int:
    """``oyez transcribe FILE | --url URL``: print the transcript (or JSON, or timed words)."""
    if getattr(args, "stream", False):
        return _stream(args)
    try:
        response = _request(args, os.environ)
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    if response.is_error:
        print(error_line(response), file=sys.stderr)
        return EXIT_FAILED
    try:
        body = response.json()
    except ValueError:
        print(f"error: the server answered {response.status_code} without JSON", file=sys.stderr)
        return EXIT_FAILED
    if not isinstance(body, dict):
        return _print_out(json.dumps(body, indent=2, ensure_ascii=False))
    return _print_out(format_result(body, as_json=args.json, timestamps=args.timestamps))


def _stream(args: argparse.Namespace) -> int:
    from oyez.stream_client import StreamClientError, stream_file

    if not args.file:
        print("error: --stream needs a FILE (not --url)", file=sys.stderr)
        return EXIT_USAGE
    try:
        path = audio_file(args.file)
        key = resolve_key(args.key, os.environ, local_stack.default_state_dir())
        return stream_file(path, server_url(args.server, os.environ), key, args)
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except StreamClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _print_out(text: str) -> int:
    """Print the result; a reader that went away early (``| head``) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK
