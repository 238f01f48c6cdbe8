"""``/v1/listen/stream`` over a real WebSocket against the real stack (api-contract.md C8)."""

from __future__ import annotations

import itertools
import json
import re
import time
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.integration.api_stack import ApiStack, clear_limits, normalise
from tests.license_support import dev_key
from tests.speech_data import SPEECH_DIR

SR = 16000
FRAME_BYTES = 4096  # the recommended frame: 128 ms of 16 kHz linear16


def pcm16(path_name: str) -> bytes:
    samples, rate = sf.read(SPEECH_DIR / path_name, dtype="int16")
    assert rate == SR
    return samples.tobytes()


JFK = pcm16("jfk.wav")
AUSTEN = pcm16("librivox_0870.wav")
AUSTEN_2 = pcm16("librivox_0880.wav")
SILENCE_2S = bytes(2 * SR * 2)


def lin2ulaw(pcm: np.ndarray) -> bytes:
    """G.711 mu-law encoding (what a telephony client sends)."""
    bias, clip = 0x84, 32635
    value = np.clip(pcm.astype(np.int32), -clip, clip)
    sign = np.where(value < 0, 0x80, 0)
    magnitude = np.abs(value) + bias
    exponent = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 7, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def ws_url(stack: ApiStack, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"ws://127.0.0.1:{stack.api_port}/v1/listen/stream" + (f"?{query}" if query else "")


def open_stream(stack: ApiStack, key: str | None = None, **params: str) -> ClientConnection:
    return connect(
        ws_url(stack, **params),
        additional_headers={"Authorization": f"Token {key or stack.key}"},
        open_timeout=30,
        max_size=None,
    )


def send_audio(ws: ClientConnection, audio: bytes, pace_s: float = 0.0) -> None:
    for start in range(0, len(audio), FRAME_BYTES):
        ws.send(audio[start : start + FRAME_BYTES])
        if pace_s:
            time.sleep(pace_s)


def collect(ws: ClientConnection, until_last: bool = True, timeout_s: float = 120) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            raw = ws.recv(timeout=deadline - time.monotonic())
        except ConnectionClosed:
            return messages
        message = json.loads(raw)
        messages.append(message)
        if until_last and message.get("is_last"):
            return messages
    raise AssertionError(f"no terminal message within {timeout_s}s: {messages[-3:]}")


def finals_text(messages: list[dict[str, Any]]) -> str:
    return " ".join(m["transcript"] for m in messages if m.get("type") == "transcription" and m["is_final"])


def test_stream_interims_finals_events_and_close(api_stack: ApiStack) -> None:
    params = {
        "word_timestamps": "true",
        "vad_events": "true",
        "full_transcript": "true",
        "sentence_timestamps": "true",
    }
    with open_stream(api_stack, **params) as ws:
        send_audio(ws, JFK + SILENCE_2S + AUSTEN + SILENCE_2S, pace_s=0.01)
        ws.send(json.dumps({"type": "close_stream"}))
        messages = collect(ws)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    transcripts = [m for m in messages if m["type"] == "transcription"]
    session_ids = {m["session_id"] for m in messages}
    assert len(session_ids) == 1 and re.match(r"^[0-9a-f-]{36}$", session_ids.pop())
    interims = [m for m in transcripts if not m["is_final"]]
    finals = [m for m in transcripts if m["is_final"]]
    assert interims and transcripts.index(interims[0]) < transcripts.index(finals[0])
    assert all(m["transcription"] == m["transcript"] and m["status"] == "success" for m in transcripts)
    assert finals[-1]["is_last"] and sum(bool(m.get("is_last")) for m in messages) == 1
    assert all(m["language"] == "en" and m["languages"] == ["en"] for m in finals)
    text = normalise(finals_text(messages))
    assert "ask not what your country can do for you" in text and "dashwood" in text
    assert (
        normalise(finals[-1]["full_transcript"]) == text or normalise(finals[-2]["full_transcript"]) == text
    )
    words = [w for m in finals for w in m["words"]]
    assert words and all(set(w) == {"word", "start", "end", "confidence"} for w in words)
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    austen_words = [w for w in words if "dashwood" in w["word"].lower()]
    assert austen_words and austen_words[0]["start"] > len(JFK) / (2 * SR)  # one stream timeline
    assert any(m.get("utterances") for m in finals)
    events = [m for m in messages if m["type"] in ("speech_started", "speech_ended")]
    assert [e["type"] for e in events[:2]] == ["speech_started", "speech_ended"]
    assert all(isinstance(e["timestamp"], float) for e in events)


def test_finalize_keeps_the_stream_open(api_stack: ApiStack) -> None:
    with open_stream(api_stack) as ws:
        send_audio(ws, JFK[: len(JFK) // 2])
        ws.send(json.dumps({"type": "finalize"}))
        messages = []
        while not any(m.get("from_finalize") for m in messages):
            messages.append(json.loads(ws.recv(timeout=60)))
        flushed = next(m for m in messages if m.get("from_finalize"))
        assert flushed["is_final"] and not flushed["is_last"] and flushed["transcript"]
        send_audio(ws, AUSTEN)
        ws.send(json.dumps({"type": "end"}))  # the legacy alias of close_stream
        rest = collect(ws)
    assert rest[-1]["is_last"]
    assert "dashwood" in normalise(finals_text(rest))
    assert not any(m.get("from_finalize") for m in rest)  # committed text is not sent again


def test_keepalive_then_idle_timeout_closes_with_1008(api_stack: ApiStack) -> None:
    with open_stream(api_stack) as ws:
        for _ in range(4):  # 4 s of KeepAlive, longer than the 3 s idle timeout of this stack
            ws.send(json.dumps({"type": "KeepAlive"}))
            time.sleep(1)
        started = time.monotonic()
        message = json.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert message["type"] == "error" and "idle" in message["message"]
    assert 2.0 <= time.monotonic() - started + 1 <= 6.0
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_mulaw_telephony_and_subprotocol_auth(api_stack: ApiStack) -> None:
    samples, _ = sf.read(SPEECH_DIR / "jfk.wav", dtype="float32")
    phone = (soxr.resample(samples, SR, 8000) * 32767).astype("<i2").tobytes()
    mulaw = lin2ulaw(np.frombuffer(phone, dtype="<i2"))
    url = ws_url(api_stack, encoding="mulaw", sample_rate="8000")
    with connect(url, subprotocols=["token", api_stack.key], open_timeout=30) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "token"
        for start in range(0, len(mulaw), 1024):
            ws.send(mulaw[start : start + 1024])
        ws.send(json.dumps({"type": "close_stream"}))
        messages = collect(ws)
    assert "your country" in normalise(finals_text(messages))


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"sample_rate": "12345"}, 400, "INVALID_PARAMETER"),
        ({"encoding": "wav"}, 400, "INVALID_PARAMETER"),
        ({"eou_timeout_ms": "50"}, 400, "INVALID_PARAMETER"),
        ({"punctuate": "sometimes"}, 400, "INVALID_PARAMETER"),
        ({"colour": "blue"}, 400, "INVALID_PARAMETER"),
        ({"encoding": "mulaw", "sample_rate": "16000"}, 400, "INVALID_PARAMETER"),
        ({"num_speakers": "2"}, 400, "INVALID_PARAMETER"),  # without diarize=true
        ({"diarize": "true", "num_speakers": "0"}, 400, "INVALID_PARAMETER"),
        ({"diarize": "maybe"}, 400, "INVALID_PARAMETER"),
        ({"language": "fr"}, 400, "UNSUPPORTED_LANGUAGE"),  # the registry says no worker has it
    ],
)
def test_bad_parameters_are_refused_before_the_upgrade(
    api_stack: ApiStack, params: dict[str, str], status: int, code: str
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        open_stream(api_stack, **params)
    response = refused.value.response
    assert response.status_code == status
    assert json.loads(response.body or b"{}")["code"] == code


def test_diarized_stream_labels_finals_words_and_utterances(api_stack: ApiStack) -> None:
    params = {"diarize": "true", "word_timestamps": "true", "sentence_timestamps": "true"}
    with open_stream(api_stack, **params) as ws:
        send_audio(ws, AUSTEN + SILENCE_2S + JFK + SILENCE_2S + AUSTEN_2)
        ws.send(json.dumps({"type": "close_stream"}))
        messages = collect(ws)
    transcripts = [m for m in messages if m["type"] == "transcription"]
    spoken = [m for m in transcripts if m["is_final"] and m["transcript"]]
    turns = [speaker for speaker, _ in itertools.groupby(m["speaker"] for m in spoken)]
    assert turns == [0, 1, 0], "the reader, Kennedy (in several finals: he pauses), the reader again"
    assert all(0.0 <= m["speaker_confidence"] <= 1.0 for m in spoken)
    assert all("speaker" not in m for m in transcripts if not m["is_final"]), "interims carry no speaker"
    for final in spoken:
        assert final["words"] and all(set(w) >= {"speaker", "speaker_confidence"} for w in final["words"])
        assert {w["speaker"] for w in final["words"]} == {final["speaker"]}
        assert final["utterances"] and {u["speaker"] for u in final["utterances"]} == {final["speaker"]}
    kennedy = " ".join(m["transcript"] for m in spoken if m["speaker"] == 1)
    assert "ask not what your country" in normalise(kennedy) and "dashwood" not in normalise(kennedy)


def test_diarized_stream_needs_the_licensed_feature(api_stack: ApiStack) -> None:
    without = dev_key(license_id=api_stack.license_id, features=["streaming", "timestamps", "punctuation"])
    with pytest.raises(InvalidStatus) as refused:
        open_stream(api_stack, key=without, diarize="true")
    body = json.loads(refused.value.response.body or b"{}")
    assert refused.value.response.status_code == 403
    assert body["code"] == "FEATURE_NOT_LICENSED" and body["feature"] == "diarization"
    with open_stream(api_stack, key=without) as ws:  # the same key streams without diarize
        send_audio(ws, JFK)
        ws.send(json.dumps({"type": "close_stream"}))
        assert "your country" in normalise(finals_text(collect(ws)))


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Token nope"}, {"Authorization": "Basic abc"}])
def test_bad_keys_are_401_before_the_upgrade(api_stack: ApiStack, headers: dict[str, str]) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(api_stack), additional_headers=headers, open_timeout=30)
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body or b"{}")["error"] == "Invalid license key"


