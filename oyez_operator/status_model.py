"""Pure status: what was observed -> phase, conditions (with reasons), ready counts.

Conditions mirror the API's ``/health?detailed=true`` components, plus the model and an overall
``Ready``. ``lastTransitionTime`` changes only when a condition's status changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PHASES = ("Pending", "Progressing", "Ready", "Degraded", "Failed")
CONDITION_TYPES = ("LicenseValid", "ModelReady", "RedisReady", "WorkersReady", "ApiReady", "Ready")


@dataclass(frozen=True)
class Rollout:
    """Ready vs desired pods of one workload (None: the workload does not exist yet)."""

    ready: int
    desired: int

    @classmethod
    def of(cls, obj: Mapping[str, Any] | None) -> Rollout | None:
        if obj is None:
            return None
        desired = obj.get("spec", {}).get("replicas")
        status = obj.get("status") or {}
        return cls(int(status.get("readyReplicas") or 0), int(desired if desired is not None else 1))

    @property
    def complete(self) -> bool:
        return self.ready >= self.desired

    def text(self) -> str:
        return f"{self.ready}/{self.desired}"


@dataclass(frozen=True)
class JobState:
    succeeded: bool
    failed: bool
    message: str = ""

    @classmethod
    def of(cls, job: Mapping[str, Any] | None) -> JobState | None:
        if job is None:
            return None
        status = job.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("status") != "True":
                continue
            if condition.get("type") == "Complete":
                return cls(True, False)
            if condition.get("type") == "Failed":
                return cls(False, True, condition.get("message") or condition.get("reason") or "failed")
        return cls(bool(status.get("succeeded")), False)


@dataclass(frozen=True)
class Observed:
    """What the reconciler saw in the cluster this round."""

    license_problem: str | None  # None: the Secret and key exist
    model_job: JobState | None
    redis: Rollout | None  # None with external Redis or not created yet
    redis_external: bool
    workers: Rollout | None
    api: Rollout | None
    license_proxy: Rollout | None
    warnings: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def _rollout_condition(kind: str, rollout: Rollout | None, what: str) -> Condition:
    if rollout is None:
        return Condition(kind, "False", "NotCreated", f"the {what} is not created yet")
    if rollout.desired == 0:
        return Condition(kind, "True", "ScaledToZero", f"the {what} is scaled to zero")
    if rollout.complete:
        return Condition(kind, "True", "AllReady", f"{rollout.text()} {what} pods ready")
    if rollout.ready > 0:
        return Condition(kind, "False", "PartiallyReady", f"{rollout.text()} {what} pods ready")
    return Condition(kind, "False", "NoneReady", f"0/{rollout.desired} {what} pods ready")


def derive_conditions(observed: Observed) -> list[Condition]:
    conditions: list[Condition] = []
    if observed.license_problem is not None:
        conditions.append(Condition("LicenseValid", "False", "SecretNotUsable", observed.license_problem))
    elif observed.license_proxy is not None and observed.license_proxy.ready > 0:
        conditions.append(
            Condition("LicenseValid", "True", "ProxyValidated", "the license proxy accepted the key")
        )
    else:
        conditions.append(
            Condition(
                "LicenseValid",
                "Unknown",
                "ProxyNotReady",
                "the license proxy is not ready yet "
                "(it stays unready while the key is invalid or expired; see its logs)",
            )
        )
    job = observed.model_job
    if job is None:
        conditions.append(
            Condition("ModelReady", "False", "NotStarted", "the model prefetch Job is not created yet")
        )
    elif job.succeeded:
        conditions.append(Condition("ModelReady", "True", "Prefetched", "the model is on the cache volume"))
    elif job.failed:
        conditions.append(
            Condition("ModelReady", "False", "PrefetchFailed", f"the model prefetch failed: {job.message}")
        )
    else:
        conditions.append(
            Condition("ModelReady", "False", "Downloading", "the model prefetch Job is running")
        )
    if observed.redis_external:
        conditions.append(
            Condition(
                "RedisReady",
                "True",
                "External",
                "external Redis; the API's /health/redis reports reachability",
            )
        )
    else:
        conditions.append(_rollout_condition("RedisReady", observed.redis, "Redis"))
    conditions.append(_rollout_condition("WorkersReady", observed.workers, "ASR worker"))
    conditions.append(_rollout_condition("ApiReady", observed.api, "API server"))
    blocking = [cond for cond in conditions if cond.status != "True"]
    if blocking:
        first = blocking[0]
        conditions.append(Condition("Ready", "False", first.type + first.reason, first.message))
    else:
        conditions.append(Condition("Ready", "True", "AllComponentsReady", "every component is ready"))
    return conditions


def derive_phase(conditions: Sequence[Condition], previous_phase: str | None) -> str:
    by_type = {cond.type: cond for cond in conditions}
    if (
        by_type["LicenseValid"].reason == "SecretNotUsable"
        or by_type["ModelReady"].reason == "PrefetchFailed"
    ):
        return "Failed"
    if by_type["Ready"].status == "True":
        return "Ready"
    if previous_phase in ("Ready", "Degraded"):
        return "Degraded"
    created = any(
        cond.reason != "NotCreated" for cond in conditions if cond.type in ("WorkersReady", "ApiReady")
    )
    return "Progressing" if created else "Pending"


def merge_conditions(
    new: Sequence[Condition], previous: Sequence[Mapping[str, Any]], now: str, generation: int
) -> list[dict[str, Any]]:
    """Condition dicts for status, keeping lastTransitionTime where the status did not change."""
    before = {item.get("type"): item for item in previous}
    merged = []
    for cond in new:
        old = before.get(cond.type) or {}
        kept = old.get("lastTransitionTime") if old.get("status") == cond.status else None
        merged.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": kept or now,
                "observedGeneration": generation,
            }
        )
    return merged


def invalid_spec_status(
    message: str, previous: Sequence[Mapping[str, Any]], now: str, generation: int
) -> dict[str, Any]:
    """Status for a spec that cannot be planned: Failed, Ready=False/InvalidSpec, the fields named."""
    condition = Condition("Ready", "False", "InvalidSpec", message)
    kept = [item for item in previous if item.get("type") != "Ready"]
    return {
        "phase": "Failed",
        "observedGeneration": generation,
        "message": message,
        "conditions": kept + merge_conditions([condition], previous, now, generation),
    }
