"""Calls to a worker's ``Transcribe`` over gRPC, and what its failures mean to the API.

The worker reports typed failures as ``INVALID_ARGUMENT`` with the error code in the trailing
metadata key ``oyez-error-code`` and details ``"<CODE>: <message>"``; those become the same
:class:`~oyez.errors.OyezError` code here, so the HTTP layer answers exactly as if it had found the
problem itself. Failures that say nothing about the request (the worker is gone, restarting,
draining or full) are :class:`WorkerFailed`, which the dispatcher retries once on another worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from api_server.errors import RequestTimeout
from oyez.errors import OyezError
from oyez.proto import asr_v1_pb2 as pb
from oyez.proto import asr_v1_pb2_grpc as pb_grpc

CHUNK_BYTES = 1024 * 1024
ERROR_CODE_METADATA_KEY = "oyez-error-code"
REQUEST_ID_METADATA_KEY = "x-request-id"
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.ABORTED,
    }
)


@dataclass(frozen=True)
class WorkerOptions:
    language: str
    punctuate: bool
    timestamps: bool
    diarize: bool = False
    num_speakers: int | None = None


class WorkerFailed(Exception):
    """The worker could not serve the call for reasons of its own (gone, draining, full)."""

    def __init__(self, address: str, status: grpc.StatusCode, details: str) -> None:
        super().__init__(f"worker {address}: {status.name}: {details}")
        self.address = address
        self.status = status
        self.details = details


class WorkerRefusal(OyezError):
    """A typed refusal from the worker (bad audio, unsupported language, too long, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _metadata_code(error: grpc.aio.AioRpcError) -> str | None:
    metadata: Any = error.trailing_metadata() or ()
    for item in metadata:
        key, value = item[0], item[1]
        if key == ERROR_CODE_METADATA_KEY:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def map_rpc_error(address: str, error: grpc.aio.AioRpcError, timeout_s: float) -> Exception:
    """The exception to raise for a failed call."""
    status = error.code()
    details = error.details() or ""
    code = _metadata_code(error)
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestTimeout(f"Request timeout after {timeout_s:g}s")
    if status == grpc.StatusCode.INVALID_ARGUMENT and code:
        message = details.removeprefix(f"{code}: ")
        return WorkerRefusal(code, message)
    if status in _RETRYABLE or status == grpc.StatusCode.UNIMPLEMENTED:
        return WorkerFailed(address, status, details)
    return WorkerFailed(address, status, details)


async def _requests(audio: bytes, config: pb.TranscribeConfig) -> AsyncIterator[pb.TranscribeRequest]:
    yield pb.TranscribeRequest(config=config)
    view = memoryview(audio)
    for offset in range(0, len(view), CHUNK_BYTES):
        yield pb.TranscribeRequest(audio_chunk=bytes(view[offset : offset + CHUNK_BYTES]))


async def transcribe(
    channel: grpc.aio.Channel,
    address: str,
    audio: bytes,
    options: WorkerOptions,
    *,
    request_id: str,
    timeout_s: float,
) -> pb.TranscribeResponse:
    """One ``Transcribe`` call; raises :class:`WorkerFailed`, :class:`WorkerRefusal` or
    :class:`~api_server.errors.RequestTimeout`."""
    stub = pb_grpc.AsrWorkerStub(channel)
    config = pb.TranscribeConfig(
        request_id=request_id,
        options=pb.TranscriptionOptions(
            language=options.language,
            punctuate=options.punctuate,
            timestamps=options.timestamps,
            diarize=options.diarize,
            num_speakers=options.num_speakers or 0,
        ),
        total_bytes=len(audio),
    )
    try:
        response: pb.TranscribeResponse = await stub.Transcribe(
            _requests(audio, config),
            timeout=timeout_s,
            metadata=((REQUEST_ID_METADATA_KEY, request_id),),
        )
    except grpc.aio.AioRpcError as exc:
        raise map_rpc_error(address, exc, timeout_s) from None
    return response
