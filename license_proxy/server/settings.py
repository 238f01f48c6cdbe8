"""Configuration of the reference license server (environment, ``OYEZ_`` prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from license_proxy.protocol import DEFAULT_SERVER_PORT
from license_proxy.settings import ProxyConfigError


def default_db_path() -> Path:
    return Path(platformdirs.user_state_dir("oyez")) / "license-server" / "license-server.sqlite3"


class LicenseServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OYEZ_", case_sensitive=False, extra="ignore", frozen=True)

    license_server_port: int = Field(default=DEFAULT_SERVER_PORT, ge=1, le=65535)
    license_server_host: str = Field(default="0.0.0.0")  # noqa: S104 - a service port
    license_server_db: Path = Field(default_factory=default_db_path)
    env: Literal["development", "production"] = "development"
    license_public_key: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    @field_validator("license_public_key", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


def load_server_settings(**overrides: Any) -> LicenseServerSettings:
    try:
        return LicenseServerSettings(**overrides)
    except ValidationError as exc:
        problems = [
            f"OYEZ_{str(err['loc'][0]).upper() if err['loc'] else 'CONFIG'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ProxyConfigError("; ".join(problems)) from None
