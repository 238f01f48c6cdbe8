"""COMPAT ``POST /api/v1/lightning/get_text``: the surface the vendor's images and scripts call.

Raw audio body (``application/octet-stream``, ``audio/*``) or JSON ``{"url": ...}``; options in the
query string. The answer uses the vendor's shape (``transcription``, ``audio_length``, ``words``,
``utterances``, ``metadata``) and errors are ``{"error": ..., "code": ...}`` with the vendor's
statuses (an oversized file is 413 here, not 422). Requires authentication like every other route.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api_server.errors import FeatureNotAvailable
from api_server.guard import admit, authenticate, error_response, release
from api_server.listen_options import ListenOptions, parse_bool, parse_language
from api_server.routes_listen import query_options
from api_server.schemas import CompatError, CompatResponse
from api_server.state import ApiState
from api_server.transcription import RequestRecord, require_features
from api_server.utterance_shapes import utterances
from oyez.errors import InvalidParameter, OyezError
from oyez.proto import asr_v1_pb2 as pb

router = APIRouter(tags=["compat"])
COMPAT_PARAMS = (
    "model",
    "language",
    "word_timestamps",
    "diarize",
    "age_detection",
    "gender_detection",
    "emotion_detection",
    "webhook_url",
    "webhook_extra",
)
_DETECTIONS = {"age_detection": "age", "gender_detection": "gender", "emotion_detection": "emotions"}
_BOOL = {"type": "string", "enum": ["true", "false"], "default": "false"}
COMPAT_OPENAPI: dict[str, Any] = {
    "parameters": [
        {"name": "model", "in": "query", "schema": {"type": "string", "default": "lightning"}},
        {"name": "language", "in": "query", "schema": {"type": "string", "default": "en"}},
        *(
            {"name": name, "in": "query", "schema": _BOOL}
            for name in (
                "word_timestamps",
                "diarize",
                "age_detection",
                "gender_detection",
                "emotion_detection",
            )
        ),
        {"name": "webhook_url", "in": "query", "schema": {"type": "string"}},
        {"name": "webhook_extra", "in": "query", "schema": {"type": "string"}},
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"url": {"type": "string", "format": "uri"}},
                    "required": ["url"],
                    "additionalProperties": False,
                }
            },
        },
    },
}
_COMPAT_STATUS = {"FILE_TOO_LARGE": 413}


def compat_options(query: dict[str, str]) -> tuple[ListenOptions, dict[str, bool]]:
    unknown = sorted(set(query) - set(COMPAT_PARAMS))
    if unknown:
        raise InvalidParameter(
            f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(COMPAT_PARAMS)}"
        )
    if query.get("webhook_url"):
        raise FeatureNotAvailable("webhook_url (asynchronous jobs) is not available in this release")
    if query.get("webhook_extra"):
        raise InvalidParameter("webhook_extra is only meaningful with webhook_url")
    detections = {name: parse_bool(name, query.get(name, "false")) for name in _DETECTIONS}
    options = ListenOptions(
        language=parse_language(query.get("language", "en")),
        timestamps=parse_bool("word_timestamps", query.get("word_timestamps", "false")),
        diarize=parse_bool("diarize", query.get("diarize", "false")),
    )
    return options, detections


def compat_body(
    response: pb.TranscribeResponse,
    *,
    word_timestamps: bool,
    detections: dict[str, bool],
    diarize: bool = False,
    size: int,
    filename: str | None,
) -> dict[str, Any]:
    timed: list[dict[str, Any]] = [
        {
            "word": w.word,
            "start": w.start,
            "end": w.end,
            # The vendor's diarized words and utterances name speakers "speaker_0", "speaker_1", ...
            **({"speaker": f"speaker_{w.speaker}"} if diarize and w.HasField("speaker") else {}),
        }
        for w in response.words
    ]
    body: dict[str, Any] = {
        "status": "success",
        "transcription": response.text,
        "audio_length": round(response.duration, 3),
        "words": [{**w, "start": round(w["start"], 3), "end": round(w["end"], 3)} for w in timed]
        if word_timestamps
        else [],
        "utterances": utterances(timed),
        "metadata": {"duration": round(response.duration, 3), "fileSize": size},
    }
    if filename:
        body["metadata"]["filename"] = filename
    for name, field in _DETECTIONS.items():
        if detections[name]:
            body[field] = None  # requested, but this build has no such model: null, not invented
    return body


def _compat_error(exc: OyezError) -> JSONResponse:
    response = error_response(exc)
    status = _COMPAT_STATUS.get(exc.code)
    if status is not None:
        response.status_code = status
    return response


@router.post(
    "/api/v1/lightning/get_text",
    response_model=CompatResponse,
    responses={s: {"model": CompatError} for s in (400, 401, 403, 413, 415, 422, 429, 503, 504)},
    openapi_extra=COMPAT_OPENAPI,
    summary="COMPAT: transcribe a raw audio body or a URL (vendor response shape)",
)
async def get_text(request: Request) -> JSONResponse:
    state: ApiState = request.app.state.api
    request_id: str = request.state.request_id
    try:
        grant = await authenticate(state, request)
        record = RequestRecord()
        request.state.record = record
        options, detections = compat_options(query_options(request))
        require_features(grant, options)
        lease = await admit(state, grant)
        state.metrics.in_flight.inc()
        try:
            response, _, body, size = await state.flow.run_compat(
                grant=grant,
                request_id=request_id,
                options=options,
                body_reader=request.stream(),
                content_type=request.headers.get("content-type"),
                record=record,
            )
        finally:
            state.metrics.in_flight.dec()
            await release(state, lease, grant, record.audio_seconds)
    except OyezError as exc:
        return _compat_error(exc)
    state.metrics.audio_seconds.inc(record.audio_seconds)
    return JSONResponse(
        compat_body(
            response,
            word_timestamps=options.timestamps,
            detections=detections,
            diarize=options.diarize,
            size=size,
            filename=body.filename,
        )
    )
