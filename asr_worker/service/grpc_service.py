"""The ``oyez.asr.v1.AsrWorker`` gRPC servicer: thin handlers around the engine.

``Transcribe`` (client streaming): ``config`` first, then ``audio_chunk``s of one encoded file, at
most ``MAX_UPLOAD_BYTES`` in all (checked up front from ``total_bytes`` and while receiving), decoded
in a thread, transcribed by the engine. ``StreamingRecognize`` (bidi): ``config`` first, then raw PCM,
``finalize`` and ``close``; a half-close without ``close`` ends the stream the same way.

Both take a slot from the admission gate (shared capacity, bounded waiting line) and refuse work
while the worker is loading or draining. Every failure goes through :func:`grpc_failure` once.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
import structlog

from asr_worker.engine.audio import decode_audio
from asr_worker.engine.types import (
    Engine,
    Samples,
    SpeakerSegment,
    StreamOptions,
    StreamResult,
    StreamSession,
    TranscribeOptions,
    Transcript,
    Word,
)
from asr_worker.service.admission import AdmissionGate, JobKind
from asr_worker.service.grpc_errors import grpc_failure
from asr_worker.service.lifecycle import WorkerLifecycle
from asr_worker.service.metrics import WorkerMetrics
from asr_worker.service.pcm_stream import PcmStreamConverter
from oyez import constants
from oyez.errors import EmptyAudio, FileTooLarge, InvalidParameter
from oyez.logs import bind_request_id, clear_request_id, get_logger
from oyez.proto import asr_v1_pb2 as pb
from oyez.proto import asr_v1_pb2_grpc as pb_grpc

REQUEST_ID_METADATA_KEY = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_MIN_STREAM_RATE, _MAX_STREAM_RATE = 8000, 48000
_MIN_EOU_MS, _MAX_EOU_MS = 100, 10000
_DEFAULT_EOU_MS = 800
_MIB = 1024 * 1024

_log = get_logger("asr_worker.grpc")
_Message = TypeVar("_Message", pb.TranscribeRequest, pb.StreamingRequest)
Context = grpc.aio.ServicerContext[Any, Any]


class DecodedAudioLike(Protocol):
    """What the service reads from a decoder's result."""

    @property
    def samples(self) -> Samples: ...

    @property
    def duration(self) -> float: ...


AudioDecoder = Callable[[bytes], DecodedAudioLike]
"""Encoded file bytes -> 16 kHz mono samples; raises the typed audio errors. Runs in a thread."""


def decode_upload(data: bytes) -> DecodedAudioLike:
    """The production decoder: the engine's ``decode_audio`` with the 2-hour limit."""
    return decode_audio(data, max_seconds=constants.MAX_AUDIO_SECONDS)


def new_request_id() -> str:
    return f"req_{secrets.token_hex(8)}"


def _request_id(candidate: str, context: Context) -> str:
    """The client's ID (config, else ``x-request-id`` metadata) when it is sane; else a new one."""
    metadata = dict(context.invocation_metadata() or ())
    for value in (candidate, metadata.get(REQUEST_ID_METADATA_KEY)):
        if isinstance(value, str) and _REQUEST_ID.match(value):
            return value
    return new_request_id()


def _file_too_large(size_hint: str) -> FileTooLarge:
    limit_mb = constants.MAX_UPLOAD_BYTES // _MIB
    return FileTooLarge(
        f"Audio file too large ({size_hint}); the limit is {limit_mb} MB", max_size_mb=limit_mb
    )


async def _first_config(requests: AsyncIterator[_Message]) -> _Message:
    first = await anext(requests, None)
    if first is None or first.WhichOneof("payload") != "config":
        raise InvalidParameter("first message must be config")
    return first


async def _receive_upload(requests: AsyncIterator[pb.TranscribeRequest], limit: int) -> bytes:
    """Concatenate the audio chunks, failing as soon as more than ``limit`` bytes arrived."""
    chunks: list[bytes] = []
    received = 0
    async for message in requests:
        if message.WhichOneof("payload") == "config":
            raise InvalidParameter("config may only be sent once, as the first message")
        received += len(message.audio_chunk)
        if received > limit:
            raise _file_too_large(f"more than {received} bytes received")
        chunks.append(message.audio_chunk)
    if received == 0:
        raise EmptyAudio("No audio received: send the file in audio_chunk messages after the config.")
    return b"".join(chunks)


def _words(words: Iterable[Word]) -> list[pb.Word]:
    return [
        pb.Word(
            word=w.word,
            start=w.start,
            end=w.end,
            confidence=w.confidence,
            speaker=w.speaker,
            speaker_confidence=w.speaker_confidence,
        )
        for w in words
    ]


