"""Deployments for the API, the ASR workers and the license proxy (pure)."""

from __future__ import annotations

from typing import Any

from oyez import constants as c

from . import catalog
from .render_common import (
    RenderContext,
    container_security,
    env_field,
    env_secret,
    env_value,
    http_probe,
    labels,
    metadata,
    placement_fields,
    pod_security,
    pull_secrets,
    selector_labels,
    service_url,
    tmp_volume,
    worker_placement,
)
from .render_storage import MODEL_MOUNT, model_volume

DRAIN_MARGIN_S = 15  # terminationGracePeriodSeconds = the service's drain grace + this


def redis_env(ctx: RenderContext) -> list[dict[str, Any]]:
    """REDIS_URL (and the password it expands) for the managed or the external Redis."""
    redis = ctx.spec.redis
    if redis.mode == "external":
        if redis.url_secret_ref is not None:
            return [env_secret(c.ENV_REDIS_URL, redis.url_secret_ref.name, redis.url_secret_ref.key)]
        assert redis.url is not None
        return [env_value(c.ENV_REDIS_URL, redis.url)]
    host = f"{ctx.object_name('redis')}.{ctx.namespace}.svc:{c.REDIS_PORT}"
    if redis.password_secret_ref is None:
        return [env_value(c.ENV_REDIS_URL, f"redis://{host}/0")]
    ref = redis.password_secret_ref
    return [
        env_secret("REDIS_PASSWORD", ref.name, ref.key),
        env_value(c.ENV_REDIS_URL, f"redis://:$(REDIS_PASSWORD)@{host}/0"),
    ]


def license_env(ctx: RenderContext) -> dict[str, Any]:
    ref = ctx.spec.license.secret_ref
    return env_secret(c.ENV_LICENSE_KEY, ref.name, ref.key)


def _deployment(
    ctx: RenderContext,
    component: str,
    *,
    replicas: int | None,
    pod_spec: dict[str, Any],
    strategy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": selector_labels(ctx, component)},
        "template": {"metadata": {"labels": labels(ctx, component)}, "spec": pod_spec},
    }
    if strategy is not None:
        spec["strategy"] = strategy
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(ctx, component), "spec": spec}


def _pod(
    ctx: RenderContext,
    container: dict[str, Any],
    *,
    grace_s: int,
    placement: dict[str, Any],
    volumes: list[dict[str, Any]],
    user: int = 10001,
) -> dict[str, Any]:
    tmp, tmp_mount = tmp_volume()
    container["volumeMounts"] = [tmp_mount, *container.get("volumeMounts", [])]
    container["securityContext"] = container_security()
    container.setdefault("imagePullPolicy", ctx.spec.images.pull_policy)
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(user),
        "terminationGracePeriodSeconds": grace_s,
        "imagePullSecrets": pull_secrets(ctx),
        **placement,
        "containers": [container],
        "volumes": [tmp, *volumes],
    }


def render_api_deployment(ctx: RenderContext) -> dict[str, Any]:
    api = ctx.spec.api
    container = {
        "name": "api-server",
        "image": ctx.image("api-server"),
        "command": ["oyez", "api"],
        "ports": [{"name": "http", "containerPort": c.API_PORT, "protocol": "TCP"}],
        "env": [
            license_env(ctx),
            env_value(c.ENV_API_PORT, c.API_PORT),
            env_value(c.ENV_API_LICENSE_PROXY_URL, service_url(ctx, "license-proxy", c.LICENSE_PROXY_PORT)),
            env_value(c.ENV_API_ASR_URL, service_url(ctx, "asr-worker", c.ASR_GRPC_PORT)),
            *redis_env(ctx),
            env_value(c.ENV_DRAIN_GRACE_S, api.drain_grace_period_seconds),
            env_value(c.ENV_LOG_FORMAT, "json"),
        ],
        "resources": ctx.plan.resources["api-server"],
        "startupProbe": http_probe(c.API_LIVENESS_PATH, "http", period=2, failures=60),
        "livenessProbe": http_probe(c.API_LIVENESS_PATH, "http", period=10, failures=3),
        "readinessProbe": http_probe(c.API_READINESS_PATH, "http", period=5, failures=2),
    }
    pod = _pod(
        ctx,
        container,
        grace_s=api.drain_grace_period_seconds + DRAIN_MARGIN_S,
        placement=placement_fields(api),
        volumes=[],
    )
    return _deployment(ctx, "api-server", replicas=api.replicas, pod_spec=pod)


