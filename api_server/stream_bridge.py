"""One live session: the client's audio to a worker's ``StreamingRecognize``, its results back,
and a transparent move to another worker when the first one is lost.

Every converted frame is appended to the session's audio buffer in the store *before* it is
queued for the worker; each final commits (drops) the audio it covered and stores the worker's
checkpoint (committed end, VAD state). When the worker fails (gone, restarting, draining), the
bridge takes a slot on another worker, which resumes from the last checkpoint; the uncommitted
audio already sent is replayed, any unanswered ``finalize``/``close`` is sent again, and the queue
carries on. The new worker's finals are the ones the first would have produced, on the same
timeline: the client sees no error, no committed text twice, and the same text.

The queue between client and worker is bounded, so a slow worker slows the client's socket down
(backpressure) instead of growing memory; results are sent to the client one at a time, so a
client that does not read stalls its own worker stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from api_server.asr_client import ERROR_CODE_METADATA_KEY, REQUEST_ID_METADATA_KEY
from api_server.dispatch import Dispatcher
from api_server.stream_params import FrameConverter, StreamParams
from api_server.stream_state import SessionStore
from api_server.utterance_shapes import utterances
from api_server.workers import WorkerView
from oyez.errors import OyezError
from oyez.logs import get_logger
from oyez.proto import asr_v1_pb2 as pb
from oyez.proto import asr_v1_pb2_grpc as pb_grpc

_log = get_logger("api_server.stream")
REPLAY_CHUNK_BYTES = 64 * 1024
MAX_FAILOVERS = 3
QUEUE_ITEMS = 32
SendJson = Callable[[dict[str, Any]], Awaitable[None]]


class WorkerLost(Exception):
    """The worker's stream failed for reasons of its own."""


