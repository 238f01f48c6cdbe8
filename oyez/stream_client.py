"""``oyez transcribe FILE --stream``: play a file into ``/v1/listen/stream`` at real-time pace
(or ``--speed`` times faster) and print interim and final results as they arrive."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import wave
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np

STREAM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
FRAME_S = 0.1


class StreamClientError(Exception):
    pass


def read_pcm16(path: Path) -> tuple[bytes, int]:
    """Mono 16-bit PCM and its rate: any format soundfile reads, else plain WAV with ``wave``."""
    try:
        import soundfile as sf

        samples, rate = sf.read(str(path), dtype="int16", always_2d=True)
        mono = samples.mean(axis=1).astype("<i2") if samples.shape[1] > 1 else samples[:, 0].astype("<i2")
        return mono.tobytes(), int(rate)
    except ImportError:
        pass
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise StreamClientError(f"{path}: only 16-bit WAV can be streamed without soundfile")
            data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
            channels = wav.getnchannels()
            mono = data.reshape(-1, channels).mean(axis=1).astype("<i2") if channels > 1 else data
            return mono.tobytes(), wav.getframerate()
    except (wave.Error, EOFError) as exc:
        raise StreamClientError(
            f"{path}: not a WAV file ({exc}); install soundfile for other formats"
        ) from None


def stream_url(server: str, rate: int, args: argparse.Namespace) -> str:
    params = {
        "sample_rate": str(rate),
        "language": args.language,
        "punctuate": "false" if args.no_punctuate else "true",
        "word_timestamps": "true" if args.timestamps else "false",
    }
    if getattr(args, "diarize", False):
        params["diarize"] = "true"
    if getattr(args, "num_speakers", None) is not None:
        params["num_speakers"] = str(args.num_speakers)
    base = server.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    return f"{base}/v1/listen/stream?{urlencode(params)}"


def format_message(message: dict[str, Any], tty: bool) -> str | None:
    kind = message.get("type")
    if kind == "error":
        return f"error: {message.get('message')}"
    if kind != "transcription" or not message.get("transcript"):
        return None
    text = str(message["transcript"]).strip()
    if not message.get("is_final"):
        return f"\r… {text}" if tty else f"~ {text}"
    span = f"[{message.get('start', 0):7.2f}-{message.get('end', 0):7.2f}]"
    who = f" SPEAKER_{message['speaker']:02d}:" if isinstance(message.get("speaker"), int) else ""
    return ("\r\033[K" if tty else "") + f"{span}{who} {text}"


def stream_file(path: Path, server: str, key: str, args: argparse.Namespace) -> int:
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    pcm, rate = read_pcm16(path)
    if rate not in STREAM_RATES:
        raise StreamClientError(
            f"{path} is {rate} Hz; streaming takes {', '.join(map(str, STREAM_RATES))} Hz"
        )
    tty = sys.stdout.isatty()
    frame = int(rate * FRAME_S) * 2
    speed = max(args.speed, 0.01)
    failed: list[str] = []
    try:
        ws = connect(stream_url(server, rate, args), additional_headers={"Authorization": f"Token {key}"})
    except InvalidStatus as exc:
        body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
        raise StreamClientError(
            f"the server refused the stream ({exc.response.status_code}): {body}"
        ) from None
    except OSError as exc:
        raise StreamClientError(f"cannot reach {server} ({exc}); is the stack running ('oyez up')?") from None

    def receive() -> None:
        try:
            while True:
                message = json.loads(ws.recv())
                line = format_message(message, tty)
                if line is not None:
                    end = "" if tty and not message.get("is_final") else "\n"
                    print(line, end=end, flush=True)
                if message.get("type") == "error":
                    failed.append(str(message.get("message")))
                if message.get("is_last") or message.get("type") == "error":
                    return
        except ConnectionClosed:
            return

    with ws:
        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        started = time.monotonic()
        for index, offset in enumerate(range(0, len(pcm), frame)):
            if not receiver.is_alive():
                break
            ws.send(pcm[offset : offset + frame])
            delay = started + (index + 1) * FRAME_S / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if receiver.is_alive():
            ws.send(json.dumps({"type": "close_stream"}))
        receiver.join(args.timeout)
    return 1 if failed else 0
