"""Reading request bodies with limits enforced while the bytes arrive (nothing over a limit is kept).

- Raw audio (``application/octet-stream``, ``audio/*``): the body is the file; more than
  ``max_audio_bytes`` -> :class:`~oyez.errors.FileTooLarge` as soon as the limit is crossed.
- JSON (``application/json``): a small object (``url`` + options), at most ``MAX_JSON_BYTES``.
- ``multipart/form-data``: parsed as it streams in; the part named ``audio`` is the file (same
  limit), every other part is a short text field (an option, or ``url``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from api_server.errors import MissingParameter, PayloadTooLarge
from oyez.errors import FileTooLarge, InvalidParameter

MAX_JSON_BYTES = 64 * 1024
MAX_FIELD_BYTES = 8 * 1024
MAX_FIELDS = 32
AUDIO_PART = "audio"
_MIB = 1024 * 1024


@dataclass
class ListenBody:
    """What a request carried: audio bytes or a URL, plus options given in the body."""

    audio: bytes | None = None
    url: str | None = None
    options: dict[str, object] = field(default_factory=dict)
    filename: str | None = None


def file_too_large(limit: int, seen: str) -> FileTooLarge:
    return FileTooLarge(
        f"the upload is larger than {limit // _MIB} MB ({seen}); send a shorter or more compressed file",
        max_size_mb=limit // _MIB,
    )


async def read_raw(stream: AsyncIterator[bytes], max_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > max_bytes:
            raise file_too_large(max_bytes, f"more than {len(body)} bytes received")
    return bytes(body)


async def read_json(stream: AsyncIterator[bytes]) -> ListenBody:
    raw = bytearray()
    async for chunk in stream:
        raw += chunk
        if len(raw) > MAX_JSON_BYTES:
            raise PayloadTooLarge(
                f"a JSON body holds only a url and options (at most {MAX_JSON_BYTES // 1024} KiB); "
                "upload audio as multipart part 'audio' or as a raw audio/* body"
            )
    if not raw.strip():
        raise MissingParameter("Missing required parameter: url or audio file")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidParameter(f"malformed JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidParameter('the JSON body must be an object such as {"url": "https://..."}')
    if AUDIO_PART in data:
        raise InvalidParameter(
            "audio cannot travel inside JSON; upload it as multipart part 'audio' or as a raw audio/* body"
        )
    url = data.pop("url", None)
    if url is not None and not isinstance(url, str):
        raise InvalidParameter("url must be a string")
    return ListenBody(url=url or None, options=data)


class _FormCollector:
    """python-multipart callbacks -> a :class:`ListenBody`, enforcing limits part by part."""

    def __init__(self, max_audio_bytes: int) -> None:
        self.body = ListenBody()
        self._max_audio = max_audio_bytes
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._name: str | None = None
        self._data = bytearray()
        self._parts = 0
        self.finished = False

    def on_part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._data = bytearray()
        self._parts += 1
        if self._parts > MAX_FIELDS:
            raise InvalidParameter(f"too many form parts (at most {MAX_FIELDS})")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_field).decode("latin-1").lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        disposition = self._headers.get("content-disposition")
        if disposition is None:
            raise InvalidParameter("a form part has no Content-Disposition header")
        _, params = parse_options_header(disposition)
        name = params.get(b"name")
        if not name:
            raise InvalidParameter("a form part has no name")
        self._name = name.decode("utf-8", "replace")
        if self._name == AUDIO_PART:
            if self.body.audio is not None:
                raise InvalidParameter("send exactly one 'audio' part")
            filename = params.get(b"filename")
            self.body.filename = filename.decode("utf-8", "replace") if filename else None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]
        if self._name == AUDIO_PART:
            if len(self._data) > self._max_audio:
                raise file_too_large(self._max_audio, f"more than {len(self._data)} bytes in part 'audio'")
        elif len(self._data) > MAX_FIELD_BYTES:
            raise PayloadTooLarge(f"form field {self._name!r} is over {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        name = self._name or ""
        if name == AUDIO_PART:
            self.body.audio = bytes(self._data)
        else:
            try:
                text = bytes(self._data).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidParameter(f"form field {name!r} is not UTF-8 text") from None
            if name in self.body.options or (name == "url" and self.body.url is not None):
                raise InvalidParameter(f"form field {name!r} is given twice")
            if name == "url":
                self.body.url = text.strip() or None
            else:
                self.body.options[name] = text
        self._data = bytearray()

    def on_end(self) -> None:
        self.finished = True


async def read_multipart(stream: AsyncIterator[bytes], content_type: str, max_audio_bytes: int) -> ListenBody:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidParameter("multipart/form-data needs a boundary parameter in Content-Type")
    collector = _FormCollector(max_audio_bytes)
    callbacks = {
        name: getattr(collector, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_end",
        )
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidParameter(f"malformed multipart body: {exc}") from None
    if not collector.finished:
        raise InvalidParameter("malformed multipart body: it ends before the closing boundary")
    return collector.body
