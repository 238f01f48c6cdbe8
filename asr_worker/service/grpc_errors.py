"""The one place where exceptions become gRPC statuses.

- ``CapacityExceeded`` -> RESOURCE_EXHAUSTED; ``ServiceUnavailable`` -> UNAVAILABLE;
- any other ``OyezError`` -> INVALID_ARGUMENT;
- anything else -> INTERNAL with a generic message (the caller logs the traceback).

Details read ``"<CODE>: <message>"`` and the code also travels in the trailing metadata key
``oyez-error-code``, so the API server can map it to its HTTP answer without parsing text.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from oyez.errors import CapacityExceeded, OyezError, ServiceUnavailable

ERROR_CODE_METADATA_KEY = "oyez-error-code"
INTERNAL_CODE = "INTERNAL_ERROR"


@dataclass(frozen=True)
class GrpcFailure:
    """How one exception is reported to the client."""

    status: grpc.StatusCode
    code: str
    details: str

    @property
    def expected(self) -> bool:
        """False for unexpected exceptions, which deserve a traceback in the log."""
        return self.status is not grpc.StatusCode.INTERNAL

    @property
    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((ERROR_CODE_METADATA_KEY, self.code),)


def grpc_failure(exc: BaseException) -> GrpcFailure:
    """Map an exception raised while serving an RPC to the status the client receives."""
    if isinstance(exc, OyezError):
        if isinstance(exc, CapacityExceeded):
            status = grpc.StatusCode.RESOURCE_EXHAUSTED
        elif isinstance(exc, ServiceUnavailable):
            status = grpc.StatusCode.UNAVAILABLE
        else:
            status = grpc.StatusCode.INVALID_ARGUMENT
        return GrpcFailure(status, exc.code, f"{exc.code}: {exc.message}")
    return GrpcFailure(grpc.StatusCode.INTERNAL, INTERNAL_CODE, f"{INTERNAL_CODE}: internal error")
