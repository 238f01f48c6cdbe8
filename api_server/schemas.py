"""Response bodies as pydantic models: they build ``/openapi.json`` and shape what routes return."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class WordOut(BaseModel):
    word: str
    start: float = Field(description="Seconds from the start of the audio.")
    end: float
    confidence: float = Field(ge=0, le=1)
    speaker: str | None = Field(
        default=None, pattern=r"^SPEAKER_\d{2}$", description="With diarize=true: who said it."
    )


class SpeakerTurnOut(BaseModel):
    speaker: str = Field(pattern=r"^SPEAKER_\d{2}$", description="SPEAKER_00 is the first to speak.")
    text: str
    start: float = Field(description="Seconds from the start of the audio.")
    end: float


class ListenResponse(BaseModel):
    request_id: str = Field(pattern=r"^req_", description="Also in the X-Request-ID header.")
    text: str
    confidence: float = Field(ge=0, le=1)
    duration: float = Field(ge=0, description="Audio duration in seconds.")
    language: str
    words: list[WordOut] | None = Field(default=None, description="Only with timestamps=true.")
    speakers: list[SpeakerTurnOut] | None = Field(
        default=None, description="Only with diarize=true: consecutive words of one speaker."
    )


class ErrorBody(BaseModel):
    error: str
    code: str
    detail: str | None = None
    retry_after: int | None = None
    max_size_mb: int | None = None
    max_duration_s: int | None = None
    supported_formats: list[str] | None = None
    reason: str | None = None
    expires_at: str | None = None


class HealthBody(BaseModel):
    status: Literal["healthy", "unhealthy"]
    reason: str | None = None


class DetailedHealthBody(BaseModel):
    status: Literal["healthy", "unhealthy"]
    components: dict[str, str]
    uptime_seconds: int
    version: str
    reason: str | None = None


class ComponentHealthBody(BaseModel):
    status: Literal["healthy", "unhealthy", "not_configured"]
    detail: dict[str, object] = Field(default_factory=dict)


class ReadyBody(BaseModel):
    ready: bool
    reason: str | None = None


class CompatWord(BaseModel):
    word: str
    start: float
    end: float
    speaker: str | None = Field(default=None, pattern=r"^speaker_\d+$", description="With diarize=true.")


class CompatUtterance(BaseModel):
    text: str
    start: float
    end: float
    speaker: str | None = Field(default=None, pattern=r"^speaker_\d+$", description="With diarize=true.")


class CompatMetadata(BaseModel):
    duration: float
    fileSize: int  # noqa: N815 - the vendor's field name
    filename: str | None = None


class CompatResponse(BaseModel):
    status: Literal["success"]
    transcription: str
    audio_length: float
    words: list[CompatWord]
    utterances: list[CompatUtterance]
    metadata: CompatMetadata
    age: None = None
    gender: None = None
    emotions: None = None


class CompatError(BaseModel):
    error: str
