"""The ``SpeechDeployment`` spec (group ``oyez.dev``, version ``v1alpha1``): the one source of truth.

These pydantic models parse and default a CR's spec in the operator, and :mod:`.crd_schema`
turns them into the CRD's structural OpenAPI schema (``crds/`` is generated from it and a test
keeps the two identical). Cross-field rules are written twice, side by side: as CEL in
``x-kubernetes-validations`` (the API server enforces them) and as a Python check here (the
operator re-checks every spec, so a CRD installed without them, or an older one, still gets a
clear ``InvalidSpec`` condition instead of a crash).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

GROUP = "oyez.dev"
VERSION = "v1alpha1"
KIND = "SpeechDeployment"
PLURAL = "speechdeployments"
SINGULAR = "speechdeployment"
SHORT_NAMES = ["sd", "speech"]

Plan = Literal["minimum", "production", "multi-worker", "custom"]
GpuTier = Literal["auto", "T4", "L4", "A10", "A100", "none"]

# A Kubernetes quantity ("500m", "2Gi", 4): int-or-string on the wire.
_QUANTITY_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[mkun])?$")


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, str) and not _QUANTITY_RE.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (examples: 500m, 2, 2Gi, 512Mi)")
    return value


Quantity = Annotated[
    int | str,
    Field(union_mode="left_to_right"),
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": _QUANTITY_RE.pattern,
        }
    ),
]
# Pass-through Kubernetes objects the operator copies verbatim (affinity is a large, well-known type).
PassThroughObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_DATA_KEY = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 - a pattern, not a secret
SHA256 = r"^(sha256:)?[0-9a-fA-F]{64}$"
MAX_NAME_LENGTH = 40  # "<name>-asr-worker-metrics" must stay a 63-character DNS label


def _cel(*rules: tuple[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


class SpecModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors, not silently kept."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, validate_default=True
    )


class SecretKeyRef(SpecModel):
    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name, same namespace.")
    key: str = Field(max_length=253, pattern=SECRET_DATA_KEY, description="Key inside the Secret.")


class LicenseSecretRef(SecretKeyRef):
    key: str = Field(
        default="license-key", max_length=253, pattern=SECRET_DATA_KEY, description="Key inside the Secret."
    )


class LicenseSpec(SpecModel):
    secret_ref: LicenseSecretRef = Field(description="The Secret holding the license key (never inline).")
    server_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://",
        description="Upstream license server for the proxy; unset = offline (signature and expiry only).",
    )
    public_key: str | None = Field(
        default=None,
        max_length=4096,
        description="Trusted issuer public key(s), 'ed25519:...', comma-separated; unset = the image's.",
    )


class Toleration(SpecModel):
    key: str | None = Field(default=None, max_length=317)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Resources(SpecModel):
    requests: dict[str, Quantity] | None = Field(default=None, description="Overrides the plan's requests.")
    limits: dict[str, Quantity] | None = Field(default=None, description="Overrides the plan's limits.")


class PodPlacement(SpecModel):
    """Per-component scheduling and sizing overrides."""

    resources: Resources | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    affinity: PassThroughObject | None = Field(default=None, description="Replaces the operator's affinity.")
    priority_class_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN)


class GpuSpec(SpecModel):
    tier: GpuTier = Field(
        default="auto",
        description="auto: the best tier with allocatable GPUs, else the plan's; none: CPU only (kind).",
    )
    count: int = Field(default=1, ge=1, le=8, description="GPUs per worker pod (ignored with tier none).")


class AutoscalingSpec(SpecModel):
    model_config = SpecModel.model_config | ConfigDict(
        json_schema_extra=_cel(("self.min <= self.max", "autoscaling.min must not exceed autoscaling.max"))
    )

    enabled: bool = False
    min: int = Field(default=1, ge=0, le=1000)
    max: int = Field(default=10, ge=1, le=1000)
    target_active_requests: int = Field(
        default=4, ge=1, le=1000, description="HPA target: asr_active_requests per worker pod."
    )
    prometheus_address: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        max_length=2048,
        pattern=r"^https?://",
        description="KEDA only: the Prometheus its triggers query for active requests and queue depth.",
    )

    @model_validator(mode="after")
    def _min_below_max(self) -> AutoscalingSpec:
        if self.min > self.max:
            raise ValueError("autoscaling.min must not exceed autoscaling.max")
        return self


class AsrSpec(PodPlacement):
    model_config = PodPlacement.model_config | ConfigDict(
        json_schema_extra=_cel(
            (
                "!(has(self.replicas) && has(self.throughputTarget))",
                "set asr.replicas or asr.throughputTarget, not both",
            )
        )
    )

    replicas: int | None = Field(
        default=None, ge=0, le=1000, description="Fixed worker count (overrides the plan)."
    )
    throughput_target: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="Audio hours/hour to sustain: workers = ceil(target / one worker's capacity on a tier).",
    )
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    drain_grace_period_seconds: int = Field(
        default=60, ge=1, le=3600, description="Time a stopping worker gets to finish in-flight requests."
    )

    @model_validator(mode="after")
    def _one_way_to_size(self) -> AsrSpec:
        if self.replicas is not None and self.throughput_target is not None:
            raise ValueError("set asr.replicas or asr.throughputTarget, not both")
        return self


class ModelCacheSpec(SpecModel):
    model_config = SpecModel.model_config | ConfigDict(
        json_schema_extra=_cel(
            (
                "!has(self.existingClaim) || !has(self.storageClassName)",
                "model.cache.existingClaim and model.cache.storageClassName are exclusive",
            )
        )
    )

    size: Quantity = Field(default="20Gi", description="PVC size for the model cache.")
    storage_class_name: str | None = Field(default=None, max_length=253)
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] = Field(
        default="ReadWriteOnce", description="ReadWriteMany lets workers on several nodes share one download."
    )
    existing_claim: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Use this PVC instead of creating one.",
    )
    retain_on_delete: bool = Field(
        default=True, description="Keep the created PVC (and the downloaded model) when the CR is deleted."
    )

    @model_validator(mode="after")
    def _claim_or_class(self) -> ModelCacheSpec:
        if self.existing_claim is not None and self.storage_class_name is not None:
            raise ValueError("model.cache.existingClaim and model.cache.storageClassName are exclusive")
        return self


class ModelSpec(SpecModel):
    url: str = Field(
        default="whisper-base",
        min_length=1,
        max_length=2048,
        description="MODEL_URL: a bundle URL (https, s3, file) or a model name the image can build.",
    )
    sha256: str | None = Field(
        default=None, pattern=SHA256, description="Expected sha256 of the bundle archive."
    )
    cache: ModelCacheSpec = Field(default_factory=ModelCacheSpec)


class ServiceSpec(SpecModel):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = Field(default=7100, ge=1, le=65535)
    annotations: dict[str, str] | None = None


class ApiSpec(PodPlacement):
    replicas: int = Field(default=1, ge=1, le=100)
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    drain_grace_period_seconds: int = Field(default=30, ge=1, le=3600)


class LicenseProxySpec(PodPlacement):
    replicas: int = Field(default=1, ge=1, le=10)


class RedisSpec(PodPlacement):
    model_config = PodPlacement.model_config | ConfigDict(
        json_schema_extra=_cel(
            (
                "self.mode == 'managed' || has(self.url) || has(self.urlSecretRef)",
                "redis.mode external needs redis.url or redis.urlSecretRef",
            ),
            (
                "self.mode == 'external' || (!has(self.url) && !has(self.urlSecretRef))",
                "redis.url and redis.urlSecretRef are only for redis.mode external",
            ),
            ("!(has(self.url) && has(self.urlSecretRef))", "set redis.url or redis.urlSecretRef, not both"),
        )
    )

    mode: Literal["managed", "external"] = "managed"
    persistence: bool = Field(default=False, description="Managed Redis: AOF on a PVC (survives restarts).")
    persistence_size: Quantity = "8Gi"
    storage_class_name: str | None = Field(default=None, max_length=253)
    password_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Managed Redis: requirepass from this Secret (URL-safe: openssl rand -hex 24).",
    )
    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^rediss?://[^:@/]+(:\d+)?(/\d+)?$",
        description="External Redis without credentials in the URL (use urlSecretRef for those).",
    )
    url_secret_ref: SecretKeyRef | None = Field(default=None, description="External Redis URL from a Secret.")

    @model_validator(mode="after")
    def _mode_fields(self) -> RedisSpec:
        has_url = self.url is not None or self.url_secret_ref is not None
        if self.mode == "external" and not has_url:
            raise ValueError("redis.mode external needs redis.url or redis.urlSecretRef")
        if self.mode == "managed" and has_url:
            raise ValueError("redis.url and redis.urlSecretRef are only for redis.mode external")
        if self.url is not None and self.url_secret_ref is not None:
            raise ValueError("set redis.url or redis.urlSecretRef, not both")
        return self


class ImagesSpec(SpecModel):
    api_server: str | None = Field(default=None, max_length=512, description="Default: the operator's own.")
    asr_worker: str | None = Field(default=None, max_length=512)
    asr_worker_cpu: str | None = Field(
        default=None, max_length=512, description="Worker image for tier none."
    )
    license_proxy: str | None = Field(default=None, max_length=512)
    redis: str | None = Field(default=None, max_length=512)
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    pull_secrets: list[str] = Field(default_factory=list, max_length=16)


class SpeechDeploymentSpec(SpecModel):
    license: LicenseSpec
    plan: Plan = Field(
        default="minimum", description="Sizing preset; custom = the minimum's figures + overrides."
    )
    gpu: GpuSpec = Field(default_factory=GpuSpec)
    asr: AsrSpec = Field(default_factory=AsrSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    api: ApiSpec = Field(default_factory=ApiSpec)
    license_proxy: LicenseProxySpec = Field(default_factory=LicenseProxySpec)
    redis: RedisSpec = Field(default_factory=RedisSpec)
    images: ImagesSpec = Field(default_factory=ImagesSpec)
    network_policies: bool = Field(
        default=True, description="Render NetworkPolicies (only the API takes traffic)."
    )


def parse_spec(spec: dict[str, Any]) -> SpeechDeploymentSpec:
    """The typed, defaulted spec; raises pydantic.ValidationError (see :func:`describe_errors`)."""
    return SpeechDeploymentSpec.model_validate(spec)


def describe_errors(error: Any) -> str:
    """One line per problem, each naming the field by its CR path: ``spec.asr.replicas: ...``."""
    lines = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in ("spec", *item["loc"]))
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return "; ".join(lines)
