"""Pure planning: spec + observed cluster facts -> GPU tier, worker count, container sizes.

Every decision carries a one-line reason; the reconciler writes them to ``status.resolved`` and
to Kubernetes Events, so ``kubectl describe`` explains what the operator chose and why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from . import catalog
from .crd_model import PodPlacement, SpeechDeploymentSpec
from .quantity import quantity_value

Scaler = Literal["none", "hpa", "keda"]


@dataclass(frozen=True)
class NodeFacts:
    """What the planner needs to know about one node."""

    name: str
    labels: Mapping[str, str]
    allocatable_gpus: int
    schedulable: bool = True


@dataclass(frozen=True)
class TierChoice:
    tier: str  # "T4" | "L4" | "A10" | "A100" | "none"
    reason: str

    @property
    def on_gpu(self) -> bool:
        return self.tier != catalog.CPU_TIER


@dataclass(frozen=True)
class WorkerCount:
    replicas: int
    reason: str


@dataclass(frozen=True)
class Plan:
    """The resolved deployment: what gets rendered."""

    preset: catalog.PlanPreset
    tier: TierChoice
    workers: WorkerCount
    scaler: Scaler
    resources: Mapping[str, dict[str, Any]]  # component -> {"requests": {...}, "limits": {...}}


def node_tier(labels: Mapping[str, str], label_map: Mapping[str, Mapping[str, str]]) -> str | None:
    """The tier a node's labels name, or None; label keys are tried in the map's order."""
    for key, patterns in label_map.items():
        value = labels.get(key)
        if not value:
            continue
        for tier in catalog.TIER_ORDER:
            pattern = patterns.get(tier)
            if pattern and re.search(pattern, value, re.IGNORECASE):
                return tier
    return None


def choose_tier(
    spec: SpeechDeploymentSpec,
    preset: catalog.PlanPreset,
    nodes: Sequence[NodeFacts],
    label_map: Mapping[str, Mapping[str, str]],
) -> TierChoice:
    requested = spec.gpu.tier
    if requested == catalog.CPU_TIER:
        return TierChoice(catalog.CPU_TIER, "spec.gpu.tier is none: workers run on CPU")
    available: dict[str, list[str]] = {}
    for node in nodes:
        tier = node_tier(node.labels, label_map)
        if tier and node.schedulable and node.allocatable_gpus >= spec.gpu.count:
            available.setdefault(tier, []).append(node.name)
    if requested != "auto":
        if requested in available:
            return TierChoice(
                requested, f"spec.gpu.tier is {requested}; {_nodes(available[requested])} offer it"
            )
        return TierChoice(
            requested,
            f"spec.gpu.tier is {requested}, but no schedulable node with {spec.gpu.count} allocatable "
            f"{requested} GPU(s) is visible; workers stay Pending until one joins",
        )
    for tier in catalog.TIER_ORDER:
        if tier in available:
            return TierChoice(
                tier, f"auto: {tier} is the best tier with allocatable GPUs ({_nodes(available[tier])})"
            )
    return TierChoice(
        preset.tier,
        f"auto: no node advertises an allocatable GPU; using the {preset.name} plan's {preset.tier} "
        "(workers stay Pending until a GPU node joins; set spec.gpu.tier: none for CPU-only clusters)",
    )


def _nodes(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"node(s) {shown}{more}"


def count_workers(
    spec: SpeechDeploymentSpec, preset: catalog.PlanPreset, tier: str, capacity: Mapping[str, float]
) -> WorkerCount:
    asr = spec.asr
    if asr.replicas is not None:
        count, reason = asr.replicas, f"spec.asr.replicas is {asr.replicas}"
    elif asr.throughput_target is not None:
        per_worker = capacity[tier]
        count = max(1, math.ceil(asr.throughput_target / per_worker - 1e-9))
        label = "CPU" if tier == catalog.CPU_TIER else tier
        reason = (
            f"throughputTarget {asr.throughput_target:g} audio-h/h / {per_worker:g} audio-h/h per {label} "
            f"worker = {asr.throughput_target / per_worker:.2f} -> {count} worker(s)"
        )
    else:
        count, reason = preset.workers, f"the {preset.name} plan runs {preset.workers} worker(s)"
    scaling = asr.autoscaling
    if scaling.enabled:
        clamped = min(max(count, scaling.min), scaling.max)
        if clamped != count:
            reason += f", clamped to autoscaling [{scaling.min}, {scaling.max}] = {clamped}"
        count = clamped
        reason += "; the autoscaler owns the count from here"
    return WorkerCount(count, reason)


def _merge_resources(base: dict[str, Any], placement: PodPlacement) -> dict[str, Any]:
    override = placement.resources
    if override is None:
        return base
    merged = {key: dict(value) for key, value in base.items()}
    for part in ("requests", "limits"):
        extra = getattr(override, part)
        if extra:
            merged.setdefault(part, {}).update({name: str(qty) for name, qty in extra.items()})
    return merged


def size_components(
    spec: SpeechDeploymentSpec, preset: catalog.PlanPreset, tier: TierChoice
) -> dict[str, Any]:
    placements: dict[str, PodPlacement] = {
        "api-server": spec.api,
        "asr-worker": spec.asr,
        "license-proxy": spec.license_proxy,
        "redis": spec.redis,
    }
    sized: dict[str, Any] = {}
    for component, placement in placements.items():
        resources = preset.sizes[component].as_resources()
        if component == "asr-worker" and tier.on_gpu:
            gpus = str(spec.gpu.count)
            resources["requests"][catalog.GPU_RESOURCE] = gpus
            resources["limits"][catalog.GPU_RESOURCE] = gpus
        sized[component] = _merge_resources(resources, placement)
    return sized


def resource_problems(resources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Requests above limits (after the spec's overrides) would be rejected by the API server."""
    names = {"api-server": "api", "asr-worker": "asr", "license-proxy": "licenseProxy", "redis": "redis"}
    problems = []
    for component, sized in resources.items():
        requests, limits = sized.get("requests") or {}, sized.get("limits") or {}
        for resource, requested in requests.items():
            if resource not in limits:
                continue
            want, cap = quantity_value(requested), quantity_value(limits[resource])
            if want is not None and cap is not None and want > cap:
                problems.append(
                    f"spec.{names[component]}.resources: requests.{resource} {requested} exceeds "
                    f"limits.{resource} {limits[resource]} (set limits.{resource} too)"
                )
    return problems


def choose_scaler(spec: SpeechDeploymentSpec, keda_installed: bool) -> Scaler:
    if not spec.asr.autoscaling.enabled:
        return "none"
    return "keda" if keda_installed else "hpa"


def make_plan(
    spec: SpeechDeploymentSpec,
    nodes: Sequence[NodeFacts],
    *,
    keda_installed: bool = False,
    label_map: Mapping[str, Mapping[str, str]] = catalog.DEFAULT_GPU_LABELS,
    capacity: Mapping[str, float] = catalog.DEFAULT_CAPACITY_AUDIO_HOURS_PER_HOUR,
) -> Plan:
    preset = catalog.PLANS[spec.plan]
    tier = choose_tier(spec, preset, nodes, label_map)
    return Plan(
        preset=preset,
        tier=tier,
        workers=count_workers(spec, preset, tier.tier, capacity),
        scaler=choose_scaler(spec, keda_installed),
        resources=size_components(spec, preset, tier),
    )