def test_unknown_control_message_is_an_error(api_stack: ApiStack) -> None:
    with open_stream(api_stack) as ws:
        ws.send(json.dumps({"type": "rewind"}))
        message = json.loads(ws.recv(timeout=30))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert message["type"] == "error" and "rewind" in message["message"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003


def test_rate_limited_stream_is_closed_with_1008(api_stack: ApiStack, redis_server: str) -> None:
    clear_limits(redis_server, api_stack.license_id)
    one_at_a_time = api_stack.issue_key(concurrent_requests=1)
    try:
        with open_stream(api_stack, key=one_at_a_time) as first:
            first.send(JFK[:FRAME_BYTES])
            time.sleep(0.5)
            with open_stream(api_stack, key=one_at_a_time) as second:
                message = json.loads(second.recv(timeout=30))
                with pytest.raises(ConnectionClosed) as closed:
                    second.recv(timeout=10)
            first.send(json.dumps({"type": "close_stream"}))
            collect(first)
        assert message["type"] == "error" and message["code"] == "RATE_LIMIT_EXCEEDED"
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        clear_limits(redis_server, api_stack.license_id)


def test_cli_streams_a_file_and_prints_finals(api_stack: ApiStack) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "oyez.cli", "transcribe", str(SPEECH_DIR / "jfk.wav"), "--stream",
         "--speed", "8", "--server", api_stack.url, "--key", api_stack.key],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    finals = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert finals and "your country" in normalise(" ".join(finals))
    assert any(line.startswith("~ ") for line in result.stdout.splitlines())  # interims, not a tty


def test_ogg_opus_stream(api_stack: ApiStack) -> None:
    from tests.unit.test_audio import encode_av

    samples, _ = sf.read(SPEECH_DIR / "jfk.wav", dtype="float32")
    ogg = encode_av(soxr.resample(samples, SR, 48000), 48000, "ogg", "libopus", 32000)
    with open_stream(api_stack, encoding="ogg_opus", sample_rate="48000") as ws:
        for start in range(0, len(ogg), 1500):  # pieces that cut through Ogg pages
            ws.send(ogg[start : start + 1500])
        ws.send(json.dumps({"type": "close_stream"}))
        messages = collect(ws)
    assert "ask not what your country can do for you" in normalise(finals_text(messages))


def test_garbage_in_an_ogg_stream_is_an_error(api_stack: ApiStack) -> None:
    with open_stream(api_stack, encoding="ogg_opus", sample_rate="48000") as ws:
        ws.send(b"this is not an ogg stream at all" * 4)
        message = json.loads(ws.recv(timeout=30))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert message["type"] == "error" and "Ogg" in message["message"]
