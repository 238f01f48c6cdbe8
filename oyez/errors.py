"""Typed errors shared by every Oyez service.

Each error carries the documented machine-readable ``code`` (see api-contract.md) and a message
that tells the caller what to fix. The HTTP and gRPC layers map them once, by ``code``.
"""

from __future__ import annotations

from typing import Any


class OyezError(Exception):
    """Base class: a failure with a documented code and a human message."""

    code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, **self.details}


class InvalidParameter(OyezError):
    """A request option has a value we cannot honour."""

    code = "INVALID_PARAMETER"


class UnsupportedFormat(OyezError):
    """The bytes are not a container/codec we decode."""

    code = "UNSUPPORTED_FORMAT"


class CorruptAudio(OyezError):
    """A supported container whose data cannot be decoded."""

    code = "CORRUPT_AUDIO"


class EmptyAudio(OyezError):
    """No bytes, or no samples after decoding."""

    code = "EMPTY_AUDIO"


class AudioTooLong(OyezError):
    """Longer than the 2-hour limit."""

    code = "AUDIO_TOO_LONG"


class FileTooLarge(OyezError):
    """More bytes than the upload limit."""

    code = "FILE_TOO_LARGE"


class UnsupportedLanguage(OyezError):
    """The requested language is not one the loaded model can transcribe."""

    code = "UNSUPPORTED_LANGUAGE"


class FeatureNotAvailable(OyezError):
    """A documented option this deployment cannot serve (e.g. diarize with an old model bundle)."""

    code = "FEATURE_NOT_AVAILABLE"


class ModelError(OyezError):
    """A model bundle is missing, corrupt, refused, or failed to build or download."""

    code = "MODEL_ERROR"


class ModelCacheFull(ModelError):
    """The model cache's disk has no room for the model (a worker waits and tries again)."""

    code = "MODEL_CACHE_FULL"


class ServiceUnavailable(OyezError):
    """Not ready (loading, warming, draining)."""

    code = "SERVICE_UNAVAILABLE"


class CapacityExceeded(OyezError):
    """All slots and the queue are full."""

    code = "RESOURCE_EXHAUSTED"
