"""``/v1/listen/stream``: live transcription over a WebSocket (api-contract.md C8, Decisions).

Before the upgrade, every refusal is a plain HTTP answer with the documented JSON body: 401 (no or
bad key; the key comes from ``Authorization`` or the subprotocol pair ``token, <key>``), 403
(license expired, streaming not licensed), 400 (a bad query parameter, named), 503 (no streaming
worker). After it: binary frames are audio, text frames are controls (``finalize``,
``close_stream`` / ``end``, ``KeepAlive``); results are JSON text frames. A license limit or no
free worker slot ends the session with an error message and close code 1008, as does
``OYEZ_STREAM_IDLE_TIMEOUT_S`` without audio or KeepAlive; ``close_stream`` ends it with the
terminal ``is_last`` result and 1000.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from api_server.errors import FeatureNotLicensed, InvalidLicense, NoWorkers, http_error
from api_server.guard import admit, client_ip, release
from api_server.license_gate import Grant
from api_server.limits import Lease, RateLimited
from api_server.state import ApiState
from api_server.stream_bridge import StreamBridge, StreamRefused, WorkerLost
from api_server.stream_params import StreamParams, parse_stream_params
from api_server.usage import StreamUsageMark, usage_event
from oyez.errors import OyezError, UnsupportedLanguage
from oyez.http_auth import key_from_authorization
from oyez.logs import bind_request_id, clear_request_id, get_logger

router = APIRouter()
_log = get_logger("api_server.stream")
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455 5.5: control frame payload <= 125 bytes, 2 are the code
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013
SUBPROTOCOL_TOKEN = "token"  # noqa: S105 - the subprotocol name, not a secret


class _Refusal(Exception):
    def __init__(self, error: OyezError) -> None:
        self.error = error


def _key_and_subprotocol(websocket: WebSocket) -> tuple[str | None, str | None]:
    header = websocket.headers.get("authorization")
    if header:
        return key_from_authorization(header), None
    offered = [p.strip() for p in websocket.scope.get("subprotocols", [])]
    if len(offered) >= 2 and offered[0].lower() == SUBPROTOCOL_TOKEN and offered[1]:
        return offered[1], offered[0]
    return None, None


async def _deny(websocket: WebSocket, error: OyezError) -> None:
    answer = http_error(error)
    response = JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:  # the server cannot send an HTTP answer on a WebSocket request
        await websocket.close(code=CLOSE_POLICY)


async def _check_before_upgrade(state: ApiState, websocket: WebSocket) -> tuple[Grant, StreamParams]:
    key, _ = _key_and_subprotocol(websocket)
    if key is None:
        _log.warning("Missing Authorization header", ip=client_ip(websocket))  # type: ignore[arg-type]
        raise _Refusal(
            InvalidLicense(
                "send 'Authorization: Token <key>' or the WebSocket subprotocols 'token, <key>'",
                reason="KEY_MISSING",
            )
        )
    try:
        grant = await state.gate.check(key)
    except InvalidLicense as exc:
        _log.warning(f"Invalid license key from {client_ip(websocket)}")  # type: ignore[arg-type]
        raise _Refusal(exc) from None
    except OyezError as exc:
        raise _Refusal(exc) from None
    try:
        params = parse_stream_params(dict(websocket.query_params))
    except OyezError as exc:
        raise _Refusal(exc) from None
    for feature in params.features():
        if feature != "punctuation" and not grant.allows(feature):
            raise _Refusal(
                FeatureNotLicensed(f"this license does not include the '{feature}' feature", feature=feature)
            )
    if not state.directory.ready_workers():
        _log.warning("No Lightning ASR workers available")
        raise _Refusal(NoWorkers("No streaming backend is available: no ASR worker is ready"))
    languages = state.directory.languages()
    if languages is not None and params.language not in languages:
        raise _Refusal(
            UnsupportedLanguage(
                f"no loaded model transcribes language {params.language!r}; "
                f"available: {', '.join(sorted(languages))}"
            )
        )
    return grant, params


def close_reason(message: str) -> str:
    """``message`` cut to what a close frame may carry: 123 bytes of UTF-8, whole characters only
    (a longer reason makes the server drop the connection without a close frame)."""
    return message.encode("utf-8")[:MAX_CLOSE_REASON_BYTES].decode("utf-8", errors="ignore")


async def _send_error(websocket: WebSocket, session_id: str, message: str, code: str, close: int) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_json(
            {"type": "error", "status": "error", "session_id": session_id, "code": code, "message": message}
        )
    with contextlib.suppress(Exception):
        await websocket.close(code=close, reason=close_reason(message))


@dataclass(frozen=True)
class _ClientProblem:
    """Why the client side of a session ends early: the error code, close code and message."""

    code: str
    close: int
    message: str


async def _pump_client(websocket: WebSocket, bridge: StreamBridge, idle_s: float) -> _ClientProblem | None:
    """Client frames into the bridge until ``close_stream``; returns a problem to report, if any."""
    while True:
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout=idle_s)
        except TimeoutError:
            if bridge.owes_results:
                continue  # the client is waiting for a finalize result, not idle
            reason = f"no audio or KeepAlive for {idle_s:g} s; closing the idle stream"
            return _ClientProblem("STREAM_IDLE", CLOSE_POLICY, reason)
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("bytes") is not None:
            await bridge.audio(message["bytes"])
            continue
        text = message.get("text") or ""
        try:
            control = json.loads(text)
            kind = control.get("type") if isinstance(control, dict) else None
        except ValueError:
            kind = None
        if kind == "KeepAlive":
            continue
        if kind == "finalize":
            await bridge.finalize()
        elif kind in ("close_stream", "end", "CloseStream"):
            await bridge.close()
            return None
        else:
            reason = (
                f"unknown control message {text[:80]!r}; send binary audio frames or JSON "
                '{"type": "finalize" | "close_stream" | "KeepAlive"}'
            )
            return _ClientProblem("INVALID_MESSAGE", CLOSE_UNSUPPORTED, reason)


@router.websocket("/v1/listen/stream")
async def listen_stream(websocket: WebSocket) -> None:
    state: ApiState = websocket.app.state.api
    request_id = f"req_{uuid.uuid4().hex[:16]}"
    session_id = str(uuid.uuid4())
    bind_request_id(request_id)
    _log.info(f"GET /v1/listen/stream from {client_ip(websocket)}", session_id=session_id)  # type: ignore[arg-type]
    try:
        grant, params = await _check_before_upgrade(state, websocket)
    except _Refusal as refusal:
        await _deny(websocket, refusal.error)
        _log.info(f"Status: {http_error(refusal.error).status} (stream refused before upgrade)")
        clear_request_id()
        return
    _, subprotocol = _key_and_subprotocol(websocket)
    await websocket.accept(subprotocol=subprotocol)
    started = time.perf_counter()
    lease: Lease | None = None
    bridge: StreamBridge | None = None
    outcome = "completed"
    mark = state.usage.stream_mark(request_id, params.features()) if state.usage is not None else None
    try:
        lease = await admit(state, grant)
        bridge = await _run_session(state, websocket, params, session_id, request_id, mark)
    except RateLimited as exc:
        outcome = "rate limited"
        await _send_error(websocket, session_id, exc.message, exc.code, CLOSE_POLICY)
    except NoWorkers as exc:
        outcome = "no worker slot"
        await _send_error(websocket, session_id, exc.message, exc.code, CLOSE_POLICY)
    except WebSocketDisconnect:
        outcome = "client disconnected"
    except OyezError as exc:  # e.g. the language, refused after the upgrade by the worker pool
        outcome = f"refused ({exc.code})"
        await _send_error(websocket, session_id, exc.message, exc.code, CLOSE_POLICY)
    finally:
        await release(state, lease, grant, bridge.audio_seconds if bridge else 0.0)
        seconds = bridge.audio_seconds if bridge else 0.0
        if state.usage is not None:
            await state.usage.record(
                usage_event(
                    request_id,
                    audio_seconds=seconds,
                    features=params.features(),
                    response_code=101
                    if outcome == "completed"
                    else 429
                    if outcome == "rate limited"
                    else 499,
                )
            )
        if mark is not None:
            await mark.drop()
        _log.info(
            f"Stream {outcome}: {session_id}",
            audio_seconds=round(seconds, 3),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            failovers=bridge.failovers if bridge else 0,
        )
        clear_request_id()


async def _run_session(
    state: ApiState,
    websocket: WebSocket,
    params: StreamParams,
    session_id: str,
    request_id: str,
    mark: StreamUsageMark | None,
) -> StreamBridge:
    async def send(body: dict[str, Any]) -> None:
        await websocket.send_text(json.dumps(body))

    await state.streams.create(session_id, "", {"params": params.__dict__})
    bridge = StreamBridge(
        session_id=session_id,
        request_id=request_id,
        params=params,
        dispatcher=state.dispatcher,
        store=state.streams,
        send_json=send,
    )
    state.metrics.stream_queue_depth.inc()
    state.metrics.active_streams.inc()
    worker_task = asyncio.create_task(bridge.run())
    client_task = asyncio.create_task(_pump_client(websocket, bridge, state.settings.stream_idle_timeout_s))
    slot_task = asyncio.create_task(bridge.connected.wait())
    slot_task.add_done_callback(lambda _: state.metrics.stream_queue_depth.dec())
    mark_task = asyncio.create_task(mark.keep(lambda: bridge.audio_seconds)) if mark is not None else None
    try:
        await asyncio.wait({worker_task, client_task}, return_when=asyncio.FIRST_COMPLETED)
        if client_task.done() and not worker_task.done():
            problem = client_task.result()  # re-raises WebSocketDisconnect
            if problem is not None:
                await _send_error(websocket, session_id, problem.message, problem.code, problem.close)
                return bridge
            await asyncio.wait({worker_task})  # the client said close_stream: wait for the last result
        try:
            worker_task.result()
        except StreamRefused as exc:
            await _send_error(websocket, session_id, exc.message, exc.code, CLOSE_POLICY)
            return bridge
        except WorkerLost as exc:
            await _send_error(
                websocket,
                session_id,
                f"the stream could not continue: {exc}",
                "SERVICE_UNAVAILABLE",
                CLOSE_TRY_AGAIN,
            )
            return bridge
        if websocket.client_state == WebSocketState.CONNECTED:
            await websocket.close(code=CLOSE_NORMAL)
        return bridge
    finally:
        state.metrics.active_streams.dec()
        state.metrics.stream_failovers.inc(bridge.failovers)
        if mark is not None:
            mark.stop()
        for task in (client_task, worker_task, slot_task, *([mark_task] if mark_task else [])):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception, WebSocketDisconnect):
                await task
        with contextlib.suppress(Exception):
            await state.streams.delete(session_id)
