"""The ASR worker's configuration: one pydantic-settings class read from the environment.

Names documented by the product are honoured as given (``MODEL_URL``, ``MODEL_SHA256``,
``MODEL_CACHE_DIR``, ``LICENSE_KEY``, ``REDIS_URL``, ``PORT``, ``GPU_DEVICE_ID``); every other knob
carries the ``OYEZ_`` prefix (``OYEZ_HTTP_PORT``, ``OYEZ_MAX_CONCURRENCY``, ...). The environment is
the only source. :func:`load_worker_settings` turns a bad value into :class:`WorkerConfigError`, whose
message names the offending variable, so the CLI can print one line instead of a traceback.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from oyez import constants
from oyez.errors import OyezError

MAX_CHECKPOINTS = 3
# Documented multi-checkpoint rule: concurrency per checkpoint for 1, 2 and 3 checkpoints.
CONCURRENCY_PER_CHECKPOINT = {1: 128, 2: 64, 3: 48}

_ENV_PREFIX = "OYEZ_"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class WorkerConfigError(OyezError):
    """The worker's environment holds a value it cannot run with; the message names the variable."""

    code = "INVALID_CONFIG"


def _split_csv(value: Any) -> Any:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; lists and other values pass through for validation."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class WorkerSettings(BaseSettings):
    """Everything the worker process reads from its environment (the model engine reads the same)."""

    model_config = SettingsConfigDict(
        env_prefix=_ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    # --- documented names -------------------------------------------------------------------------
    model_url: Annotated[list[str], NoDecode] = Field(
        validation_alias=constants.ENV_MODEL_URL,
        description="Model bundle URL(s): 1 to 3 comma-separated checkpoints, read once at boot.",
    )
    model_sha256: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=constants.ENV_MODEL_SHA256,
        max_length=MAX_CHECKPOINTS,
        description="Expected sha256 of each MODEL_URL download, comma-separated in the same order.",
    )
    model_cache_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices(constants.ENV_MODEL_CACHE_DIR, constants.ENV_OYEZ_MODEL_CACHE_DIR),
        description="Directory caching downloaded bundles; unset means the per-user cache directory.",
    )
    license_key: SecretStr | None = Field(
        default=None,
        validation_alias=constants.ENV_LICENSE_KEY,
        description="License key (optional for now; never logged).",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=constants.ENV_REDIS_URL,
        description="redis[s]://[:password@]host:port of the worker registry; unset means no registry.",
    )
    port: int = Field(
        default=constants.ASR_GRPC_PORT,
        ge=0,
        le=65535,
        validation_alias=constants.ENV_PORT,
        description="gRPC listen port (0 picks a free port).",
    )
    gpu_device_id: int = Field(
        default=0,
        ge=0,
        le=63,
        validation_alias=constants.ENV_GPU_DEVICE_ID,
        description="CUDA device index on multi-GPU hosts.",
    )

    # --- project settings (OYEZ_ prefix) ----------------------------------------------------------
    http_port: int = Field(
        default=constants.ASR_HTTP_PORT,
        ge=0,
        le=65535,
        description="HTTP port of GET /health and GET /metrics (0 picks a free port).",
    )
    host: str = Field(
        default="0.0.0.0",  # noqa: S104 - a server in a container listens on every interface
        min_length=1,
        description="Interface the gRPC and HTTP servers bind to.",
    )
    require_gpu: bool = Field(
        default=False,
        description="Refuse to start (exit non-zero) when no CUDA device can be initialised.",
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="In-flight requests + streams the worker admits; unset = 128/64/48 per checkpoint.",
    )
    max_queue: int = Field(
        default=256,
        ge=0,
        le=100_000,
        description="Requests/streams allowed to wait for a slot before RESOURCE_EXHAUSTED.",
    )
    max_batch_size: int = Field(default=8, ge=1, le=256, description="Largest encoder batch.")
    max_batch_wait_ms: int = Field(
        default=10, ge=0, le=1000, description="How long a batch waits to fill before it runs."
    )
    drain_grace_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="On SIGTERM, how long in-flight work may finish before it is cancelled.",
    )
    model_retry_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="With a full model cache the worker stays up, not ready, and tries again this often.",
    )
    heartbeat_s: float = Field(
        default=5.0, gt=0, le=300, description="Interval between registry heartbeats in Redis."
    )
    heartbeat_ttl_s: int = Field(
        default=15, ge=1, le=3600, description="TTL of the worker's registry hash; must exceed heartbeat_s."
    )
    worker_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="Registry id of this worker; unset = '<hostname>-<grpc port>'.",
    )
    advertise_address: str | None = Field(
        default=None,
        min_length=1,
        description="host:port others use to reach this worker's gRPC; unset = '<hostname>:<grpc port>'.",
    )
    inference_lanes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Inference threads sharing the model (CPU lanes split the cores between them).",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="ONNX Runtime intra-op threads per lane; 0: cores/lanes on CPU, default on GPU.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="Log lines as JSON objects or as 'LEVEL: message' text."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Lowest level written to the log."
    )

    @field_validator("model_url", "model_sha256", mode="before")
    @classmethod
    def _parse_csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("model_url")
    @classmethod
    def _check_checkpoints(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one model URL is required")
        if len(value) > MAX_CHECKPOINTS:
            raise ValueError(f"at most {MAX_CHECKPOINTS} comma-separated checkpoint URLs, got {len(value)}")
        return value

    @field_validator("model_sha256")
    @classmethod
    def _check_sha256(cls, value: list[str]) -> list[str]:
        digests = [item.lower() for item in value]
        for digest in digests:
            if not _SHA256.match(digest):
                raise ValueError(f"not a sha256 hex digest: {digest!r}")
        return digests

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(_REDIS_SCHEMES):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_consistency(self) -> WorkerSettings:
        if self.model_sha256 and len(self.model_sha256) != len(self.model_url):
            raise ValueError(
                f"MODEL_SHA256 lists {len(self.model_sha256)} digests for {len(self.model_url)} MODEL_URL(s)"
            )
        if self.heartbeat_ttl_s <= self.heartbeat_s:
            raise ValueError("OYEZ_HEARTBEAT_TTL_S must be greater than OYEZ_HEARTBEAT_S")
        return self

    @property
    def capacity(self) -> int:
        """Concurrent requests + streams admitted: the explicit setting, else the checkpoint rule."""
        if self.max_concurrency is not None:
            return self.max_concurrency
        checkpoints = len(self.model_url)
        return CONCURRENCY_PER_CHECKPOINT[checkpoints] * checkpoints

    def resolved_worker_id(self, bound_port: int) -> str:
        """The registry id: ``OYEZ_WORKER_ID`` or ``<hostname>-<port>``."""
        return self.worker_id or f"{socket.gethostname()}-{bound_port}"

    def resolved_advertise_address(self, bound_port: int) -> str:
        """How peers reach this worker: ``OYEZ_ADVERTISE_ADDRESS`` or ``<hostname>:<port>``."""
        return self.advertise_address or f"{socket.gethostname()}:{bound_port}"


def _documented_aliases() -> set[str]:
    names: set[str] = set()
    for field in WorkerSettings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
    return names


def env_name(name: str) -> str:
    """The environment variable behind a field name or alias (documented name or ``OYEZ_`` name)."""
    if name in _documented_aliases():
        return name
    field = WorkerSettings.model_fields.get(name)
    alias = field.validation_alias if field is not None else None
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return _ENV_PREFIX + name.upper()


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming the environment variable, without echoing secrets."""
    lines = []
    for problem in error.errors():
        location = problem.get("loc", ())
        field_name = str(location[0]) if location else ""
        variable = env_name(field_name) if field_name else ""
        message = str(problem.get("msg", "invalid value")).removeprefix("Value error, ")
        if variable == constants.ENV_LICENSE_KEY:
            lines.append(f"{variable}: {message}")
            continue
        value = problem.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) and field_name else ""
        lines.append(f"{variable}: {message}{shown}" if variable else message)
    return "; ".join(lines)


def load_worker_settings(**overrides: Any) -> WorkerSettings:
    """Read :class:`WorkerSettings` from the environment; ``overrides`` win over the environment.

    Raises :class:`WorkerConfigError` naming each bad variable.
    """
    try:
        return WorkerSettings(**overrides)
    except ValidationError as exc:
        raise WorkerConfigError(f"Invalid worker configuration: {describe_validation_error(exc)}") from None
