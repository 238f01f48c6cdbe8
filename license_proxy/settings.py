"""The license proxy's configuration: one pydantic-settings class read from the environment.

Documented names are honoured as given (``LICENSE_KEY``, ``PORT``); everything else carries the
``OYEZ_`` prefix. :func:`load_proxy_settings` turns a bad value into :class:`ProxyConfigError`
whose message names the variable.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from license_proxy.usage_schema import MAX_EVENTS_PER_BATCH
from oyez import constants
from oyez.errors import OyezError


class ProxyConfigError(OyezError):
    code = "INVALID_CONFIG"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir("oyez")) / "license"


class LicenseProxySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OYEZ_", case_sensitive=False, extra="ignore", frozen=True, populate_by_name=True
    )

    license_key: SecretStr = Field(
        validation_alias=constants.ENV_LICENSE_KEY, description="The deployment's license key (never logged)."
    )
    port: int = Field(
        default=constants.LICENSE_PROXY_PORT, ge=1, le=65535, validation_alias=constants.ENV_PORT
    )
    host: str = Field(default="0.0.0.0", description="Bind address.")  # noqa: S104 - a service port
    env: Literal["development", "production"] = Field(
        default="development", description="production refuses keys signed by the development issuer."
    )
    license_public_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Trusted issuer public key(s), 'ed25519:...', comma-separated (rotation).",
    )
    license_server_url: str | None = Field(
        default=None, description="The upstream license server; unset means offline (signature + expiry)."
    )
    license_state_dir: Path = Field(
        default_factory=default_state_dir, description="Validation cache and usage spool (a volume)."
    )
    license_grace_period_h: float = Field(default=24.0, gt=0, le=24 * 365)
    license_revalidate_s: float = Field(default=600.0, gt=0, description="Background revalidation period.")
    license_retry_initial_s: float = Field(default=5.0, gt=0)
    license_retry_max_s: float = Field(default=300.0, gt=0)
    license_startup_timeout_s: float = Field(
        default=30.0, ge=0, description="How long start-up keeps trying an unreachable server with no cache."
    )
    license_upstream_timeout_s: float = Field(default=10.0, gt=0)
    license_grace_check_s: float = Field(default=30.0, gt=0, description="Grace-period log/metric tick.")
    usage_flush_interval_s: float = Field(default=300.0, gt=0)
    usage_batch_max: int = Field(default=MAX_EVENTS_PER_BATCH, ge=1, le=MAX_EVENTS_PER_BATCH)
    usage_spool_max_events: int = Field(default=500_000, ge=1000)
    clock_offset_s: float = Field(
        default=0.0, description="Shift the clock (development/tests only; refused in production)."
    )
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    @field_validator("license_public_key", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("license_server_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _production_rules(self) -> LicenseProxySettings:
        if self.env == "production" and self.clock_offset_s:
            raise ValueError("OYEZ_CLOCK_OFFSET_S is for development and tests; it is refused in production")
        if not self.license_key.get_secret_value().strip():
            raise ValueError("LICENSE_KEY is empty")
        return self

    @property
    def grace_period(self) -> timedelta:
        return timedelta(hours=self.license_grace_period_h)

    @property
    def production(self) -> bool:
        return self.env == "production"


def _variable(field: str) -> str:
    names = {"license_key": constants.ENV_LICENSE_KEY, "port": constants.ENV_PORT}
    return names.get(field, f"OYEZ_{field.upper()}")


def load_proxy_settings(**overrides: Any) -> LicenseProxySettings:
    try:
        return LicenseProxySettings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            where = _variable(field) if field else "configuration"
            problems.append(f"{where}: {error['msg']}")
        raise ProxyConfigError("; ".join(problems)) from None
