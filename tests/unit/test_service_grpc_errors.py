"""grpc_failure: the one mapping from exceptions to gRPC statuses."""

from __future__ import annotations

import grpc
import pytest

from asr_worker.service.grpc_errors import ERROR_CODE_METADATA_KEY, grpc_failure
from oyez import errors


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.InvalidParameter("bad option"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PARAMETER"),
        (errors.UnsupportedFormat("webm"), grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_FORMAT"),
        (errors.CorruptAudio("truncated"), grpc.StatusCode.INVALID_ARGUMENT, "CORRUPT_AUDIO"),
        (errors.EmptyAudio("no bytes"), grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_AUDIO"),
        (errors.AudioTooLong("3h"), grpc.StatusCode.INVALID_ARGUMENT, "AUDIO_TOO_LONG"),
        (errors.FileTooLarge("101 MB"), grpc.StatusCode.INVALID_ARGUMENT, "FILE_TOO_LARGE"),
        (errors.UnsupportedLanguage("xx"), grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_LANGUAGE"),
        (errors.CapacityExceeded("full"), grpc.StatusCode.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"),
        (errors.ServiceUnavailable("draining"), grpc.StatusCode.UNAVAILABLE, "SERVICE_UNAVAILABLE"),
    ],
)
def test_typed_errors_keep_their_code_and_message(
    exc: errors.OyezError, status: grpc.StatusCode, code: str
) -> None:
    failure = grpc_failure(exc)
    assert (failure.status, failure.code) == (status, code)
    assert failure.details == f"{code}: {exc.message}"
    assert failure.trailing_metadata == ((ERROR_CODE_METADATA_KEY, code),)
    assert failure.expected


def test_unexpected_exceptions_become_a_generic_internal_error() -> None:
    failure = grpc_failure(KeyError("/secret/path/model.onnx"))
    assert failure.status is grpc.StatusCode.INTERNAL
    assert failure.code == "INTERNAL_ERROR"
    assert "secret" not in failure.details
    assert not failure.expected
