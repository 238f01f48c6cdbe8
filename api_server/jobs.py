"""Asynchronous jobs (``POST /v1/listen`` with ``callback_url``): the job record (pure).

A :class:`Job` is what the Redis hash ``oyez:job:<id>`` holds (see :mod:`api_server.job_store`):
options, status, result or error, webhook state and the license that created it; it renders the
webhook body (:meth:`Job.webhook_payload`) and the ``GET /v1/listen/jobs/{job_id}`` answer
(:meth:`Job.view`).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from api_server.errors import http_error
from oyez.errors import OyezError

_JOB_ID = re.compile(r"^job_[0-9a-f]{24}$")

JobStatus = Literal["processing", "completed", "failed"]
WebhookStatus = Literal["pending", "delivered", "failed"]


def new_job_id() -> str:
    return f"job_{secrets.token_hex(12)}"


def valid_job_id(text: str) -> bool:
    return bool(_JOB_ID.match(text))


def iso_time(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_error(exc: OyezError) -> dict[str, str]:
    """A failed job's ``error``/``code``/``detail``: the same words the synchronous error body uses."""
    answer = http_error(exc)
    out = {"error": str(answer.body["error"]), "code": str(answer.body["code"])}
    detail = answer.body.get("detail")
    if detail:
        out["detail"] = str(detail)
    return out


def error_status(error: Mapping[str, str] | None) -> int:
    """The HTTP status the synchronous route would have answered for a failed job's error."""
    if not error:
        return 200
    probe = OyezError(error.get("error", ""))
    probe.code = error.get("code", "INTERNAL_ERROR")
    return http_error(probe).status


def _job_status(text: str) -> JobStatus:
    if text == "completed":
        return "completed"
    return "failed" if text == "failed" else "processing"


def _webhook_status(text: str) -> WebhookStatus:
    if text == "delivered":
        return "delivered"
    return "failed" if text == "failed" else "pending"


@dataclass
class Job:
    """One asynchronous job, as stored in its Redis hash (every field a string there)."""

    job_id: str
    license_id: str
    request_id: str
    callback_url: str
    created_at: float
    language: str = "en"
    punctuate: bool = True
    timestamps: bool = False
    diarize: bool = False
    num_speakers: int | None = None
    features: list[str] = field(default_factory=lambda: ["batch", "callbacks"])
    url: str | None = None
    audio_bytes: int = 0
    status: JobStatus = "processing"
    updated_at: float = 0.0
    completed_at: float | None = None
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    webhook_status: WebhookStatus = "pending"
    webhook_attempts: int = 0
    webhook_error: str | None = None

    def to_fields(self) -> dict[str, str]:
        fields = {
            "job_id": self.job_id,
            "license_id": self.license_id,
            "request_id": self.request_id,
            "callback_url": self.callback_url,
            "created_at": repr(self.created_at),
            "updated_at": repr(self.updated_at or self.created_at),
            "language": self.language,
            "punctuate": "1" if self.punctuate else "0",
            "timestamps": "1" if self.timestamps else "0",
            "diarize": "1" if self.diarize else "0",
            "features": json.dumps(sorted(set(self.features))),
            "audio_bytes": str(self.audio_bytes),
            "status": self.status,
            "attempts": str(self.attempts),
            "webhook_status": self.webhook_status,
            "webhook_attempts": str(self.webhook_attempts),
        }
        optional = {
            "url": self.url,
            "num_speakers": None if self.num_speakers is None else str(self.num_speakers),
            "completed_at": None if self.completed_at is None else repr(self.completed_at),
            "result": None if self.result is None else json.dumps(self.result, separators=(",", ":")),
            "error": None if self.error is None else json.dumps(self.error, separators=(",", ":")),
            "webhook_error": self.webhook_error,
        }
        fields.update({name: value for name, value in optional.items() if value is not None})
        return fields

    @classmethod
    def from_fields(cls, raw: Mapping[Any, Any]) -> Job:
        data = {_text(k): _text(v) for k, v in raw.items()}

        def number(name: str, default: float = 0.0) -> float:
            value = data.get(name)
            return float(value) if value else default

        return cls(
            job_id=data["job_id"],
            license_id=data["license_id"],
            request_id=data.get("request_id", ""),
            callback_url=data.get("callback_url", ""),
            created_at=number("created_at"),
            language=data.get("language", "en"),
            punctuate=data.get("punctuate", "1") == "1",
            timestamps=data.get("timestamps", "0") == "1",
            diarize=data.get("diarize", "0") == "1",
            num_speakers=int(data["num_speakers"]) if data.get("num_speakers") else None,
            features=list(json.loads(data.get("features", '["batch", "callbacks"]'))),
            url=data.get("url") or None,
            audio_bytes=int(number("audio_bytes")),
            status=_job_status(data.get("status", "")),
            updated_at=number("updated_at"),
            completed_at=number("completed_at") if data.get("completed_at") else None,
            attempts=int(number("attempts")),
            result=json.loads(data["result"]) if data.get("result") else None,
            error=json.loads(data["error"]) if data.get("error") else None,
            webhook_status=_webhook_status(data.get("webhook_status", "")),
            webhook_attempts=int(number("webhook_attempts")),
            webhook_error=data.get("webhook_error") or None,
        )

    @property
    def finished(self) -> bool:
        """Outcome recorded and the webhook delivered or given up: nothing is left to do."""
        return self.status != "processing" and self.webhook_status != "pending"

    def webhook_payload(self) -> dict[str, Any]:
        """The webhook body: the result (same fields as the synchronous response) or the error."""
        if self.status == "completed":
            return {"job_id": self.job_id, "status": "completed", "result": self.result or {}}
        return {"job_id": self.job_id, "status": "failed", **(self.error or {"error": "unknown error"})}

    def view(self) -> dict[str, Any]:
        """``GET /v1/listen/jobs/{job_id}``."""
        body: dict[str, Any] = {"job_id": self.job_id, "status": self.status}
        if self.status == "completed":
            body["result"] = self.result or {}
        elif self.status == "failed":
            body.update(self.error or {"error": "unknown error"})
        body["created_at"] = iso_time(self.created_at)
        if self.completed_at is not None:
            body["completed_at"] = iso_time(self.completed_at)
        webhook: dict[str, Any] = {"status": self.webhook_status, "attempts": self.webhook_attempts}
        if self.webhook_error:
            webhook["last_error"] = self.webhook_error
        body["webhook"] = webhook
        return body


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
