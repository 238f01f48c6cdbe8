"""Shared pieces of rendering: the render context, names, labels, owner references, pod security.

Rendered objects are plain dicts. A ``None`` value in a rendered object means "this field must be
absent": :mod:`.apply` strips it on create and sends it as ``null`` in merge patches, so a field
the spec stops setting (a nodeSelector, say) is removed from the live object too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from oyez import __version__

from . import catalog
from .crd_model import GROUP, KIND, VERSION, PodPlacement, SpeechDeploymentSpec
from .planning import Plan

MANAGED_BY = "oyez-operator"
COMPONENTS = ("api-server", "asr-worker", "license-proxy", "redis", "model-prefetch")
APP_USER = 10001
REDIS_USER = 999


@dataclass(frozen=True)
class Images:
    api_server: str
    asr_worker: str
    asr_worker_cpu: str
    license_proxy: str
    redis: str


def default_images(registry: str = "ghcr.io/oyez-dev", tag: str = __version__) -> Images:
    return Images(
        api_server=f"{registry}/api-server:{tag}",
        asr_worker=f"{registry}/asr-worker:{tag}",
        asr_worker_cpu=f"{registry}/asr-worker-cpu:{tag}",
        license_proxy=f"{registry}/license-proxy:{tag}",
        redis="docker.io/library/redis:7.2.5-alpine",
    )


@dataclass(frozen=True)
class RenderContext:
    """Everything rendering needs: the CR's identity, its typed spec, the plan, cluster facts."""

    name: str
    namespace: str
    uid: str
    spec: SpeechDeploymentSpec
    plan: Plan
    images: Images = field(default_factory=default_images)
    model_job: str = ""  # name of the prefetch Job for the current model
    gpu_node_terms: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (label key, values) seen on tier nodes
    service_monitor_installed: bool = False

    def object_name(self, component: str) -> str:
        return f"{self.name}-{component}"

    def image(self, component: str) -> str:
        override = self.spec.images
        if component == "asr-worker":
            if not self.plan.tier.on_gpu:
                return override.asr_worker_cpu or override.asr_worker or self.images.asr_worker_cpu
            return override.asr_worker or self.images.asr_worker
        chosen = {
            "api-server": override.api_server or self.images.api_server,
            "license-proxy": override.license_proxy or self.images.license_proxy,
            "redis": override.redis or self.images.redis,
            "model-prefetch": self.image("asr-worker"),
        }
        return chosen[component]


def selector_labels(ctx: RenderContext, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/instance": ctx.name, "app.kubernetes.io/component": component}


def labels(ctx: RenderContext, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "oyez",
        **selector_labels(ctx, component),
        "app.kubernetes.io/version": __version__,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "oyez",
        "app": component,
    }


def owner_reference(ctx: RenderContext) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": ctx.name,
        "uid": ctx.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    ctx: RenderContext, component: str, name: str | None = None, *, owned: bool = True
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name or ctx.object_name(component),
        "namespace": ctx.namespace,
        "labels": labels(ctx, component),
    }
    if owned:
        meta["ownerReferences"] = [owner_reference(ctx)]
    return meta


def pod_security(user: int = APP_USER) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "fsGroup": user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }


def env_value(name: str, value: str | int) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def env_secret(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def env_field(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def http_probe(path: str, port: str, *, period: int, failures: int, timeout: int = 3) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def placement_fields(
    placement: PodPlacement, *, extra_tolerations: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """nodeSelector, tolerations, affinity and priorityClassName of a pod spec (None = absent)."""
    tolerations = [t.model_dump(by_alias=True, exclude_none=True) for t in placement.tolerations or []]
    tolerations = (extra_tolerations or []) + tolerations
    return {
        "nodeSelector": dict(placement.node_selector) if placement.node_selector else None,
        "tolerations": tolerations or None,
        "affinity": dict(placement.affinity) if placement.affinity else None,
        "priorityClassName": placement.priority_class_name,
    }


def worker_placement(ctx: RenderContext) -> dict[str, Any]:
    """Placement of the worker pods and of the prefetch Job that fills their model volume: spec.asr's
    overrides, plus (GPU tiers) the GPU taint's toleration and node affinity to the tier's nodes,
    unless spec.asr.affinity replaces it. The Job goes where the workers go, so a ReadWriteOnce
    volume is provisioned in their zone and a tainted GPU pool does not leave the Job Pending."""
    on_gpu = ctx.plan.tier.on_gpu
    gpu_tolerations = (
        [{"key": catalog.GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}] if on_gpu else []
    )
    placement = placement_fields(ctx.spec.asr, extra_tolerations=gpu_tolerations)
    if placement["affinity"] is None and on_gpu and ctx.gpu_node_terms:
        terms = [
            {"matchExpressions": [{"key": key, "operator": "In", "values": list(values)}]}
            for key, values in ctx.gpu_node_terms
        ]
        placement["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
        }
    return placement


def pull_secrets(ctx: RenderContext) -> list[dict[str, str]] | None:
    return [{"name": name} for name in ctx.spec.images.pull_secrets] or None


def tmp_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """An emptyDir for /tmp: the root filesystem is read-only."""
    return {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}, {"name": "tmp", "mountPath": "/tmp"}  # noqa: S108


def service_url(ctx: RenderContext, component: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://{ctx.object_name(component)}.{ctx.namespace}.svc:{port}"