def _speakers(segments: Iterable[SpeakerSegment]) -> list[pb.SpeakerSegment]:
    return [pb.SpeakerSegment(speaker=s.speaker, text=s.text, start=s.start, end=s.end) for s in segments]


def _num_speakers(options: pb.TranscriptionOptions) -> int | None:
    if options.num_speakers > constants.MAX_SPEAKERS:
        raise InvalidParameter(
            f"num_speakers must be 1..{constants.MAX_SPEAKERS}, got {options.num_speakers}"
        )
    if options.num_speakers and not options.diarize:
        raise InvalidParameter("num_speakers needs diarize=true")
    return options.num_speakers or None


def _punctuate(options: pb.TranscriptionOptions) -> bool:
    """``punctuate`` is proto3 ``optional``: unset (or no options at all) means true."""
    return options.punctuate if options.HasField("punctuate") else True


def _transcribe_options(engine: Engine, config: pb.TranscribeConfig) -> TranscribeOptions:
    opts = config.options
    return TranscribeOptions(
        language=engine.check_language(opts.language or "en"),
        punctuate=_punctuate(opts),
        timestamps=opts.timestamps,
        diarize=opts.diarize,
        num_speakers=_num_speakers(opts),
    )


def _stream_options(engine: Engine, config: pb.StreamingConfig) -> StreamOptions:
    """Validate a streaming config; the engine always receives 16 kHz samples."""
    if config.encoding not in (pb.AUDIO_ENCODING_UNSPECIFIED, pb.LINEAR16, pb.FLOAT32):
        raise InvalidParameter(f"encoding must be LINEAR16 or FLOAT32, got {config.encoding}")
    rate = config.sample_rate or constants.SAMPLE_RATE
    if not _MIN_STREAM_RATE <= rate <= _MAX_STREAM_RATE:
        raise InvalidParameter(f"sample_rate must be {_MIN_STREAM_RATE}..{_MAX_STREAM_RATE} Hz, got {rate}")
    eou_ms = config.eou_timeout_ms or _DEFAULT_EOU_MS
    if not _MIN_EOU_MS <= eou_ms <= _MAX_EOU_MS:
        raise InvalidParameter(f"eou_timeout_ms must be {_MIN_EOU_MS}..{_MAX_EOU_MS}, got {eou_ms}")
    return StreamOptions(
        language=engine.check_language(config.options.language or "en"),
        punctuate=_punctuate(config.options),
        timestamps=config.options.timestamps,
        sample_rate=constants.SAMPLE_RATE,
        eou_timeout_ms=eou_ms,
        vad_events=config.vad_events,
        diarize=config.options.diarize,
        num_speakers=_num_speakers(config.options),
        resume_token=config.resume_token,
    )


def _transcribe_response(
    request_id: str, transcript: Transcript, model: str, processing: float, rtf: float
) -> pb.TranscribeResponse:
    return pb.TranscribeResponse(
        request_id=request_id,
        text=transcript.text,
        words=_words(transcript.words),
        confidence=transcript.confidence,
        duration=transcript.duration,
        language=transcript.language,
        processing_seconds=processing,
        real_time_factor=rtf,
        model=model,
        speakers=_speakers(transcript.speakers),
    )


def _stream_response(request_id: str, result: StreamResult) -> pb.StreamingResponse:
    return pb.StreamingResponse(
        request_id=request_id,
        transcript=result.text,
        is_final=result.is_final,
        is_last=result.is_last,
        from_finalize=result.from_finalize,
        start=result.start,
        end=result.end,
        confidence=result.confidence,
        words=_words(result.words),
        language=result.language,
        event=result.event,
        event_time=result.event_time,
        resume_token=result.resume_token,
        committed_samples=result.committed_samples,
        speaker=result.speaker,
        speaker_confidence=result.speaker_confidence,
    )