def render_worker_deployment(ctx: RenderContext) -> dict[str, Any]:
    asr, model = ctx.spec.asr, ctx.spec.model
    on_gpu = ctx.plan.tier.on_gpu
    env = [
        env_value(c.ENV_MODEL_URL, model.url),
        env_value(c.ENV_MODEL_SHA256, model.sha256 or ""),
        env_value(c.ENV_MODEL_CACHE_DIR, MODEL_MOUNT),
        license_env(ctx),
        *redis_env(ctx),
        env_value(c.ENV_PORT, c.ASR_GRPC_PORT),
        env_value(c.ENV_WORKER_HTTP_PORT, c.ASR_HTTP_PORT),
        env_value(c.ENV_GPU_DEVICE_ID, 0),
        env_value(c.ENV_REQUIRE_GPU, "true" if on_gpu else "false"),
        env_value(c.ENV_INFERENCE_LANES, catalog.GPU_INFERENCE_LANES if on_gpu else 1),
        env_field("POD_IP", "status.podIP"),
        env_field(c.ENV_WORKER_ID, "metadata.name"),
        env_value(c.ENV_WORKER_ADVERTISE_ADDRESS, f"$(POD_IP):{c.ASR_GRPC_PORT}"),
        env_value(c.ENV_DRAIN_GRACE_S, asr.drain_grace_period_seconds),
        env_value(c.ENV_LOG_FORMAT, "json"),
    ]
    container = {
        "name": "asr-worker",
        "image": ctx.image("asr-worker"),
        "command": ["oyez", "worker"],
        "ports": [
            {"name": "grpc", "containerPort": c.ASR_GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": c.ASR_HTTP_PORT, "protocol": "TCP"},
        ],
        "env": env,
        "resources": ctx.plan.resources["asr-worker"],
        "volumeMounts": [{"name": "model-cache", "mountPath": MODEL_MOUNT}],
        # Loading (and, without a prefetch, downloading) the model may take long: up to 30 min.
        "startupProbe": http_probe(c.WORKER_HEALTH_PATH, "metrics", period=10, failures=180),
        "readinessProbe": http_probe(c.WORKER_HEALTH_PATH, "metrics", period=5, failures=2),
        # /metrics answers while the process serves, also while draining (when /health is 503).
        "livenessProbe": http_probe(c.METRICS_PATH, "metrics", period=10, failures=6, timeout=5),
    }
    pod = _pod(
        ctx,
        container,
        grace_s=asr.drain_grace_period_seconds + DRAIN_MARGIN_S,
        placement=worker_placement(ctx),
        volumes=[model_volume(ctx)],
    )
    # With an autoscaler the replica count belongs to it: rendered only for the first create.
    replicas = ctx.plan.workers.replicas
    return _deployment(
        ctx,
        "asr-worker",
        replicas=replicas,
        pod_spec=pod,
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
    )


def render_license_proxy_deployment(ctx: RenderContext) -> dict[str, Any]:
    spec = ctx.spec.license_proxy
    lic = ctx.spec.license
    state_dir = "/var/lib/oyez-license"
    env = [
        license_env(ctx),
        env_value(c.ENV_PORT, c.LICENSE_PROXY_PORT),
        env_value(c.ENV_LICENSE_STATE_DIR, state_dir),
        env_value(c.ENV_LICENSE_ENV, "production"),
        env_value(c.ENV_LOG_FORMAT, "json"),
    ]
    if lic.server_url:
        env.append(env_value(c.ENV_LICENSE_SERVER_URL, lic.server_url))
    if lic.public_key:
        env.append(env_value(c.ENV_LICENSE_PUBLIC_KEY, lic.public_key))
    container = {
        "name": "license-proxy",
        "image": ctx.image("license-proxy"),
        "command": ["oyez", "license-proxy"],
        "ports": [{"name": "http", "containerPort": c.LICENSE_PROXY_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": ctx.plan.resources["license-proxy"],
        "volumeMounts": [{"name": "state", "mountPath": state_dir}],
        "startupProbe": http_probe(c.LICENSE_PROXY_ALIVE_PATH, "http", period=2, failures=60),
        "livenessProbe": http_probe(c.LICENSE_PROXY_ALIVE_PATH, "http", period=10, failures=3),
        # Ready only while the license is valid (or inside the offline grace period).
        "readinessProbe": http_probe(c.LICENSE_PROXY_HEALTH_PATH, "http", period=10, failures=2),
    }
    pod = _pod(
        ctx,
        container,
        grace_s=30,
        placement=placement_fields(spec),
        volumes=[{"name": "state", "emptyDir": {"sizeLimit": "2Gi"}}],
    )
    return _deployment(ctx, "license-proxy", replicas=spec.replicas, pod_spec=pod)
