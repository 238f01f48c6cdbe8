"""PodDisruptionBudgets, the worker autoscaler (HPA, or a KEDA ScaledObject), ServiceMonitor (pure)."""

from __future__ import annotations

from typing import Any

from oyez import constants as c

from .render_common import RenderContext, metadata, selector_labels

ACTIVE_REQUESTS_METRIC = "asr_active_requests"
QUEUE_DEPTH_METRIC = "asr_batch_queue_depth"


def render_disruption_budgets(ctx: RenderContext) -> list[dict[str, Any]]:
    """At most one pod of each stateless component down at a time during voluntary disruptions."""
    return [
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata(ctx, component),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(ctx, component)}},
        }
        for component in ("api-server", "asr-worker", "license-proxy")
    ]


def _behavior() -> dict[str, Any]:
    """Scale up fast (100% or 2 pods per 15 s), down slowly (after 300 s, 1 pod or 50% per 60 s)."""
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15},
                {"type": "Pods", "value": 2, "periodSeconds": 15},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "selectPolicy": "Min",
            "policies": [
                {"type": "Percent", "value": 50, "periodSeconds": 60},
                {"type": "Pods", "value": 1, "periodSeconds": 60},
            ],
        },
    }


def render_worker_hpa(ctx: RenderContext) -> dict[str, Any]:
    scaling = ctx.spec.asr.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(ctx, "asr-worker"),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": ctx.object_name("asr-worker"),
            },
            "minReplicas": max(1, scaling.min),
            "maxReplicas": scaling.max,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": ACTIVE_REQUESTS_METRIC},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": str(scaling.target_active_requests),
                        },
                    },
                }
            ],
            "behavior": _behavior(),
        },
    }


def render_worker_scaled_object(ctx: RenderContext) -> dict[str, Any]:
    """KEDA: the same target on active requests, plus the queue depth, read from Prometheus."""
    scaling = ctx.spec.asr.autoscaling
    selector = f'namespace="{ctx.namespace}",service="{ctx.object_name("asr-worker-metrics")}"'

    def trigger(metric: str) -> dict[str, Any]:
        return {
            "type": "prometheus",
            "name": metric,
            "metadata": {
                "serverAddress": scaling.prometheus_address,
                "query": f"sum({metric}{{{selector}}})",
                "threshold": str(scaling.target_active_requests),
            },
        }

    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata(ctx, "asr-worker"),
        "spec": {
            "scaleTargetRef": {"name": ctx.object_name("asr-worker")},
            "minReplicaCount": scaling.min,
            "maxReplicaCount": scaling.max,
            "pollingInterval": 5,
            "cooldownPeriod": 300,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior()}},
            "triggers": [trigger(ACTIVE_REQUESTS_METRIC), trigger(QUEUE_DEPTH_METRIC)],
        },
    }


def render_service_monitor(ctx: RenderContext) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(ctx, "asr-worker"),
        "spec": {
            "selector": {"matchLabels": {**selector_labels(ctx, "asr-worker"), "metrics": "true"}},
            "endpoints": [{"port": "metrics", "path": c.METRICS_PATH, "interval": "5s"}],
        },
    }


def render_scaling(ctx: RenderContext) -> list[dict[str, Any]]:
    objects = render_disruption_budgets(ctx)
    if ctx.plan.scaler == "hpa":
        objects.append(render_worker_hpa(ctx))
    elif ctx.plan.scaler == "keda":
        objects.append(render_worker_scaled_object(ctx))
    if ctx.plan.scaler != "none" and ctx.service_monitor_installed:
        objects.append(render_service_monitor(ctx))
    return objects
