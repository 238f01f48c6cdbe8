"""Hostile WebSocket clients against the real stack (hypothesis): random binary frames in every
encoding, control messages of the wrong type or shape, random text, huge frames. Every session ends
with documented messages and a documented close code, never an internal error; the API stays
healthy and logs no traceback."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.fuzzing import fuzz_settings
from tests.integration.api_stack import ApiStack

DOCUMENTED_CLOSES = {1000, 1003, 1008, 1009}  # normal, unsupported data, policy, message too big
MESSAGE_TYPES = {"transcription", "error", "speech_started", "speech_ended"}
STREAM_SETUPS = [
    {"encoding": "linear16", "sample_rate": "16000"},
    {"encoding": "linear32", "sample_rate": "48000"},
    {"encoding": "mulaw", "sample_rate": "8000"},
    {"encoding": "alaw", "sample_rate": "8000"},
    {"encoding": "opus", "sample_rate": "48000"},
    {"encoding": "ogg_opus", "sample_rate": "48000"},
    {"encoding": "linear16", "sample_rate": "16000", "diarize": "true", "word_timestamps": "true"},
]
CONTROL_SHAPES = st.one_of(
    st.sampled_from(["finalize", "close_stream", "end", "KeepAlive", "CloseStream", "Finalize", ""]).map(
        lambda kind: json.dumps({"type": kind})
    ),
    st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=3), st.text(max_size=10)).map(
        lambda kind: json.dumps({"type": kind})
    ),
    st.sampled_from(["null", "[]", "{}", "42", '"finalize"', '{"type":', "\x00", " "]),
    st.text(max_size=200),
)
ACTIONS = st.one_of(
    st.binary(max_size=8192).map(lambda data: ("bytes", data)),
    CONTROL_SHAPES.map(lambda text: ("text", text)),
)


def _open(stack: ApiStack, params: dict[str, str]) -> ClientConnection:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return connect(
        f"ws://127.0.0.1:{stack.api_port}/v1/listen/stream?{query}",
        additional_headers={"Authorization": f"Token {stack.key}"},
        open_timeout=30,
        max_size=None,
    )


def _play(stack: ApiStack, params: dict[str, str], actions: list[tuple[str, Any]]) -> tuple[list[Any], int]:
    """Send the actions then ``close_stream``; everything received, and the close code."""
    received: list[Any] = []
    with _open(stack, params) as ws:
        try:
            for kind, payload in [*actions, ("text", json.dumps({"type": "close_stream"}))]:
                ws.send(payload if kind == "text" else bytes(payload))
            while True:
                received.append(ws.recv(timeout=120))
        except ConnectionClosed as closed:
            while True:  # what arrived before the close frame is still readable
                try:
                    received.append(ws.recv(timeout=1))
                except (ConnectionClosed, TimeoutError):
                    break
            code = closed.rcvd.code if closed.rcvd is not None else 1006
    return received, code


def _check(received: list[Any], code: int) -> None:
    assert code in DOCUMENTED_CLOSES, f"close code {code}: {received[-2:]}"
    for raw in received:
        assert isinstance(raw, str), "the server sends JSON text frames only"
        message = json.loads(raw)
        assert isinstance(message, dict) and message.get("type") in MESSAGE_TYPES, message
        if message["type"] == "error":
            assert message["code"] and message["message"] and message["status"] == "error"
    errors = [json.loads(raw) for raw in received if '"type": "error"' in raw or '"type":"error"' in raw]
    if code != 1000:
        assert errors, f"closed with {code} without saying why"


@pytest.fixture(scope="module")
def stack(api_stack: ApiStack) -> ApiStack:
    return api_stack


@fuzz_settings(30)
@given(st.sampled_from(STREAM_SETUPS), st.lists(ACTIONS, max_size=8))
def test_random_sessions_end_with_documented_messages_and_close_codes(
    stack: ApiStack, params: dict[str, str], actions: list[tuple[str, Any]]
) -> None:
    received, code = _play(stack, params, actions)
    _check(received, code)


def test_a_frame_over_the_size_limit_closes_with_1009(stack: ApiStack) -> None:
    received, code = _play(stack, STREAM_SETUPS[0], [("bytes", bytes(17 * 1024 * 1024))])
    assert code == 1009, received


def test_a_huge_text_frame_is_an_unsupported_message(stack: ApiStack) -> None:
    received, code = _play(stack, STREAM_SETUPS[0], [("text", "x" * (1024 * 1024))])
    assert code == 1003
    assert json.loads(received[-1])["code"] == "INVALID_MESSAGE"


def test_the_api_is_healthy_and_logged_no_traceback_after_the_fuzzing(stack: ApiStack) -> None:
    response = httpx.get(f"http://127.0.0.1:{stack.api_port}/health", timeout=10)
    assert response.status_code == 200, response.text
    assert stack.api is not None
    for name, log in [("api", stack.api.log), *((f"worker {w.address}", w.proc.log) for w in stack.workers)]:
        at = log.find("Traceback")
        assert at < 0, f"{name} logged a traceback:\n{log[max(0, at - 600) : at + 4000]}"