class StreamRefused(OyezError):
    """The worker refused the stream's configuration or audio (a client error)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _code_of(error: grpc.aio.AioRpcError) -> str | None:
    metadata: Any = error.trailing_metadata() or ()
    for item in metadata:
        if item[0] == ERROR_CODE_METADATA_KEY:
            value = item[1]
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _classify(error: grpc.aio.AioRpcError) -> Exception:
    code = _code_of(error)
    if error.code() == grpc.StatusCode.INVALID_ARGUMENT and code:
        return StreamRefused(code, (error.details() or "").removeprefix(f"{code}: "))
    return WorkerLost(f"{error.code().name}: {error.details()}")


class StreamBridge:
    def __init__(
        self,
        *,
        session_id: str,
        request_id: str,
        params: StreamParams,
        dispatcher: Dispatcher,
        store: SessionStore,
        send_json: SendJson,
    ) -> None:
        self.session_id = session_id
        self._request_id = request_id
        self._params = params
        self._dispatcher = dispatcher
        self._store = store
        self._send = send_json
        self._converter = FrameConverter(params)
        self._queue: asyncio.Queue[tuple[str, int, bytes]] = asyncio.Queue(QUEUE_ITEMS)
        self._received = 0  # absolute bytes accepted from the client (worker encoding)
        self._sent_until = 0  # absolute end of the audio handed to the current worker
        self._unanswered: deque[str] = deque()  # finalize/close sent, their final not yet back
        self._finals: list[str] = []
        self.failovers = 0
        self.worker: WorkerView | None = None
        self.connected = asyncio.Event()  # set once the session holds its first worker slot
        self._controls_queued = 0  # finalize/close accepted from the client, not yet sent to a worker

    # --- the client side --------------------------------------------------------------------------
    @property
    def owes_results(self) -> bool:
        """A ``finalize`` or ``close`` is still unanswered: the client is waiting on us, not idle."""
        return bool(self._unanswered) or self._controls_queued > 0

    @property
    def audio_seconds(self) -> float:
        return self._received / self._params.bytes_per_second

    async def audio(self, frame: bytes) -> None:
        data = self._converter.convert(frame)
        if not data:
            return
        await self._store.append(self.session_id, data)
        self._received += len(data)
        await self._queue.put(("audio", self._received, data))

    async def finalize(self) -> None:
        self._controls_queued += 1
        await self._queue.put(("finalize", self._received, b""))

    async def close(self) -> None:
        self._controls_queued += 1
        await self._queue.put(("close", self._received, b""))

    # --- the worker side --------------------------------------------------------------------------
    async def run(self) -> None:
        """Until the terminal result is sent. Raises ``NoWorkers`` (no slot), :class:`StreamRefused`
        (the worker refused the stream) or :class:`WorkerLost` (too many workers lost)."""
        exclude: set[str] = set()
        worker = await self._dispatcher.acquire(self._params.language, self._request_id)
        self.connected.set()
        replay = False
        try:
            while True:
                self.worker = worker
                try:
                    await self._serve_on(worker, replay=replay)
                    return
                except WorkerLost as exc:
                    self.failovers += 1
                    exclude.add(worker.address)
                    _log.warning(
                        "Streaming worker lost; moving the session to another worker",
                        worker=worker.address,
                        error=str(exc)[:200],
                        failover=self.failovers,
                    )
                    if self.failovers > MAX_FAILOVERS:
                        raise
                    await self._dispatcher.release(worker.address)
                    self.worker = None
                    worker = await self._dispatcher.acquire(
                        self._params.language, self._request_id, frozenset(exclude)
                    )
                    replay = True
        finally:
            if self.worker is not None:
                await self._dispatcher.release(self.worker.address)

    def _config(self, resume_token: bytes = b"") -> pb.StreamingRequest:
        p = self._params
        return pb.StreamingRequest(
            config=pb.StreamingConfig(
                request_id=self._request_id,
                options=pb.TranscriptionOptions(
                    language=p.language,
                    punctuate=p.punctuate,
                    timestamps=p.needs_word_times,
                    diarize=p.diarize,
                    num_speakers=p.num_speakers or 0,
                ),
                encoding=pb.FLOAT32 if p.worker_float else pb.LINEAR16,
                sample_rate=p.worker_rate,
                eou_timeout_ms=p.eou_timeout_ms,
                vad_events=p.vad_events,
                resume_token=resume_token,
            )
        )

    async def _serve_on(self, worker: WorkerView, *, replay: bool) -> None:
        stub = pb_grpc.AsrWorkerStub(self._dispatcher.channel(worker.address))
        call = stub.StreamingRecognize(metadata=((REQUEST_ID_METADATA_KEY, self._request_id),))  # type: ignore[call-arg]
        tasks: list[asyncio.Task[None]] = []
        try:
            try:
                if replay:
                    await self._replay(call)
                else:
                    await call.write(self._config())
            except grpc.aio.AioRpcError as exc:
                raise _classify(exc) from None
            except asyncio.InvalidStateError:
                raise WorkerLost("the stream ended while the session was being replayed") from None
            reader = asyncio.create_task(self._read(call))
            writer = asyncio.create_task(self._write(call))
            tasks = [reader, writer]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if not reader.done():
                await reader
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            call.cancel()

    async def _replay(self, call: Any) -> None:
        """The new worker continues from the last final's checkpoint (or from the start when there
        was none) with the audio sent since; its results are on the session's timeline already."""
        pending = await self._store.uncommitted(self.session_id)
        data = pending.data[: max(0, self._sent_until - pending.base)]
        await call.write(self._config(pending.resume_token))
        for start in range(0, len(data), REPLAY_CHUNK_BYTES):
            await call.write(pb.StreamingRequest(audio=data[start : start + REPLAY_CHUNK_BYTES]))
        for control in list(self._unanswered):
            if control == "finalize":
                await call.write(pb.StreamingRequest(finalize=True))
            else:
                await call.write(pb.StreamingRequest(close=True))
                await call.done_writing()
        _log.info(
            "Session replayed on a new worker",
            replayed_seconds=round(len(data) / self._params.bytes_per_second, 3),
            resumes_at_s=round(pending.base / self._params.bytes_per_second, 3),
        )

    async def _write(self, call: Any) -> None:
        if "close" in self._unanswered:
            return  # the replay already ended the request stream
        try:
            while True:
                kind, end, data = await self._queue.get()
                if kind != "audio":
                    self._controls_queued -= 1
                if kind == "audio":
                    self._sent_until = end  # in the store already: a replay covers it if this fails
                    await call.write(pb.StreamingRequest(audio=data))
                elif kind == "finalize":
                    self._unanswered.append("finalize")
                    await call.write(pb.StreamingRequest(finalize=True))
                else:
                    self._unanswered.append("close")
                    await call.write(pb.StreamingRequest(close=True))
                    await call.done_writing()
                    return
        except grpc.aio.AioRpcError as exc:
            raise _classify(exc) from None
        except asyncio.InvalidStateError:
            raise WorkerLost("the worker ended the stream while audio was being sent") from None

    async def _read(self, call: Any) -> None:
        try:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:  # type: ignore[attr-defined]
                    raise WorkerLost("the worker ended the stream before its last result")
                if await self._deliver(response):
                    return
        except grpc.aio.AioRpcError as exc:
            raise _classify(exc) from None

    async def _deliver(self, response: pb.StreamingResponse) -> bool:
        """Send one worker result to the client; True once the terminal result is out."""
        # Workers report times on the session's timeline, also after a resume from a checkpoint.
        if response.event:
            await self._send(
                {
                    "type": response.event,
                    "session_id": self.session_id,
                    "timestamp": round(response.event_time, 3),
                }
            )
            return False
        if response.is_final and not response.is_last:
            width = 4 if self._params.worker_float else 2
            end_byte = response.committed_samples * self._params.worker_rate // 16000 * width
            await self._store.commit(self.session_id, min(end_byte, self._sent_until), response.resume_token)
        if response.is_final:
            if response.transcript:
                self._finals.append(response.transcript)
            if response.from_finalize and "finalize" in self._unanswered:
                self._unanswered.remove("finalize")
        await self._send(self._message(response))
        return bool(response.is_last)

    def _message(self, response: pb.StreamingResponse) -> dict[str, Any]:
        p = self._params
        body: dict[str, Any] = {
            "type": "transcription",
            "status": "success",
            "session_id": self.session_id,
            "transcript": response.transcript,
            "transcription": response.transcript,
            "is_final": response.is_final,
            "is_last": response.is_last,
            "from_finalize": response.from_finalize,
            "start": round(response.start, 3),
            "end": round(response.end, 3),
            "confidence": round(response.confidence, 4),
        }
        words = [_word(w, with_speaker=p.diarize and response.is_final) for w in response.words]
        if p.word_timestamps:
            body["words"] = words
        if p.diarize and response.is_final and response.HasField("speaker"):
            body["speaker"] = response.speaker
            body["speaker_confidence"] = round(response.speaker_confidence, 3)
        if response.is_final:
            body["language"] = response.language or p.language
            body["languages"] = [body["language"]]
            if p.sentence_timestamps:
                body["utterances"] = utterances(words)
            if p.full_transcript:
                body["full_transcript"] = " ".join(t.strip() for t in self._finals if t.strip())
        return body


def _word(word: pb.Word, *, with_speaker: bool) -> dict[str, Any]:
    shaped: dict[str, Any] = {
        "word": word.word,
        "start": round(word.start, 3),
        "end": round(word.end, 3),
        "confidence": round(word.confidence, 4),
    }
    if with_speaker and word.HasField("speaker"):
        shaped["speaker"] = word.speaker
        shaped["speaker_confidence"] = round(word.speaker_confidence, 3)
    return shaped