class AsrWorkerService(pb_grpc.AsrWorkerServicer):
    """Serves ``Transcribe`` and ``StreamingRecognize`` with the engine the lifecycle holds."""

    def __init__(
        self,
        lifecycle: WorkerLifecycle,
        gate: AdmissionGate,
        metrics: WorkerMetrics,
        *,
        decoder: AudioDecoder = decode_upload,
        max_upload_bytes: int = constants.MAX_UPLOAD_BYTES,
    ) -> None:
        self._lifecycle = lifecycle
        self._gate = gate
        self._metrics = metrics
        self._decode = decoder
        self._max_upload_bytes = max_upload_bytes

    async def Transcribe(  # noqa: N802 - method name fixed by the proto
        self, request_iterator: AsyncIterator[pb.TranscribeRequest], context: Context
    ) -> pb.TranscribeResponse:
        self._metrics.request_received()
        received_at = time.perf_counter()
        try:
            response = await self._transcribe(request_iterator, context)
            self._metrics.request_finished(time.perf_counter() - received_at)
            return response
        except asyncio.CancelledError:
            self._metrics.error("CANCELLED")
            _log.info("Request cancelled (client gone or shutdown)")
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a status, never leaked
            await self._fail(context, exc)
        finally:
            clear_request_id()

    async def StreamingRecognize(  # noqa: N802 - method name fixed by the proto
        self, request_iterator: AsyncIterator[pb.StreamingRequest], context: Context
    ) -> AsyncIterator[pb.StreamingResponse]:
        self._metrics.request_received()
        try:
            async for response in self._stream(request_iterator, context):
                yield response
        except asyncio.CancelledError:
            self._metrics.error("CANCELLED")
            _log.info("Stream cancelled (client gone or shutdown)")
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a status, never leaked
            await self._fail(context, exc)
        finally:
            clear_request_id()

    async def _transcribe(
        self, requests: AsyncIterator[pb.TranscribeRequest], context: Context
    ) -> pb.TranscribeResponse:
        engine = self._lifecycle.require_engine()
        config = (await _first_config(requests)).config
        request_id = _request_id(config.request_id, context)
        bind_request_id(request_id)
        _log.info(f"Request received: {request_id}")
        options = _transcribe_options(engine, config)
        if config.total_bytes > self._max_upload_bytes:
            raise _file_too_large(f"{config.total_bytes} bytes declared")
        async with self._gate.slot(JobKind.BATCH):
            data = await _receive_upload(requests, self._max_upload_bytes)
            started = time.perf_counter()
            decoded = await asyncio.to_thread(self._decode, data)
            del data
            transcript = await engine.transcribe(decoded.samples, options)
            processing = time.perf_counter() - started
        duration = transcript.duration or decoded.duration
        rtf = processing / duration if duration > 0 else 0.0
        self._metrics.transcription_completed(
            language=transcript.language, processing_seconds=processing, real_time_factor=rtf
        )
        _log.info(
            f"Transcription completed in {processing:.3f}s (RTF: {rtf:.3f}x)",
            duration_ms=round(processing * 1000, 1),
            audio_seconds=round(duration, 3),
        )
        return _transcribe_response(request_id, transcript, engine.model_name, processing, rtf)

    async def _stream(
        self, requests: AsyncIterator[pb.StreamingRequest], context: Context
    ) -> AsyncIterator[pb.StreamingResponse]:
        engine = self._lifecycle.require_engine()
        config = (await _first_config(requests)).config
        request_id = _request_id(config.request_id, context)
        bind_request_id(request_id)
        _log.info(f"Stream received: {request_id}")
        options = _stream_options(engine, config)
        converter = PcmStreamConverter(config.encoding, config.sample_rate or constants.SAMPLE_RATE)
        async with self._gate.slot(JobKind.STREAM):
            session = engine.open_stream(options)
            async for message in requests:
                kind = message.WhichOneof("payload")
                if kind == "close" and message.close:
                    break
                for result in await _stream_step(session, converter, message):
                    yield _stream_response(request_id, result)
            # ``close`` or a client half-close: flush and end.
            for result in await _push(session, converter.flush()) + await session.close():
                yield _stream_response(request_id, result)
        _log.info(f"Stream completed: {request_id}")

    async def _fail(self, context: Context, exc: Exception) -> NoReturn:
        failure = grpc_failure(exc)
        self._metrics.error(failure.code)
        if failure.expected:
            _log.warning(f"Request failed: {failure.details}", code=failure.code)
        else:
            request_id = structlog.contextvars.get_contextvars().get("request_id", "unknown")
            _log.error(f"Failed to process audio: {request_id}", exc_info=exc)
        await context.abort(failure.status, failure.details, failure.trailing_metadata)


async def _stream_step(
    session: StreamSession, converter: PcmStreamConverter, message: pb.StreamingRequest
) -> list[StreamResult]:
    kind = message.WhichOneof("payload")
    if kind == "audio":
        return await _push(session, converter.feed(message.audio))
    if kind == "finalize" and message.finalize:
        return await _push(session, converter.flush()) + await session.finalize()
    if kind == "config":
        raise InvalidParameter("config may only be sent once, as the first message")
    return []


async def _push(session: StreamSession, samples: Samples) -> list[StreamResult]:
    return await session.push(samples) if samples.size else []
