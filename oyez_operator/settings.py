"""The operator's configuration: one pydantic-settings class, ``OYEZ_OPERATOR_*`` environment."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from oyez import __version__
from oyez.errors import OyezError

from . import catalog


class OperatorConfigError(OyezError):
    code = "INVALID_CONFIG"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OYEZ_OPERATOR_", case_sensitive=False, extra="ignore", frozen=True
    )

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Namespaces to watch, comma-separated; empty = all namespaces."
    )
    reconcile_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="Periodic reconcile: restores edited or deleted children, follows rollouts.",
    )
    reconcile_initial_delay_s: float = Field(default=5.0, ge=0)
    watch_server_timeout_s: int = Field(
        default=300, gt=0, description="Server-side watch timeout (kopf #698)."
    )
    watch_client_timeout_s: int = Field(default=330, gt=0)
    connect_timeout_s: int = Field(default=30, gt=0)
    api_timeout_s: float = Field(default=30.0, gt=0, description="Timeout of each call the reconciler makes.")
    liveness_port: int = Field(default=8080, ge=0, le=65535, description="GET /healthz; 0 disables it.")
    image_registry: str = Field(default="ghcr.io/oyez-dev", description="Where the component images live.")
    image_tag: str = Field(default=__version__, description="Tag of the component images.")
    kube_api_url: str | None = Field(
        default=None, description="Talk to this API server without credentials (tests, kubectl proxy)."
    )
    capacity: dict[str, float] = Field(
        default_factory=lambda: dict(catalog.DEFAULT_CAPACITY_AUDIO_HOURS_PER_HOUR),
        description="Audio hours per hour per worker, per tier (JSON); merged over the defaults.",
    )
    gpu_labels: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {key: dict(value) for key, value in catalog.DEFAULT_GPU_LABELS.items()},
        description="Node label -> {tier: regex} (JSON); replaces the defaults.",
    )
    peering: str | None = Field(default=None, description="kopf peering name for HA; unset = standalone.")

    @field_validator("namespaces", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("capacity", mode="after")
    @classmethod
    def _capacity(cls, value: dict[str, float]) -> dict[str, float]:
        merged = {**catalog.DEFAULT_CAPACITY_AUDIO_HOURS_PER_HOUR, **value}
        unknown = sorted(set(merged) - {*catalog.TIER_ORDER, catalog.CPU_TIER})
        if unknown:
            raise ValueError(
                f"unknown tier(s) {unknown}; tiers are {[*catalog.TIER_ORDER, catalog.CPU_TIER]}"
            )
        if any(v <= 0 for v in merged.values()):
            raise ValueError("capacities must be positive")
        return merged


def load_operator_settings(**overrides: Any) -> OperatorSettings:
    """Settings from the environment; a bad value raises OperatorConfigError naming the variable."""
    try:
        return OperatorSettings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            field = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(f"OYEZ_OPERATOR_{field.upper()}: {error['msg']}")
        raise OperatorConfigError("; ".join(problems)) from None
