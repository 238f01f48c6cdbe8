"""Health, readiness and metrics routes (no authentication)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from api_server.health import ComponentState
from api_server.schemas import ComponentHealthBody, DetailedHealthBody, HealthBody, ReadyBody
from api_server.state import ApiState
from oyez import __version__

router = APIRouter(tags=["health"])
_UNHEALTHY: dict[int | str, dict[str, Any]] = {
    503: {"description": "A dependency is unavailable", "model": HealthBody}
}


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


def _first_problem(components: dict[str, ComponentState], draining: bool) -> str | None:
    if draining:
        return "Shutting down"
    for name in ("lightning_asr", "license_proxy", "redis"):
        if not components[name].ok:
            return components[name].reason or f"{name} unhealthy"
    return None


@router.get(
    "/health",
    response_model=HealthBody | DetailedHealthBody,
    responses={503: {"description": "A dependency is unavailable", "model": HealthBody | DetailedHealthBody}},
)
async def health(request: Request, detailed: bool = Query(default=False)) -> JSONResponse:
    """200 when a worker and the license proxy are reachable and the license valid (and Redis, if
    configured); else 503 with the first problem as ``reason``."""
    state = _state(request)
    components = await state.health.all()
    state.metrics.workers_ready.set(len(state.directory.ready_workers()))
    problem = _first_problem(components, state.draining)
    body: dict[str, Any] = {"status": "unhealthy" if problem else "healthy"}
    if problem:
        body["reason"] = problem
    if detailed:
        body["components"] = {"api_server": "unhealthy" if state.draining else "healthy"} | {
            name: component.status for name, component in components.items()
        }
        body["uptime_seconds"] = int(time.monotonic() - state.started_at)
        body["version"] = __version__
    return JSONResponse(body, status_code=503 if problem else 200)


def _component(state: ComponentState) -> JSONResponse:
    body: dict[str, Any] = {"status": state.status}
    if state.reason:
        body["reason"] = state.reason
    body["detail"] = state.detail
    return JSONResponse(body, status_code=200 if state.ok else 503)


@router.get("/health/asr", response_model=ComponentHealthBody, responses=_UNHEALTHY)
async def health_asr(request: Request) -> JSONResponse:
    return _component(_state(request).health.workers())


@router.get("/health/license", response_model=ComponentHealthBody, responses=_UNHEALTHY)
async def health_license(request: Request) -> JSONResponse:
    return _component(await _state(request).health.license())


@router.get("/health/redis", response_model=ComponentHealthBody, responses=_UNHEALTHY)
async def health_redis(request: Request) -> JSONResponse:
    return _component(await _state(request).health.redis())


@router.get("/api/v1/health")
async def liveness() -> dict[str, str]:
    """Liveness: 200 while the process serves HTTP at all."""
    return {"status": "alive"}


@router.get("/healthz", response_model=ReadyBody, responses={503: {"model": ReadyBody}})
async def readiness(request: Request) -> JSONResponse:
    """Readiness: ``{"ready": true}`` only when every dependency is healthy."""
    state = _state(request)
    problem = _first_problem(await state.health.all(), state.draining)
    if problem:
        return JSONResponse({"ready": False, "reason": problem}, status_code=503)
    return JSONResponse({"ready": True})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.export(), media_type="text/plain; version=0.0.4; charset=utf-8")
