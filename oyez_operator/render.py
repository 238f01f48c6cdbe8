"""Spec + plan -> every desired object (pure). The reconciler applies the result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .render_common import RenderContext
from .render_network import render_network_policies, render_services
from .render_scaling import render_scaling
from .render_storage import render_model_claim, render_prefetch_job, render_redis_statefulset
from .render_workloads import (
    render_api_deployment,
    render_license_proxy_deployment,
    render_worker_deployment,
)


@dataclass(frozen=True)
class Desired:
    """One object to create or patch. ``create_only`` paths are set on create and never patched
    (the worker count once an autoscaler owns it, a Job's immutable spec)."""

    body: dict[str, Any]
    create_only: tuple[tuple[str, ...], ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        return self.body["apiVersion"], self.body["kind"], self.body["metadata"]["name"]


# Fields the API server refuses to change after create: set on create, never patched (a change there
# needs the object deleted by hand; the operator then recreates it).
IMMUTABLE_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Job": (("spec",),),
    "StatefulSet": (("spec", "volumeClaimTemplates"), ("spec", "serviceName"), ("spec", "selector")),
    "PersistentVolumeClaim": (("spec", "accessModes"), ("spec", "storageClassName")),
}


def render_all(ctx: RenderContext, *, include_workers: bool = True) -> list[Desired]:
    """Every object of one SpeechDeployment, in apply order (dependencies first).

    ``include_workers`` is False until the model prefetch Job has succeeded: workers start only
    once the model is on the shared cache.
    """
    bodies: list[dict[str, Any]] = []
    claim = render_model_claim(ctx)
    if claim is not None:
        bodies.append(claim)
    bodies.extend(render_services(ctx))
    bodies.extend(render_network_policies(ctx))
    if ctx.spec.redis.mode == "managed":
        bodies.append(render_redis_statefulset(ctx))
    bodies.append(render_license_proxy_deployment(ctx))
    bodies.append(render_prefetch_job(ctx))
    # A Job's spec is immutable: set on create only, or any change (a new image tag after an
    # operator upgrade, a new toleration) would fail every patch. A new model is a new Job.
    desired = [Desired(body, IMMUTABLE_PATHS.get(body["kind"], ())) for body in bodies]
    if include_workers:
        worker_create_only = (("spec", "replicas"),) if ctx.plan.scaler != "none" else ()
        desired.append(Desired(render_worker_deployment(ctx), worker_create_only))
    desired.append(Desired(render_api_deployment(ctx)))
    desired.extend(Desired(body) for body in render_scaling(ctx))
    return desired
