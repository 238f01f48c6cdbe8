"""The batch transcription flow shared by ``/v1/listen`` and the COMPAT route.

Order matters, cheapest refusal first: options (from the query) -> license features -> limits
(before a byte of the body is read, so a throttled client cannot make us buffer 100 MB) -> body
(limits enforced while reading) -> the ``url`` fetch (SSRF guard) -> content sniffing (415) ->
a worker. Every step raises typed errors; the HTTP layer maps them once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from api_server.asr_client import WorkerOptions
from api_server.dispatch import Dispatcher
from api_server.errors import FeatureNotLicensed, MissingParameter
from api_server.license_gate import Grant
from api_server.limits import Lease
from api_server.listen_options import ListenOptions, parse_listen_options
from api_server.request_body import ListenBody, read_json, read_multipart, read_raw
from api_server.url_fetch import FetchPolicy, fetch_url
from oyez.audio_format import describe_unsupported, sniff_format
from oyez.errors import EmptyAudio, InvalidParameter, UnsupportedFormat
from oyez.logs import get_logger
from oyez.proto import asr_v1_pb2 as pb

_log = get_logger("api_server.listen")
ACCEPTED_CONTENT_TYPES = ("application/json", "multipart/form-data", "application/octet-stream", "audio/*")


class Limiter(Protocol):
    async def admit(self, license_id: str, limits: Mapping[str, float]) -> Lease: ...
    async def release(self, lease: Lease) -> None: ...
    async def record_audio(self, license_id: str, seconds: float) -> None: ...


@dataclass
class RequestRecord:
    """What the usage event and the access log need to know about one request."""

    audio_seconds: float = 0.0
    features: list[str] = field(default_factory=lambda: ["batch"])


def content_kind(content_type: str | None) -> str:
    """``json``, ``multipart``, ``raw`` or ``none`` (no body type given); other types are refused."""
    if not content_type:
        return "none"
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json":
        return "json"
    if media == "multipart/form-data":
        return "multipart"
    if media == "application/octet-stream" or media.startswith("audio/"):
        return "raw"
    raise InvalidParameter(
        f"Content-Type {media!r} is not accepted; use one of {', '.join(ACCEPTED_CONTENT_TYPES)}"
    )


async def read_body(kind: str, content_type: str, stream: AsyncIterator[bytes], max_bytes: int) -> ListenBody:
    if kind == "json":
        return await read_json(stream)
    if kind == "multipart":
        return await read_multipart(stream, content_type, max_bytes)
    audio = await read_raw(stream, max_bytes)
    if kind == "none" and audio:
        raise InvalidParameter(
            f"send a Content-Type with the body; accepted: {', '.join(ACCEPTED_CONTENT_TYPES)}"
        )
    return ListenBody(audio=audio if audio else None)


def merge_options(query: Mapping[str, str], body: Mapping[str, object]) -> ListenOptions:
    """Query parameters and body options together; a name given in both places is refused."""
    both = sorted(set(query) & set(body))
    if both:
        raise InvalidParameter(f"option(s) {', '.join(both)} given both in the query and in the body")
    return parse_listen_options({**query, **body})


def require_features(grant: Grant, options: ListenOptions) -> None:
    for feature in options.features():
        if feature == "punctuation":
            continue  # punctuation is the default output, never a separately sold feature
        if not grant.allows(feature):
            raise FeatureNotLicensed(
                f"this license does not include the '{feature}' feature; ask for a key that grants it",
                feature=feature,
            )


async def audio_of(body: ListenBody, policy: FetchPolicy) -> bytes:
    if body.audio is not None and body.url is not None:
        raise InvalidParameter("give either url or an audio file, not both")
    if body.url is not None:
        return await fetch_url(body.url, policy)
    if body.audio is None:
        raise MissingParameter("Missing required parameter: url or audio file")
    return body.audio


def listen_body(
    request_id: str, response: pb.TranscribeResponse, timestamps: bool, diarize: bool = False
) -> dict[str, Any]:
    """The ``POST /v1/listen`` 200 body (also a completed job's ``result``). With diarize:
    ``speakers`` segments, and ``speaker`` ("SPEAKER_00", ...) on each word."""
    body: dict[str, Any] = {
        "request_id": request_id,
        "text": response.text,
        "confidence": round(response.confidence, 4),
        "duration": round(response.duration, 3),
        "language": response.language,
    }
    if timestamps:
        body["words"] = [
            {
                "word": w.word,
                "start": round(w.start, 3),
                "end": round(w.end, 3),
                "confidence": round(w.confidence, 4),
                **({"speaker": speaker_label(w.speaker)} if diarize and w.HasField("speaker") else {}),
            }
            for w in response.words
        ]
    if diarize:
        body["speakers"] = [
            {
                "speaker": speaker_label(s.speaker),
                "text": s.text,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
            }
            for s in response.speakers
        ]
    return body


def speaker_label(speaker: int) -> str:
    """0 -> "SPEAKER_00": the documented labels, numbered by first appearance."""
    return f"SPEAKER_{speaker:02d}"


def check_container(audio: bytes) -> str:
    if not audio:
        raise EmptyAudio("the audio is empty (0 bytes)")
    container = sniff_format(audio[:65536])
    if container is None:
        what = describe_unsupported(audio[:65536])
        raise UnsupportedFormat(
            f"{what or 'the bytes are not a known audio container'}; send WAV, MP3, FLAC, OGG or M4A"
        )
    return container


@dataclass
class TranscriptionFlow:
    dispatcher: Dispatcher
    fetch_policy: FetchPolicy
    max_upload_bytes: int

    async def run(
        self,
        *,
        grant: Grant,
        request_id: str,
        query: Mapping[str, str],
        body_reader: AsyncIterator[bytes],
        content_type: str | None,
        record: RequestRecord,
    ) -> tuple[pb.TranscribeResponse, ListenOptions, ListenBody, int]:
        """Body -> options -> audio -> worker. Returns the worker's answer, the options in force, the
        body and the size in bytes of the audio that was transcribed. The caller has already
        validated ``query`` and admitted the request against the license limits."""
        body, options = await self.prepare(
            grant=grant, query=query, body_reader=body_reader, content_type=content_type, record=record
        )
        response, size = await self._transcribe(body, options, request_id, options.timestamps, record)
        return response, options, body, size

    async def prepare(
        self,
        *,
        grant: Grant,
        query: Mapping[str, str],
        body_reader: AsyncIterator[bytes],
        content_type: str | None,
        record: RequestRecord,
    ) -> tuple[ListenBody, ListenOptions]:
        """The first half of :meth:`run`: read the body, merge and check the options. The route then
        either transcribes (:meth:`transcribe_body`) or, with ``callback_url``, stores a job."""
        body = await read_body(
            content_kind(content_type), content_type or "", body_reader, self.max_upload_bytes
        )
        options = merge_options(query, body.options)
        record.features = options.features()
        require_features(grant, options)
        return body, options

    async def transcribe_body(
        self, body: ListenBody, options: ListenOptions, request_id: str, record: RequestRecord
    ) -> tuple[pb.TranscribeResponse, int]:
        """The second half of :meth:`run`: the audio (fetched when ``url``) to a worker."""
        return await self._transcribe(body, options, request_id, options.timestamps, record)

    async def run_compat(
        self,
        *,
        grant: Grant,
        request_id: str,
        options: ListenOptions,
        body_reader: AsyncIterator[bytes],
        content_type: str | None,
        record: RequestRecord,
    ) -> tuple[pb.TranscribeResponse, ListenOptions, ListenBody, int]:
        """The COMPAT route: options come only from the query; word times are always computed
        (utterances need them) and returned only when asked for."""
        body = await read_body(
            content_kind(content_type), content_type or "", body_reader, self.max_upload_bytes
        )
        if body.options:
            raise InvalidParameter(
                "this route takes options in the query string, not the body: "
                + ", ".join(sorted(body.options))
            )
        record.features = options.features()
        require_features(grant, options)
        response, size = await self._transcribe(body, options, request_id, True, record)
        return response, options, body, size

    async def _transcribe(
        self,
        body: ListenBody,
        options: ListenOptions,
        request_id: str,
        timestamps: bool,
        record: RequestRecord,
    ) -> tuple[pb.TranscribeResponse, int]:
        audio = await audio_of(body, self.fetch_policy)
        check_container(audio)
        response = await self.dispatcher.transcribe(
            audio,
            WorkerOptions(
                language=options.language,
                punctuate=options.punctuate,
                timestamps=timestamps,
                diarize=options.diarize,
                num_speakers=options.num_speakers,
            ),
            request_id,
        )
        record.audio_seconds = response.duration
        return response, len(audio)
