"""Static facts the planner uses: plans, GPU tiers, how nodes advertise them, worker capacity.

Everything here is data, so it can be documented and overridden (operator settings) without
touching the planning logic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

# Best first: ``auto`` picks the first tier with allocatable GPUs.
TIER_ORDER = ("A100", "A10", "L4", "T4")
CPU_TIER = "none"

GPU_RESOURCE = "nvidia.com/gpu"
# Inference lanes of a GPU worker: on one H200, 4 lanes gave 2.1x (base) / 1.5x (tiny.en) the
# audio throughput of 1 lane at 16 concurrent requests, 8 lanes nothing more (bench/RESULTS.md, GPU).
GPU_INFERENCE_LANES = 4
GPU_TAINT_KEY = "nvidia.com/gpu"

# VRAM per tier (GiB): what a worker pod on that tier can count on.
TIER_VRAM_GIB = {"T4": 16, "L4": 24, "A10": 24, "A100": 40}

# Audio hours per wall-clock hour one worker sustains, per tier (whisper-base, greedy), with where
# each figure comes from: ``capacity.json`` in this package, which ``python -m bench.capacity
# --write`` updates for the tier it ran on (the CPU tier here; a GPU tier on a GPU machine).
# Tiers not measured yet carry seed figures, marked as such. The README's table is checked
# against this file.
CAPACITY_TABLE: dict[str, Any] = json.loads(
    resources.files("oyez_operator").joinpath("capacity.json").read_text(encoding="utf-8")
)
DEFAULT_CAPACITY_AUDIO_HOURS_PER_HOUR: dict[str, float] = {
    tier: float(entry["audio_hours_per_hour"]) for tier, entry in CAPACITY_TABLE["tiers"].items()
}

# Node labels that name the GPU model: per label key, a regular expression per tier (searched,
# case-insensitive). GPU Feature Discovery (nvidia.com/gpu.product), GKE
# (cloud.google.com/gke-accelerator), Karpenter on AWS (karpenter.k8s.aws/instance-gpu-name) and
# cloud instance types. Tiers are tried best first, so "A100" is never taken for an "A10".
DEFAULT_GPU_LABELS: dict[str, dict[str, str]] = {
    "nvidia.com/gpu.product": {
        "A100": r"A100",
        "A10": r"A10G|A10($|-)",
        "L4": r"(^|-)L4($|-)",
        "T4": r"(^|-)T4($|-)",
    },
    "cloud.google.com/gke-accelerator": {
        "A100": r"^nvidia-(tesla-)?a100",
        "A10": r"^nvidia-a10$",
        "L4": r"^nvidia-l4$",
        "T4": r"^nvidia-tesla-t4$",
    },
    "karpenter.k8s.aws/instance-gpu-name": {
        "A100": r"^a100$",
        "A10": r"^a10g$",
        "L4": r"^l4$",
        "T4": r"^t4$",
    },
    "node.kubernetes.io/instance-type": {
        "A100": r"^(p4d|p4de)\.|^a2-(highgpu|ultragpu)|_A100_",
        "A10": r"^g5\.|_A10_",
        "L4": r"^g6\.|^g2-standard",
        "T4": r"^g4dn\.|_T4_",
    },
}


@dataclass(frozen=True)
class ComponentSize:
    """Requests and limits of one container, as Kubernetes quantities."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str

    def as_resources(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


# Per-service figures from the brief: API 0.5-2 CPU / 512 MB-2 GB, worker 4-8 CPU / 12-16 GB,
# proxy 0.25-1 CPU / 256-512 MB, Redis 0.5-1 CPU / 512 MB-1 GB.
SMALL = {
    "api-server": ComponentSize("500m", "2", "512Mi", "2Gi"),
    "asr-worker": ComponentSize("4", "8", "12Gi", "16Gi"),
    "license-proxy": ComponentSize("250m", "1", "256Mi", "512Mi"),
    "redis": ComponentSize("500m", "1", "512Mi", "1Gi"),
}
LARGE = {
    "api-server": ComponentSize("2", "2", "2Gi", "2Gi"),
    "asr-worker": ComponentSize("8", "8", "16Gi", "16Gi"),
    "license-proxy": ComponentSize("1", "1", "512Mi", "512Mi"),
    "redis": ComponentSize("1", "1", "1Gi", "1Gi"),
}


@dataclass(frozen=True)
class PlanPreset:
    """A sizing preset from the brief: total machine, worker count, default GPU tier, container sizes."""

    name: str
    workers: int
    tier: str
    sizes: dict[str, ComponentSize] = field(hash=False)
    machine: str


PLANS = {
    # minimum = 1 worker on a T4 (6 CPU, 16 GB in total): requests fit, limits allow bursts.
    "minimum": PlanPreset("minimum", 1, "T4", SMALL, "6 CPU, 16 GB, 1x T4"),
    # production = 1 worker on an A10 (12 CPU, 32 GB): guaranteed QoS at the upper figures.
    "production": PlanPreset("production", 1, "A10", LARGE, "12 CPU, 32 GB, 1x A10"),
    # multi-worker = 2 workers on A10s (24 CPU, 64 GB).
    "multi-worker": PlanPreset("multi-worker", 2, "A10", LARGE, "24 CPU, 64 GB, 2x A10"),
    # custom = the minimum's figures; every override in the spec applies on top.
    "custom": PlanPreset("custom", 1, "T4", SMALL, "as the spec says"),
}
