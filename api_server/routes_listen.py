"""``POST /v1/listen``: batch transcription (multipart ``audio``, raw audio body, or JSON ``url``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api_server.guard import admit, authenticate, release
from api_server.listen_options import KNOWN_OPTIONS, parse_listen_options
from api_server.routes_jobs import JobAccepted, accept_job, require_jobs
from api_server.schemas import ErrorBody, ListenResponse
from api_server.state import ApiState
from api_server.transcription import RequestRecord, listen_body, require_features
from oyez.errors import InvalidParameter

__all__ = ["listen_body", "router"]

router = APIRouter(tags=["transcription"])

_BOOL = {"type": "string", "enum": ["true", "false"]}
_OPTION_SCHEMAS: dict[str, dict[str, Any]] = {
    "language": {"type": "string", "default": "en", "pattern": "^[a-zA-Z]{2,3}$"},
    "punctuate": {**_BOOL, "default": "true"},
    "diarize": {**_BOOL, "default": "false", "description": "true: `speakers` turns, `speaker` on words"},
    "num_speakers": {
        "type": "integer",
        "minimum": 1,
        "maximum": 32,
        "description": "with diarize: the expected number of speakers (a ceiling the audio must support)",
    },
    "timestamps": {**_BOOL, "default": "false"},
    "callback_url": {
        "type": "string",
        "description": "asynchronous job: 200 {job_id, status: processing} at once, the result by a "
        "signed webhook to this URL and at GET /v1/listen/jobs/{job_id} (needs the callbacks feature)",
    },
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


@router.post(
    "/v1/listen",
    response_model=ListenResponse | JobAccepted,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    openapi_extra=LISTEN_OPENAPI,
    summary="Transcribe an audio file or URL",
    description="Options: "
    + ", ".join(KNOWN_OPTIONS)
    + " (query string, form fields or JSON members). With callback_url the answer is "
    + "200 {job_id, status: processing} at once (JobAccepted) and the result arrives by webhook.",
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
    if early.callback_url is not None:
        require_jobs(state)
    lease = await admit(state, grant)
    state.metrics.in_flight.inc()
    try:
        body, options = await state.flow.prepare(
            grant=grant,
            query=query,
            body_reader=request.stream(),
            content_type=request.headers.get("content-type"),
            record=record,
        )
        if options.callback_url is not None:
            # Asynchronous: store the job and answer at once; a job runner transcribes it.
            return JSONResponse(await accept_job(state, grant, request_id, body, options))
        response, _ = await state.flow.transcribe_body(body, options, request_id, record)
    finally:
        state.metrics.in_flight.dec()
        await release(state, lease, grant, record.audio_seconds)
    state.metrics.audio_seconds.inc(record.audio_seconds)
    return JSONResponse(listen_body(request_id, response, options.timestamps, options.diarize))
