"""Services and NetworkPolicies (pure). Only the API takes traffic from anywhere."""

from __future__ import annotations

from typing import Any

from oyez import constants as c

from .render_common import RenderContext, metadata, selector_labels


def _service(
    ctx: RenderContext,
    component: str,
    ports: list[dict[str, Any]],
    *,
    name: str | None = None,
    headless: bool = False,
    service_type: str = "ClusterIP",
    extra_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta = metadata(ctx, component, name)
    meta["labels"] = {**meta["labels"], **(extra_labels or {})}
    if annotations:
        # Only when the spec sets some: other tools (cloud load balancers, NEG controllers) annotate
        # Services too, and owning the field would make the two fight over it.
        meta["annotations"] = annotations
    spec: dict[str, Any] = {"type": service_type, "selector": selector_labels(ctx, component), "ports": ports}
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def _port(name: str, port: int, target: str | int | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "port": port,
        "targetPort": target if target is not None else name,
        "protocol": "TCP",
    }


def render_services(ctx: RenderContext) -> list[dict[str, Any]]:
    api = ctx.spec.api.service
    services = [
        _service(
            ctx,
            "api-server",
            [_port("http", api.port, "http")],
            service_type=api.type,
            annotations=dict(api.annotations) if api.annotations else None,
        ),
        # Headless: the API's static fallback resolves every worker pod; the registry is the main path.
        _service(ctx, "asr-worker", [_port("grpc", c.ASR_GRPC_PORT)], headless=True),
        _service(
            ctx,
            "asr-worker",
            [_port("metrics", c.ASR_HTTP_PORT)],
            name=ctx.object_name("asr-worker-metrics"),
            extra_labels={"metrics": "true"},
        ),
        _service(ctx, "license-proxy", [_port("http", c.LICENSE_PROXY_PORT)]),
    ]
    if ctx.spec.redis.mode == "managed":
        services.append(_service(ctx, "redis", [_port("redis", c.REDIS_PORT)], headless=True))
    return services


def _from_components(ctx: RenderContext, *components: str) -> list[dict[str, Any]]:
    return [{"podSelector": {"matchLabels": selector_labels(ctx, component)}} for component in components]


def _policy(
    ctx: RenderContext, component: str, ingress: list[dict[str, Any]], *, name: str | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(ctx, component, name),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(ctx, component)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def _tcp(port: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port}]


def render_network_policies(ctx: RenderContext) -> list[dict[str, Any]]:
    if not ctx.spec.network_policies:
        return []
    any_namespace: list[dict[str, Any]] = [{"namespaceSelector": {}}]
    policies = [
        # The API: from anywhere, on its port only.
        _policy(ctx, "api-server", [{"ports": _tcp(c.API_PORT)}]),
        # Workers: gRPC from the API; metrics from inside the cluster (Prometheus).
        _policy(
            ctx,
            "asr-worker",
            [
                {"from": _from_components(ctx, "api-server"), "ports": _tcp(c.ASR_GRPC_PORT)},
                {"from": any_namespace, "ports": _tcp(c.ASR_HTTP_PORT)},
            ],
        ),
        _policy(
            ctx,
            "license-proxy",
            [
                {
                    "from": _from_components(ctx, "api-server", "asr-worker"),
                    "ports": _tcp(c.LICENSE_PROXY_PORT),
                }
            ],
        ),
        # The prefetch Job serves nothing.
        _policy(ctx, "model-prefetch", []),
    ]
    if ctx.spec.redis.mode == "managed":
        policies.append(
            _policy(
                ctx,
                "redis",
                [{"from": _from_components(ctx, "api-server", "asr-worker"), "ports": _tcp(c.REDIS_PORT)}],
            )
        )
    return policies
