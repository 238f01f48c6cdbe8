"""The model cache (PVC), the prefetch Job the workers wait for, and the managed Redis (pure)."""

from __future__ import annotations

import hashlib
from typing import Any

from oyez import constants as c

from .render_common import (
    REDIS_USER,
    RenderContext,
    container_security,
    env_secret,
    env_value,
    labels,
    metadata,
    placement_fields,
    pod_security,
    pull_secrets,
    selector_labels,
    tmp_volume,
    worker_placement,
)

MODEL_MOUNT = "/models"
PREFETCH_BACKOFF_LIMIT = 3
PREFETCH_DEADLINE_S = 4 * 3600


def model_claim_name(ctx: RenderContext) -> str:
    return ctx.spec.model.cache.existing_claim or ctx.object_name("model-cache")


def model_volume(ctx: RenderContext) -> dict[str, Any]:
    return {"name": "model-cache", "persistentVolumeClaim": {"claimName": model_claim_name(ctx)}}


def prefetch_job_name(ctx: RenderContext) -> str:
    """Job specs are immutable, so the name carries the model: a new URL or digest is a new Job."""
    model = ctx.spec.model
    digest = hashlib.sha256(f"{model.url}\n{model.sha256 or ''}".encode()).hexdigest()[:10]
    return f"{ctx.name}-model-{digest}"


def render_model_claim(ctx: RenderContext) -> dict[str, Any] | None:
    cache = ctx.spec.model.cache
    if cache.existing_claim:
        return None
    spec: dict[str, Any] = {
        "accessModes": [cache.access_mode],
        "resources": {"requests": {"storage": str(cache.size)}},
    }
    if cache.storage_class_name:
        spec["storageClassName"] = cache.storage_class_name
    meta = metadata(ctx, "model-cache", owned=not cache.retain_on_delete)
    if cache.retain_on_delete:
        meta["annotations"] = {"oyez.dev/retain": "true"}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def render_prefetch_job(ctx: RenderContext) -> dict[str, Any]:
    model = ctx.spec.model
    tmp, tmp_mount = tmp_volume()
    container = {
        "name": "model-prefetch",
        "image": ctx.image("model-prefetch"),
        "imagePullPolicy": ctx.spec.images.pull_policy,
        "command": ["oyez", "model", "fetch"],
        "env": [
            env_value(c.ENV_MODEL_URL, model.url),
            env_value(c.ENV_MODEL_SHA256, model.sha256 or ""),
            env_value(c.ENV_MODEL_CACHE_DIR, MODEL_MOUNT),
            env_value(c.ENV_LOG_FORMAT, "json"),
        ],
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        },
        "securityContext": container_security(),
        "volumeMounts": [tmp_mount, {"name": "model-cache", "mountPath": MODEL_MOUNT}],
    }
    pod_labels = labels(ctx, "model-prefetch")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(ctx, "model-prefetch", prefetch_job_name(ctx)),
        "spec": {
            "backoffLimit": PREFETCH_BACKOFF_LIMIT,
            "activeDeadlineSeconds": PREFETCH_DEADLINE_S,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(),
                    "imagePullSecrets": pull_secrets(ctx),
                    **worker_placement(ctx),  # where the workers will mount the volume
                    "containers": [container],
                    "volumes": [tmp, {"name": "model-cache", **_claim(ctx)}],
                },
            },
        },
    }


def _claim(ctx: RenderContext) -> dict[str, Any]:
    return {"persistentVolumeClaim": {"claimName": model_claim_name(ctx)}}


def render_redis_statefulset(ctx: RenderContext) -> dict[str, Any]:
    redis = ctx.spec.redis
    env: list[dict[str, Any]] = []
    command = [
        "redis-server",
        "--port",
        str(c.REDIS_PORT),
        "--dir",
        "/data",
        "--appendonly",
        "yes" if redis.persistence else "no",
        "--save",
        "",
        "--protected-mode",
        "no",
    ]
    ping = "redis-cli -p 6379 ping | grep -q PONG"
    if redis.password_secret_ref is not None:
        env.append(
            env_secret("REDIS_PASSWORD", redis.password_secret_ref.name, redis.password_secret_ref.key)
        )
        command += ["--requirepass", "$(REDIS_PASSWORD)"]
        ping = 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -p 6379 ping | grep -q PONG'
    probe = {
        "exec": {"command": ["sh", "-c", ping]},
        "periodSeconds": 5,
        "timeoutSeconds": 3,
        "failureThreshold": 3,
    }
    tmp, tmp_mount = tmp_volume()
    container = {
        "name": "redis",
        "image": ctx.image("redis"),
        "imagePullPolicy": ctx.spec.images.pull_policy,
        "command": command,
        "env": env or None,
        "ports": [{"name": "redis", "containerPort": c.REDIS_PORT, "protocol": "TCP"}],
        "resources": ctx.plan.resources["redis"],
        "securityContext": container_security(),
        "readinessProbe": probe,
        "livenessProbe": probe | {"periodSeconds": 10, "failureThreshold": 6},
        "volumeMounts": [tmp_mount, {"name": "data", "mountPath": "/data"}],
    }
    volumes: list[dict[str, Any]] = [tmp]
    spec: dict[str, Any] = {
        "serviceName": ctx.object_name("redis"),
        "replicas": 1,
        "selector": {"matchLabels": selector_labels(ctx, "redis")},
        "template": {
            "metadata": {"labels": labels(ctx, "redis")},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": pod_security(REDIS_USER),
                "terminationGracePeriodSeconds": 30,
                "imagePullSecrets": pull_secrets(ctx),
                **placement_fields(redis),
                "containers": [container],
                "volumes": volumes,
            },
        },
    }
    if redis.persistence:
        claim_spec: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": str(redis.persistence_size)}},
        }
        if redis.storage_class_name:
            claim_spec["storageClassName"] = redis.storage_class_name
        spec["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": claim_spec}]
    else:
        volumes.append({"name": "data", "emptyDir": {"sizeLimit": "2Gi"}})
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata(ctx, "redis"), "spec": spec}
