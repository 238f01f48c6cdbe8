"""Asynchronous jobs on the HTTP surface: accepting one (``POST /v1/listen`` with ``callback_url``,
called by :mod:`api_server.routes_listen`) and ``GET /v1/listen/jobs/{job_id}``.

A job is visible only to keys of the license that created it; any other id (unknown, expired, or
another license's) is the same 404, so job ids cannot be probed across licenses.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api_server.errors import (
    REDIS_FAILURES,
    FeatureNotAvailable,
    JobNotFound,
    JobsUnavailable,
    MissingParameter,
)
from api_server.guard import authenticate
from api_server.job_runner import JobRunner
from api_server.jobs import Job, new_job_id, valid_job_id
from api_server.license_gate import Grant
from api_server.listen_options import ListenOptions
from api_server.request_body import ListenBody
from api_server.schemas import ErrorBody, ListenResponse
from api_server.state import ApiState
from api_server.transcription import check_container
from api_server.url_fetch import UrlFetchFailed, check_audio_url, check_http_url
from oyez.errors import InvalidParameter
from oyez.logs import get_logger

router = APIRouter(tags=["transcription"])
_log = get_logger("api_server.jobs")
STORE_RETRY_AFTER_S = 5


class JobAccepted(BaseModel):
    job_id: str = Field(pattern=r"^job_")
    status: Literal["processing"]


class JobWebhook(BaseModel):
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None = None


class JobView(BaseModel):
    job_id: str
    status: Literal["processing", "completed", "failed"]
    result: ListenResponse | None = Field(default=None, description="When completed.")
    error: str | None = Field(default=None, description="When failed; with code and detail.")
    code: str | None = None
    detail: str | None = None
    created_at: str
    completed_at: str | None = None
    webhook: JobWebhook


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


def require_jobs(state: ApiState) -> JobRunner:
    if state.jobs is None:
        raise FeatureNotAvailable(
            "asynchronous jobs need Redis (REDIS_URL): this server has none, so callback_url cannot be "
            "served; omit it to get the result in the response"
        )
    return state.jobs


def _store_down(exc: BaseException) -> JobsUnavailable:
    _log.warning(f"Job store (Redis) unavailable: {exc}")
    return JobsUnavailable(
        "the job store (Redis) is unreachable; retry shortly", retry_after=STORE_RETRY_AFTER_S
    )


async def accept_job(
    state: ApiState, grant: Grant, request_id: str, body: ListenBody, options: ListenOptions
) -> dict[str, Any]:
    """Check, store and queue a job; the immediate answer ``{"job_id", "status": "processing"}``.
    Everything that can be refused now is: the callback's host (SSRF guard), the audio URL's shape
    and host, the audio container, the spool's size."""
    runner = require_jobs(state)
    policy = state.flow.fetch_policy
    callback_url = options.callback_url
    assert callback_url is not None
    try:
        await check_http_url(callback_url, policy, name="callback_url", what="callback URL")
    except UrlFetchFailed as exc:
        raise InvalidParameter(exc.message) from None
    audio: bytes | None = None
    if body.audio is not None and body.url is not None:
        raise InvalidParameter("give either url or an audio file, not both")
    if body.url is not None:
        await check_audio_url(body.url, policy)
    elif body.audio is None:
        raise MissingParameter("Missing required parameter: url or audio file")
    else:
        check_container(body.audio)
        audio = body.audio
    now = time.time()
    job = Job(
        job_id=new_job_id(),
        license_id=grant.license_id,
        request_id=request_id,
        callback_url=callback_url,
        created_at=now,
        updated_at=now,
        language=options.language,
        punctuate=options.punctuate,
        timestamps=options.timestamps,
        diarize=options.diarize,
        num_speakers=options.num_speakers,
        features=options.features(),
        url=body.url,
    )
    try:
        await runner.store.submit(job, audio)
    except REDIS_FAILURES as exc:
        raise _store_down(exc) from None
    source = f"{len(audio)} bytes of audio" if audio is not None else "an audio URL"
    _log.info(f"Job {job.job_id} accepted ({source})")
    return {"job_id": job.job_id, "status": "processing"}


@router.get(
    "/v1/listen/jobs/{job_id}",
    response_model=JobView,
    response_model_exclude_none=True,
    responses={
        400: {"model": ErrorBody, "description": "This server has no Redis, so no jobs"},
        401: {"model": ErrorBody, "description": "Missing or invalid license key"},
        404: {"model": ErrorBody, "description": "No such job for this license (or it expired)"},
        503: {"model": ErrorBody, "description": "The job store (Redis) is unreachable"},
    },
    summary="Status and result of an asynchronous (callback_url) job",
)
async def get_job(job_id: str, request: Request) -> JSONResponse:
    state = _state(request)
    grant = await authenticate(state, request)
    runner = require_jobs(state)
    job: Job | None = None
    if valid_job_id(job_id):
        try:
            job = await runner.store.load(job_id)
        except REDIS_FAILURES as exc:
            raise _store_down(exc) from None
    if job is None or job.license_id != grant.license_id:
        raise JobNotFound("Job not found")
    return JSONResponse(job.view())
