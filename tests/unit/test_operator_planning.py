"""oyez_operator.planning (pure): GPU tier choice from node labels, worker count, container sizes,
autoscaler choice. Every decision's reason string is pinned where users read it (status, events)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from oyez_operator import catalog
from oyez_operator.apply import quantity_value
from oyez_operator.crd_model import SpeechDeploymentSpec, parse_spec
from oyez_operator.planning import (
    NodeFacts,
    TierChoice,
    choose_scaler,
    choose_tier,
    count_workers,
    make_plan,
    node_tier,
    resource_problems,
    size_components,
)

GIB = Decimal(2**30)
COMPONENTS = ("api-server", "asr-worker", "license-proxy", "redis")
# Fixed figures for the arithmetic tests (the catalog's defaults get re-measured).
CAPACITY = {"T4": 45.0, "L4": 90.0, "A10": 100.0, "A100": 250.0, "none": 5.0}


def spec(**fields: Any) -> SpeechDeploymentSpec:
    return parse_spec({"license": {"secretRef": {"name": "lic"}}, **fields})


def gpu_node(name: str, labels: dict[str, str], gpus: int = 1, *, schedulable: bool = True) -> NodeFacts:
    return NodeFacts(name=name, labels=labels, allocatable_gpus=gpus, schedulable=schedulable)


def product(value: str) -> dict[str, str]:
    return {"nvidia.com/gpu.product": value}


def tier_of(nodes: list[NodeFacts], **fields: Any) -> TierChoice:
    return make_plan(spec(**fields), nodes).tier


def qty(value: Any) -> Decimal:
    parsed = quantity_value(value)
    assert parsed is not None, f"not a quantity: {value!r}"
    return parsed


# --- node labels -> tier -------------------------------------------------------------------------

LABELLED_NODES = [
    # GPU Feature Discovery
    ("nvidia.com/gpu.product", "NVIDIA-A10G", "A10"),
    ("nvidia.com/gpu.product", "NVIDIA-A10", "A10"),
    ("nvidia.com/gpu.product", "Tesla-T4", "T4"),
    ("nvidia.com/gpu.product", "Tesla-T4-SHARED", "T4"),
    ("nvidia.com/gpu.product", "NVIDIA-L4", "L4"),
    ("nvidia.com/gpu.product", "NVIDIA-A100-SXM4-40GB", "A100"),
    ("nvidia.com/gpu.product", "NVIDIA-A100-PCIE-40GB", "A100"),
    ("nvidia.com/gpu.product", "NVIDIA-L40S", None),
    ("nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3", None),
    ("nvidia.com/gpu.product", "NVIDIA-A40", None),
    # GKE
    ("cloud.google.com/gke-accelerator", "nvidia-tesla-t4", "T4"),
    ("cloud.google.com/gke-accelerator", "nvidia-l4", "L4"),
    ("cloud.google.com/gke-accelerator", "nvidia-tesla-a100", "A100"),
    ("cloud.google.com/gke-accelerator", "nvidia-a100-80gb", "A100"),
    ("cloud.google.com/gke-accelerator", "nvidia-tesla-v100", None),
    # Karpenter on AWS
    ("karpenter.k8s.aws/instance-gpu-name", "a10g", "A10"),
    ("karpenter.k8s.aws/instance-gpu-name", "t4", "T4"),
    ("karpenter.k8s.aws/instance-gpu-name", "l4", "L4"),
    ("karpenter.k8s.aws/instance-gpu-name", "a100", "A100"),
    ("karpenter.k8s.aws/instance-gpu-name", "l40s", None),
    # instance types
    ("node.kubernetes.io/instance-type", "g5.xlarge", "A10"),
    ("node.kubernetes.io/instance-type", "g4dn.xlarge", "T4"),
    ("node.kubernetes.io/instance-type", "g6.xlarge", "L4"),
    ("node.kubernetes.io/instance-type", "p4d.24xlarge", "A100"),
    ("node.kubernetes.io/instance-type", "g6e.xlarge", None),  # L40S, not L4
    ("node.kubernetes.io/instance-type", "m5.xlarge", None),
]


def test_the_label_table_covers_every_default_scheme() -> None:
    assert {key for key, _, _ in LABELLED_NODES} == set(catalog.DEFAULT_GPU_LABELS)


@pytest.mark.parametrize(("key", "value", "tier"), LABELLED_NODES)
def test_node_tier_reads_each_label_scheme(key: str, value: str, tier: str | None) -> None:
    assert node_tier({key: value}, catalog.DEFAULT_GPU_LABELS) == tier


@pytest.mark.parametrize(("key", "value", "tier"), [row for row in LABELLED_NODES if row[2]])
def test_auto_picks_the_tier_a_single_node_advertises(key: str, value: str, tier: str) -> None:
    choice = tier_of([gpu_node("gpu-1", {key: value})])
    assert choice.tier == tier
    assert choice.on_gpu
    assert choice.reason == f"auto: {tier} is the best tier with allocatable GPUs (node(s) gpu-1)"


def test_l40s_and_a100_are_never_taken_for_l4_or_a10() -> None:
    nodes = [gpu_node("l40s", product("NVIDIA-L40S")), gpu_node("a100", product("NVIDIA-A100-SXM4-40GB"))]
    assert tier_of(nodes).tier == "A100"
    assert tier_of([nodes[0]]).tier == "T4"  # nothing usable: the minimum plan's default
    assert "no node advertises" in tier_of([nodes[0]]).reason


def test_auto_prefers_the_best_tier_across_schemes() -> None:
    nodes = [
        gpu_node("t4", {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}),
        gpu_node("l4", {"karpenter.k8s.aws/instance-gpu-name": "l4"}),
        gpu_node("a10", {"node.kubernetes.io/instance-type": "g5.2xlarge"}),
    ]
    assert tier_of(nodes).tier == "A10"
    assert tier_of(nodes[:2]).tier == "L4"
    assert tier_of([*nodes, gpu_node("a100", product("NVIDIA-A100-SXM4-40GB"))]).tier == "A100"


def test_auto_ignores_unschedulable_nodes() -> None:
    nodes = [
        gpu_node("a100-cordoned", product("NVIDIA-A100-SXM4-40GB"), schedulable=False),
        gpu_node("t4", product("Tesla-T4")),
    ]
    choice = tier_of(nodes)
    assert choice.tier == "T4"
    assert "a100-cordoned" not in choice.reason


def test_auto_ignores_nodes_with_fewer_gpus_than_a_worker_needs() -> None:
    nodes = [
        gpu_node("a100-one", product("NVIDIA-A100-SXM4-40GB"), gpus=1),
        gpu_node("l4-two", product("NVIDIA-L4"), gpus=2),
        gpu_node("t4-none", product("Tesla-T4"), gpus=0),
    ]
    assert tier_of(nodes, gpu={"count": 2}).tier == "L4"
    assert tier_of(nodes, gpu={"count": 1}).tier == "A100"
    assert tier_of(nodes, gpu={"count": 3}).tier == "T4"  # none fits: the plan's default


@pytest.mark.parametrize(
    ("plan", "tier"), [("minimum", "T4"), ("production", "A10"), ("multi-worker", "A10")]
)
def test_auto_without_gpu_nodes_falls_back_to_the_plans_tier(plan: str, tier: str) -> None:
    cpu_only = [
        NodeFacts("cpu-1", {"node.kubernetes.io/instance-type": "m5.xlarge"}, 0),
        NodeFacts("gpu-labelled-but-empty", product("NVIDIA-A10G"), 0),
    ]
    choice = tier_of(cpu_only, plan=plan)
    assert choice.tier == tier
    assert choice.on_gpu
    assert choice.reason.startswith(
        f"auto: no node advertises an allocatable GPU; using the {plan} plan's {tier}"
    )
    assert "spec.gpu.tier: none" in choice.reason
    assert tier_of([], plan=plan) == choice


def test_explicit_tier_with_matching_nodes_names_them() -> None:
    nodes = [gpu_node(f"l4-{index}", product("NVIDIA-L4")) for index in (5, 1, 4, 2, 3)]
    nodes.append(gpu_node("a100", product("NVIDIA-A100-SXM4-40GB")))
    choice = tier_of(nodes, gpu={"tier": "L4"})
    assert choice.tier == "L4"  # explicit beats the better A100
    assert choice.reason == "spec.gpu.tier is L4; node(s) l4-1, l4-2, l4-3 and 2 more offer it"


def test_explicit_tier_without_matching_nodes_says_workers_stay_pending() -> None:
    choice = tier_of([gpu_node("t4", product("Tesla-T4"))], gpu={"tier": "A100", "count": 2})
    assert choice.tier == "A100"
    assert choice.reason == (
        "spec.gpu.tier is A100, but no schedulable node with 2 allocatable A100 GPU(s) is visible; "
        "workers stay Pending until one joins"
    )


def test_tier_none_runs_on_cpu_whatever_the_nodes() -> None:
    choice = tier_of([gpu_node("a100", product("NVIDIA-A100-SXM4-40GB"))], gpu={"tier": "none"})
    assert choice == TierChoice("none", "spec.gpu.tier is none: workers run on CPU")
    assert not choice.on_gpu


def test_custom_label_map_is_used_instead_of_the_defaults() -> None:
    label_map = {"example.com/gpu": {"L4": r"^l4$"}}
    node = gpu_node("custom", {"example.com/gpu": "l4", **product("NVIDIA-A100-SXM4-40GB")})
    choice = choose_tier(spec(), catalog.PLANS["minimum"], [node], label_map)
    assert choice.tier == "L4"


# --- worker count --------------------------------------------------------------------------------


def test_explicit_replicas_win() -> None:
    plan = make_plan(spec(plan="multi-worker", asr={"replicas": 3}), [])
    assert (plan.workers.replicas, plan.workers.reason) == (3, "spec.asr.replicas is 3")
    assert make_plan(spec(asr={"replicas": 0}), []).workers.replicas == 0


def test_throughput_target_divides_by_the_tiers_capacity() -> None:
    plan = make_plan(spec(gpu={"tier": "A10"}, asr={"throughputTarget": 250}), [], capacity=CAPACITY)
    assert plan.workers.replicas == 3
    assert plan.workers.reason == (
        "throughputTarget 250 audio-h/h / 100 audio-h/h per A10 worker = 2.50 -> 3 worker(s)"
    )


@pytest.mark.parametrize(
    ("tier", "target", "workers"),
    [("A10", 200, 2), ("A10", 200.5, 3), ("A10", 1, 1), ("A100", 500, 2), ("T4", 90, 2), ("T4", 91, 3)],
)
def test_throughput_target_rounds_up_except_on_exact_multiples(
    tier: str, target: float, workers: int
) -> None:
    plan = make_plan(spec(gpu={"tier": tier}, asr={"throughputTarget": target}), [], capacity=CAPACITY)
    assert plan.workers.replicas == workers


def test_throughput_target_on_cpu_uses_the_cpu_capacity() -> None:
    workers = make_plan(
        spec(gpu={"tier": "none"}, asr={"throughputTarget": 12}), [], capacity=CAPACITY
    ).workers
    assert workers.replicas == 3
    assert (
        workers.reason == "throughputTarget 12 audio-h/h / 5 audio-h/h per CPU worker = 2.40 -> 3 worker(s)"
    )


def test_default_capacity_is_the_catalogs() -> None:
    per_cpu_worker = catalog.DEFAULT_CAPACITY_AUDIO_HOURS_PER_HOUR["none"]
    workers = make_plan(spec(gpu={"tier": "none"}, asr={"throughputTarget": per_cpu_worker * 3}), []).workers
    assert workers.replicas == 3
    assert f"/ {per_cpu_worker:g} audio-h/h per CPU worker = 3.00 -> 3 worker(s)" in workers.reason


def test_throughput_target_uses_the_capacity_given() -> None:
    capacity = {**catalog.DEFAULT_CAPACITY_AUDIO_HOURS_PER_HOUR, "L4": 30.0}
    plan = make_plan(spec(gpu={"tier": "L4"}, asr={"throughputTarget": 100}), [], capacity=capacity)
    assert plan.workers.replicas == 4


@pytest.mark.parametrize(
    ("plan", "workers"), [("minimum", 1), ("production", 1), ("multi-worker", 2), ("custom", 1)]
)
def test_plan_defaults(plan: str, workers: int) -> None:
    count = make_plan(spec(plan=plan), []).workers
    assert count.replicas == workers
    assert count.reason == f"the {plan} plan runs {workers} worker(s)"


def test_autoscaling_clamps_the_initial_count_up_to_min() -> None:
    count = make_plan(spec(asr={"autoscaling": {"enabled": True, "min": 2, "max": 5}}), []).workers
    assert count.replicas == 2
    assert count.reason == (
        "the minimum plan runs 1 worker(s), clamped to autoscaling [2, 5] = 2; "
        "the autoscaler owns the count from here"
    )


def test_autoscaling_clamps_the_initial_count_down_to_max() -> None:
    fields = {
        "gpu": {"tier": "A10"},
        "asr": {"throughputTarget": 1000, "autoscaling": {"enabled": True, "max": 4}},
    }
    count = make_plan(spec(**fields), [], capacity=CAPACITY).workers
    assert count.replicas == 4
    assert "= 10.00 -> 10 worker(s), clamped to autoscaling [1, 4] = 4;" in count.reason


def test_autoscaling_inside_the_range_keeps_the_count_and_says_who_owns_it() -> None:
    count = make_plan(spec(plan="multi-worker", asr={"autoscaling": {"enabled": True, "min": 1}}), []).workers
    assert count.replicas == 2
    assert "clamped" not in count.reason
    assert count.reason.endswith("; the autoscaler owns the count from here")


def test_count_workers_directly_without_autoscaling_has_no_autoscaler_note() -> None:
    count = count_workers(spec(asr={"replicas": 2}), catalog.PLANS["minimum"], "T4", {"T4": 1.0})
    assert count.reason == "spec.asr.replicas is 2"


# --- resources -----------------------------------------------------------------------------------


def total_requests(plan_name: str, resource: str) -> Decimal:
    plan = make_plan(spec(plan=plan_name, gpu={"tier": "A10"}), [])
    replicas = {"api-server": 1, "asr-worker": plan.workers.replicas, "license-proxy": 1, "redis": 1}
    return sum(
        (qty(plan.resources[name]["requests"][resource]) * count for name, count in replicas.items()),
        Decimal(0),
    )


@pytest.mark.parametrize(
    ("plan", "cpus", "memory_gib"), [("minimum", 6, 16), ("production", 12, 32), ("multi-worker", 24, 64)]
)
def test_each_plans_requests_fit_its_machine(plan: str, cpus: int, memory_gib: int) -> None:
    assert total_requests(plan, "cpu") <= cpus
    assert total_requests(plan, "memory") <= memory_gib * GIB
    # and they use most of it: the worker gets the lion's share, not a token request
    assert total_requests(plan, "cpu") >= cpus * Decimal("0.75")


def test_the_minimum_plans_requests_are_the_briefs_lower_figures() -> None:
    assert total_requests("minimum", "cpu") == Decimal("5.25")
    assert total_requests("minimum", "memory") == Decimal("13.25") * GIB


@pytest.mark.parametrize("plan", ["production", "multi-worker"])
def test_large_plans_are_guaranteed_qos(plan: str) -> None:
    resources = make_plan(spec(plan=plan, gpu={"tier": "A10"}), []).resources
    for component in COMPONENTS:
        requests, limits = resources[component]["requests"], resources[component]["limits"]
        assert set(requests) == set(limits)
        for name in requests:
            assert qty(requests[name]) == qty(limits[name]), (component, name)


@pytest.mark.parametrize("plan", ["minimum", "production", "multi-worker", "custom"])
def test_limits_are_never_below_requests(plan: str) -> None:
    resources = make_plan(spec(plan=plan), []).resources
    assert resource_problems(resources) == []
    for component in COMPONENTS:
        for name, requested in resources[component]["requests"].items():
            assert qty(requested) <= qty(resources[component]["limits"][name])


@pytest.mark.parametrize("tier", ["T4", "L4", "A10", "A100"])
@pytest.mark.parametrize("count", [1, 2, 8])
def test_gpu_resource_is_the_spec_count_on_gpu_tiers(tier: str, count: int) -> None:
    resources = make_plan(spec(gpu={"tier": tier, "count": count}), []).resources
    worker = resources["asr-worker"]
    assert worker["requests"][catalog.GPU_RESOURCE] == str(count)
    assert worker["limits"][catalog.GPU_RESOURCE] == str(count)
    for component in ("api-server", "license-proxy", "redis"):
        assert catalog.GPU_RESOURCE not in resources[component]["requests"]
        assert catalog.GPU_RESOURCE not in resources[component]["limits"]


def test_no_gpu_resource_on_the_cpu_tier() -> None:
    resources = make_plan(spec(gpu={"tier": "none", "count": 4}), []).resources
    for component in COMPONENTS:
        for part in ("requests", "limits"):
            assert catalog.GPU_RESOURCE not in resources[component][part]


def test_spec_overrides_merge_over_the_plans_figures() -> None:
    typed = spec(
        plan="production",
        gpu={"tier": "A10"},
        asr={"resources": {"limits": {"memory": "20Gi"}, "requests": {"cpu": 6}}},
        redis={"resources": {"requests": {"memory": "768Mi"}}},
    )
    resources = make_plan(typed, []).resources
    assert resources["asr-worker"] == {
        "requests": {"cpu": "6", "memory": "16Gi", catalog.GPU_RESOURCE: "1"},
        "limits": {"cpu": "8", "memory": "20Gi", catalog.GPU_RESOURCE: "1"},
    }
    assert resources["redis"] == {
        "requests": {"cpu": "1", "memory": "768Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert resources["api-server"] == catalog.LARGE["api-server"].as_resources()


def test_overrides_do_not_leak_into_the_catalog() -> None:
    before = catalog.SMALL["asr-worker"].as_resources()
    size_components(
        spec(asr={"resources": {"limits": {"memory": "99Gi"}}}),
        catalog.PLANS["minimum"],
        TierChoice("T4", ""),
    )
    assert catalog.SMALL["asr-worker"].as_resources() == before
    assert make_plan(spec(), []).resources["asr-worker"]["limits"]["memory"] == "16Gi"


def test_requests_above_limits_are_named() -> None:
    resources = make_plan(spec(api={"resources": {"requests": {"memory": "3Gi"}}}), []).resources
    assert resource_problems(resources) == [
        "spec.api.resources: requests.memory 3Gi exceeds limits.memory 2Gi (set limits.memory too)"
    ]


# --- scaler --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enabled", "keda", "scaler"),
    [(False, False, "none"), (False, True, "none"), (True, False, "hpa"), (True, True, "keda")],
)
def test_scaler(enabled: bool, keda: bool, scaler: str) -> None:
    typed = spec(asr={"autoscaling": {"enabled": enabled}})
    assert choose_scaler(typed, keda) == scaler
    assert make_plan(typed, [], keda_installed=keda).scaler == scaler


def test_make_plan_puts_the_pieces_together() -> None:
    nodes = [gpu_node("l4", {"cloud.google.com/gke-accelerator": "nvidia-l4"})]
    plan = make_plan(spec(plan="production"), nodes)
    assert plan.preset is catalog.PLANS["production"]
    assert plan.tier.tier == "L4"  # auto: what the cluster has, not the plan's A10
    assert plan.workers.replicas == 1
    assert plan.scaler == "none"
    assert set(plan.resources) == set(COMPONENTS)
