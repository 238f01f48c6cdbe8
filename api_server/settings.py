"""The API server's configuration: one pydantic-settings class.

Sources, strongest first: the environment, then the TOML file the Helm chart mounts
(``/etc/config/api.toml``, or ``$OYEZ_API_CONFIG_FILE``), then defaults. Names documented by the
product are honoured as given (``LICENSE_KEY``, ``API_SERVER_PORT``, ``API_BASE_URL``,
``LIGHTNING_ASR_BASE_URL`` / ``ASR_BASE_URL``, ``LIGHTNING_ASR_STREAMING_BASE_URL`` /
``ASR_STREAMING_BASE_URL``, ``REDIS_URL`` or ``REDIS_HOST`` + ``REDIS_PORT`` + ``REDIS_PASSWORD`` +
``REDIS_SSL``); every other knob carries the ``OYEZ_`` prefix.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from oyez import constants
from oyez.errors import OyezError

DEFAULT_CONFIG_FILE = Path("/etc/config/api.toml")
ENV_CONFIG_FILE = "OYEZ_API_CONFIG_FILE"


class ApiConfigError(OyezError):
    code = "INVALID_CONFIG"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def worker_address(url: str) -> str:
    """``http://host:port`` (or ``grpc://``, or bare ``host:port``) -> ``host:port`` for gRPC."""
    text = url.strip()
    if "://" not in text:
        text = f"grpc://{text}"
    parts = urlsplit(text)
    try:
        port = parts.port or constants.ASR_GRPC_PORT
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https", "grpc") or not parts.hostname or port is None:
        raise ValueError(f"not a worker URL (want http://host:port): {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


class _TomlSource(PydanticBaseSettingsSource):
    """The chart's ``api.toml`` (``[server]`` and ``[license_proxy]`` tables), flattened to fields."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = Path(os.environ.get(ENV_CONFIG_FILE) or DEFAULT_CONFIG_FILE)
        self._values: dict[str, Any] = {}
        if not path.is_file():
            if ENV_CONFIG_FILE in os.environ:
                raise ApiConfigError(f"{ENV_CONFIG_FILE}: no such file {path}")
            return
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ApiConfigError(f"cannot read the config file {path}: {exc}") from None
        server = data.get("server", {})
        proxy = data.get("license_proxy", {})
        mapping = {
            "port": server.get("port"),
            "host": server.get("host"),
            "asr_base_urls": server.get("lightning_asr_url"),
            "asr_streaming_base_urls": server.get("lightning_asr_streaming_url"),
            "redis_host": server.get("redis_host"),
            "redis_port": server.get("redis_port"),
            "redis_password": server.get("redis_password"),
            "redis_ssl": server.get("redis_ssl"),
        }
        urls = proxy.get("url")
        mapping["license_proxy_url"] = urls[0] if isinstance(urls, list) and urls else urls
        self._values = {key: value for key, value in mapping.items() if value not in (None, "")}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


class ApiSettings(BaseSettings):
    """Everything the API server reads from its environment / config file."""

    model_config = SettingsConfigDict(
        env_prefix="OYEZ_", case_sensitive=False, extra="ignore", frozen=True, populate_by_name=True
    )

    # --- documented names -------------------------------------------------------------------------
    license_key: SecretStr | None = Field(
        default=None,
        validation_alias=constants.ENV_LICENSE_KEY,
        description="This deployment's license key: used for usage reports and the start-up check.",
    )
    port: int = Field(
        default=constants.API_PORT, ge=1, le=65535, validation_alias=AliasChoices("API_SERVER_PORT", "PORT")
    )
    host: str = Field(default="0.0.0.0", description="Bind address.")  # noqa: S104 - a service port
    license_proxy_url: str = Field(
        default="http://license-proxy:6699",
        validation_alias=AliasChoices("API_BASE_URL", "OYEZ_LICENSE_PROXY_URL"),
    )
    asr_base_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://lightning-asr:2233"],
        validation_alias=AliasChoices("LIGHTNING_ASR_BASE_URL", "ASR_BASE_URL"),
        description="Static workers (comma-separated), used when the Redis registry lists none.",
    )
    asr_streaming_base_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://lightning-asr:2233"],
        validation_alias=AliasChoices("LIGHTNING_ASR_STREAMING_BASE_URL", "ASR_STREAMING_BASE_URL"),
    )
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    redis_host: str | None = Field(default=None, validation_alias="REDIS_HOST")
    redis_port: int = Field(default=constants.REDIS_PORT, ge=1, le=65535, validation_alias="REDIS_PORT")
    redis_password: SecretStr | None = Field(default=None, validation_alias="REDIS_PASSWORD")
    redis_ssl: bool = Field(default=False, validation_alias="REDIS_SSL")

    # --- OYEZ_ knobs ------------------------------------------------------------------------------
    request_timeout_s: float = Field(default=300.0, gt=0, description="Per-request worker deadline.")
    queue_max: int = Field(default=100, ge=0, description="Requests that may wait for a worker slot.")
    queue_timeout_s: float = Field(default=30.0, gt=0, description="Longest wait for a worker slot.")
    auth_cache_ttl_s: float = Field(
        default=60.0, gt=0, description="How long a license-proxy answer about a key is reused."
    )
    registry_refresh_s: float = Field(default=1.0, gt=0, description="Worker registry poll period.")
    static_probe_s: float = Field(default=5.0, gt=0, description="Health probe period of static workers.")
    usage_flush_s: float = Field(default=5.0, gt=0, description="Usage events are sent this often.")
    usage_orphan_age_s: float = Field(
        default=60.0,
        gt=0,
        description="A usage event left in the Redis outbox this long (its replica died) is sent by another.",
    )
    url_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts, IPs or CIDRs that `url` may reach although private (SSRF guard exemptions).",
    )
    url_allow_private: bool = Field(default=False, description="Let `url` reach any private address.")
    url_fetch_timeout_s: float = Field(default=120.0, gt=0)
    # asynchronous jobs (`callback_url`; need Redis): see api_server/jobs.py and job_runner.py
    job_retention_s: float = Field(default=86400.0, gt=0, description="How long a finished job is kept.")
    job_audio_max_bytes: int = Field(
        default=2 * 1024**3, gt=0, description="Audio bytes all pending jobs may hold in Redis together."
    )
    job_claim_idle_s: float = Field(
        default=60.0, gt=0, description="A job silent this long (its replica died) is taken over."
    )
    job_concurrency: int = Field(default=4, ge=1, description="Jobs one replica processes at once.")
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key for webhook signatures; unset: derived from LICENSE_KEY."
    )
    webhook_retries: int = Field(default=3, ge=0, le=10, description="Webhook retries after the first try.")
    webhook_backoff_s: float = Field(default=1.0, gt=0, description="First retry delay; doubles each time.")
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="One webhook attempt's time limit.")
    upstream_timeout_s: float = Field(default=5.0, gt=0, description="License proxy / health call timeout.")
    drain_grace_s: float = Field(default=30.0, gt=0, description="SIGTERM: time left for in-flight requests.")
    stream_idle_timeout_s: float = Field(
        default=10.0, gt=0, description="A stream with no audio and no KeepAlive this long is closed (1008)."
    )
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    @field_validator("asr_base_urls", "asr_streaming_base_urls", "url_allowed_hosts", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("asr_base_urls", "asr_streaming_base_urls")
    @classmethod
    def _worker_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            worker_address(url)
        return value

    @field_validator("license_proxy_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value.strip()

    @property
    def worker_addresses(self) -> list[str]:
        return [worker_address(url) for url in self.asr_base_urls]

    @property
    def resolved_redis_url(self) -> str | None:
        """``REDIS_URL``, else one built from ``REDIS_HOST``/``PORT``/``PASSWORD``/``SSL``, else None."""
        if self.redis_url:
            return self.redis_url
        if not self.redis_host:
            return None
        scheme = "rediss" if self.redis_ssl else "redis"
        auth = f":{quote(self.redis_password.get_secret_value(), safe='')}@" if self.redis_password else ""
        return f"{scheme}://{auth}{self.redis_host}:{self.redis_port}/0"


_VARIABLES = {
    "license_key": "LICENSE_KEY",
    "port": "API_SERVER_PORT",
    "license_proxy_url": "API_BASE_URL",
    "asr_base_urls": "LIGHTNING_ASR_BASE_URL",
    "asr_streaming_base_urls": "LIGHTNING_ASR_STREAMING_BASE_URL",
    "redis_url": "REDIS_URL",
    "redis_host": "REDIS_HOST",
    "redis_port": "REDIS_PORT",
    "redis_password": "REDIS_PASSWORD",
    "redis_ssl": "REDIS_SSL",
}


def load_api_settings(**overrides: Any) -> ApiSettings:
    """Read :class:`ApiSettings`; a bad value becomes :class:`ApiConfigError` naming the variable."""
    try:
        return ApiSettings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            where = _VARIABLES.get(field, f"OYEZ_{field.upper()}") if field else "configuration"
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise ApiConfigError("Invalid API server configuration: " + "; ".join(problems)) from None
