"""``POST /v1/listen``: batch transcription (multipart ``audio``, raw audio body, or JSON ``url``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api_server.guard import admit, authenticate, release
from api_server.listen_options import KNOWN_OPTIONS, parse_listen_options
from api_server.schemas import ErrorBody, ListenResponse
from api_server.state import ApiState
from api_server.transcription import RequestRecord, require_features
from oyez.errors import InvalidParameter
from oyez.proto import asr_v1_pb2 as pb

router = APIRouter(tags=["transcription"])

_BOOL = {"type": "string", "enum": ["true", "false"]}
_OPTION_SCHEMAS: dict[str, dict[str, Any]] = {
    "language": {"type": "string", "default": "en", "pattern": "^[a-zA-Z]{2,3}$"},
    "punctuate": {**_BOOL, "default": "true"},
    "diarize": {**_BOOL, "default": "false", "description": "true is refused (FEATURE_NOT_AVAILABLE)"},
    "num_speakers": {"type": "integer", "minimum": 1, "maximum": 32, "description": "refused, as diarize"},
    "timestamps": {**_BOOL, "default": "false"},
    "callback_url": {"type": "string", "description": "refused in this release (FEATURE_NOT_AVAILABLE)"},
}
_JSON_OPTIONS = {
    "language": {"type": "string", "default": "en"},
    "punctuate": {"type": "boolean", "default": True},
    "diarize": {"type": "boolean", "default": False},
    "num_speakers": {"type": "integer", "minimum": 1, "maximum": 32},
    "timestamps": {"type": "boolean", "default": False},
    "callback_url": {"type": "string"},
}
LISTEN_OPENAPI: dict[str, Any] = {
    "parameters": [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in _OPTION_SCHEMAS.items()
    ],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "audio": {"type": "string", "format": "binary"},
                        "url": {"type": "string"},
                        **_OPTION_SCHEMAS,
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"url": {"type": "string", "format": "uri"}, **_JSON_OPTIONS},
                    "required": ["url"],
                    "additionalProperties": False,
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "Bad request (missing or invalid parameter, empty audio, unreachable url)",
        401: "Missing or invalid license key",
        403: "License expired, or feature not licensed",
        413: "A JSON body or form field too large",
        415: "Unsupported audio format",
        422: "Audio file too large or too long",
        429: "A license limit reached (Retry-After)",
        503: "No ASR workers available, or the license proxy unreachable (Retry-After)",
        504: "Request timeout",
    }.items()
}


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


def query_options(request: Request) -> dict[str, str]:
    """The query string as options; a repeated name is refused rather than silently picked."""
    items = request.query_params.multi_items()
    names = [name for name, _ in items]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidParameter(f"option(s) {', '.join(repeated)} given more than once")
    return dict(items)


def listen_body(request_id: str, response: pb.TranscribeResponse, timestamps: bool) -> dict[str, Any]:
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
            }
            for w in response.words
        ]
    return body


@router.post(
    "/v1/listen",
    response_model=ListenResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    openapi_extra=LISTEN_OPENAPI,
    summary="Transcribe an audio file or URL",
    description="Options: " + ", ".join(KNOWN_OPTIONS) + " (query string, form fields or JSON members).",
)
async def listen(request: Request) -> JSONResponse:
    state = _state(request)
    request_id: str = request.state.request_id
    grant = await authenticate(state, request)
    record = RequestRecord()
    request.state.record = record
    query = query_options(request)
    early = parse_listen_options(query)
    require_features(grant, early)
    lease = await admit(state, grant)
    state.metrics.in_flight.inc()
    try:
        response, options, _, _ = await state.flow.run(
            grant=grant,
            request_id=request_id,
            query=query,
            body_reader=request.stream(),
            content_type=request.headers.get("content-type"),
            record=record,
        )
    finally:
        state.metrics.in_flight.dec()
        await release(state, lease, grant, record.audio_seconds)
    state.metrics.audio_seconds.inc(record.audio_seconds)
    return JSONResponse(listen_body(request_id, response, options.timestamps))
