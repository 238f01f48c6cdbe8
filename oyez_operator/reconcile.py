"""One reconcile round for one SpeechDeployment: validate -> observe -> plan -> render -> apply ->
prune -> status. Called by every handler (create, update, resume, the periodic timer); idempotent.

It never raises for a bad spec or a missing Secret: those become a ``Failed`` phase, a condition
and one Warning event (repeated only when the message changes), and the timer looks again later.
Transient API errors propagate, so kopf retries with back-off.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from . import catalog
from .apply import apply_all, prune
from .crd_model import MAX_NAME_LENGTH, SpeechDeploymentSpec, describe_errors, parse_spec
from .kube import KubeClient, KubeError
from .planning import NodeFacts, Plan, make_plan, node_tier, resource_problems
from .render import render_all
from .render_common import RenderContext, default_images, service_url
from .render_storage import prefetch_job_name
from .settings import OperatorSettings
from .status_model import (
    JobState,
    Observed,
    Rollout,
    derive_conditions,
    derive_phase,
    invalid_spec_status,
    merge_conditions,
)

_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
KEDA_CRD = "scaledobjects.keda.sh"
SERVICE_MONITOR_CRD = "servicemonitors.monitoring.coreos.com"


@dataclass
class Outcome:
    """What happened, for events and logs."""

    phase: str
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    status: dict[str, Any] = field(default_factory=dict)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def validate(name: str, spec: Any) -> tuple[SpeechDeploymentSpec | None, str | None]:
    """The typed spec, or None and a message naming every bad field."""
    problems = []
    if len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        problems.append(
            f"metadata.name: {name!r} must be a DNS label of at most {MAX_NAME_LENGTH} characters "
            "starting with a letter (child names append up to 23)"
        )
    typed = None
    if not isinstance(spec, Mapping):
        problems.append(f"spec: must be an object of fields, got {type(spec).__name__}")
    else:
        try:
            typed = parse_spec(dict(spec))
        except ValidationError as error:
            problems.append(describe_errors(error))
    if problems:
        return None, "; ".join(problems)
    return typed, None


def node_facts(node: Mapping[str, Any]) -> NodeFacts:
    meta, spec, status = node.get("metadata", {}), node.get("spec") or {}, node.get("status") or {}
    raw = (status.get("allocatable") or {}).get(catalog.GPU_RESOURCE, "0")
    try:
        gpus = int(str(raw))
    except ValueError:
        gpus = 0
    return NodeFacts(
        name=meta.get("name", "?"),
        labels=meta.get("labels") or {},
        allocatable_gpus=gpus,
        schedulable=not spec.get("unschedulable", False),
    )


def gpu_node_terms(
    nodes: list[NodeFacts], tier: str, label_map: Mapping[str, Mapping[str, str]]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(label key, exact values) that identify nodes of the chosen tier, for node affinity."""
    seen: dict[str, set[str]] = {}
    for node in nodes:
        if node_tier(node.labels, label_map) != tier:
            continue
        for key in label_map:
            if key in node.labels and node_tier({key: node.labels[key]}, {key: label_map[key]}) == tier:
                seen.setdefault(key, set()).add(node.labels[key])
                break
    return tuple((key, tuple(sorted(values))) for key, values in sorted(seen.items()))


async def license_problem(client: KubeClient, namespace: str, spec: SpeechDeploymentSpec) -> str | None:
    ref = spec.license.secret_ref
    secret = await client.get("v1", "Secret", namespace, ref.name)
    if secret is None:
        return (
            f"license Secret {ref.name!r} not found in namespace {namespace!r} (spec.license.secretRef.name)"
        )
    data = {**(secret.get("data") or {}), **(secret.get("stringData") or {})}
    if not data.get(ref.key):
        return f"license Secret {ref.name!r} has no non-empty key {ref.key!r} (spec.license.secretRef.key)"
    return None


def _resolved(plan: Plan, spec: SpeechDeploymentSpec) -> dict[str, Any]:
    return {
        "plan": spec.plan,
        "tier": plan.tier.tier,
        "tierReason": plan.tier.reason,
        "workers": plan.workers.replicas,
        "workersReason": plan.workers.reason,
        "scaler": plan.scaler,
    }


def _decision_events(previous: Mapping[str, Any], resolved: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    events = []
    if previous.get("tier") != resolved["tier"] or previous.get("tierReason") != resolved["tierReason"]:
        events.append(("Normal", "TierChosen", f"GPU tier {resolved['tier']}: {resolved['tierReason']}"))
    if (
        previous.get("workers") != resolved["workers"]
        or previous.get("workersReason") != resolved["workersReason"]
    ):
        events.append(
            ("Normal", "WorkersPlanned", f"{resolved['workers']} worker(s): {resolved['workersReason']}")
        )
    return events


class Reconciler:
    def __init__(self, client: KubeClient, settings: OperatorSettings) -> None:
        self.client = client
        self.settings = settings
        self.images = default_images(settings.image_registry, settings.image_tag)

    async def _crd_exists(self, name: str) -> bool:
        crd = await self.client.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, name)
        return crd is not None

    async def reconcile(self, event_body: Mapping[str, Any]) -> Outcome:
        """Reconcile the CR as it is now (re-read: the handler's copy may predate our last status)."""
        event_meta = event_body.get("metadata", {})
        fresh = await self.client.get(
            "oyez.dev/v1alpha1", "SpeechDeployment", event_meta["namespace"], event_meta["name"]
        )
        if fresh is None or fresh.get("metadata", {}).get("deletionTimestamp"):
            return Outcome("Deleting")
        body: Mapping[str, Any] = fresh
        meta = body.get("metadata", {})
        name, namespace, uid = meta["name"], meta["namespace"], meta.get("uid", "")
        generation = int(meta.get("generation") or 0)
        previous_status = body.get("status") or {}
        previous_conditions = previous_status.get("conditions") or []
        now = now_iso()

        spec, problem = validate(name, body.get("spec") or {})
        if spec is None:
            assert problem is not None
            status = invalid_spec_status(problem, previous_conditions, now, generation)
            return await self._finish(
                name, namespace, previous_status, status, [("Warning", "InvalidSpec", problem)]
            )

        nodes = [node_facts(node) for node in await self.client.list("v1", "Node", None)]
        keda = await self._crd_exists(KEDA_CRD)
        monitors = await self._crd_exists(SERVICE_MONITOR_CRD)
        plan = make_plan(
            spec,
            nodes,
            keda_installed=keda,
            label_map=self.settings.gpu_labels,
            capacity=self.settings.capacity,
        )
        sizing = resource_problems(plan.resources)
        if sizing:
            message = "; ".join(sizing)
            status = invalid_spec_status(message, previous_conditions, now, generation)
            return await self._finish(
                name, namespace, previous_status, status, [("Warning", "InvalidSpec", message)]
            )
        ctx = RenderContext(
            name=name,
            namespace=namespace,
            uid=uid,
            spec=spec,
            plan=plan,
            images=self.images,
            gpu_node_terms=gpu_node_terms(nodes, plan.tier.tier, self.settings.gpu_labels),
            service_monitor_installed=monitors,
        )
        resolved = _resolved(plan, spec)
        events = _decision_events(previous_status.get("resolved") or {}, resolved)

        lic_problem = await license_problem(self.client, namespace, spec)
        if lic_problem is not None:
            observed = Observed(lic_problem, None, None, spec.redis.mode == "external", None, None, None)
            status = self._status(observed, previous_status, resolved, ctx, now, generation)
            events.append(("Warning", "LicenseSecretMissing", lic_problem))
            return await self._finish(name, namespace, previous_status, status, events)

        job_key = ("batch/v1", "Job", prefetch_job_name(ctx))
        job = await self.client.get(*job_key[:2], namespace, job_key[2])
        job_state = JobState.of(job)
        model_ready = job_state is not None and job_state.succeeded
        desired = render_all(ctx, include_workers=model_ready)
        result = await apply_all(self.client, namespace, desired)
        keep = {item.key for item in desired}
        workers_key = ("apps/v1", "Deployment", ctx.object_name("asr-worker"))
        if not model_ready:
            keep.add(workers_key)  # a new model is downloading: the running workers stay as they are
        served = {("keda.sh/v1alpha1", "ScaledObject")} if keda else set()
        if monitors:
            served.add(("monitoring.coreos.com/v1", "ServiceMonitor"))
        deleted = await prune(self.client, namespace, name, uid, keep, optional_kinds_served=served)
        for verb, names in (("Created", result.created), ("Updated", result.patched), ("Deleted", deleted)):
            if names:
                events.append(("Normal", verb, f"{verb.lower()} {', '.join(names)}"))

        live = result.live
        workers = (
            live.get(workers_key)
            if model_ready
            else await self.client.get(*workers_key[:2], namespace, workers_key[2])
        )
        observed = Observed(
            license_problem=None,
            model_job=JobState.of(live.get(job_key)),
            redis=Rollout.of(live.get(("apps/v1", "StatefulSet", ctx.object_name("redis")))),
            redis_external=spec.redis.mode == "external",
            workers=Rollout.of(workers),
            api=Rollout.of(live.get(("apps/v1", "Deployment", ctx.object_name("api-server")))),
            license_proxy=Rollout.of(live.get(("apps/v1", "Deployment", ctx.object_name("license-proxy")))),
        )
        status = self._status(observed, previous_status, resolved, ctx, now, generation)
        if observed.model_job and observed.model_job.failed:
            events.append(("Warning", "ModelPrefetchFailed", observed.model_job.message))
        return await self._finish(name, namespace, previous_status, status, events)

    def _status(
        self,
        observed: Observed,
        previous: Mapping[str, Any],
        resolved: dict[str, Any],
        ctx: RenderContext,
        now: str,
        generation: int,
    ) -> dict[str, Any]:
        conditions = derive_conditions(observed)
        phase = derive_phase(conditions, previous.get("phase"))
        ready = next(cond for cond in conditions if cond.type == "Ready")
        components = {
            "apiServer": observed.api,
            "asrWorker": observed.workers,
            "licenseProxy": observed.license_proxy,
            "redis": observed.redis,
        }
        return {
            "phase": phase,
            "observedGeneration": generation,
            "message": ready.message,
            "ready": observed.workers.text() if observed.workers else f"0/{resolved['workers']}",
            "endpoint": service_url(ctx, "api-server", ctx.spec.api.service.port),
            "resolved": resolved,
            "components": {
                key: {"ready": value.ready, "desired": value.desired}
                for key, value in components.items()
                if value
            },
            "conditions": merge_conditions(conditions, previous.get("conditions") or [], now, generation),
        }

    async def _finish(
        self,
        name: str,
        namespace: str,
        previous: Mapping[str, Any],
        status: dict[str, Any],
        events: list[tuple[str, str, str]],
    ) -> Outcome:
        if _comparable(previous) != _comparable(status):
            try:
                await self.client.merge_patch(
                    "oyez.dev/v1alpha1", "SpeechDeployment", namespace, name, {"status": status}, status=True
                )
            except KubeError as error:
                if error.status != 404:
                    raise
                return Outcome("Deleted")  # deleted while we reconciled: nothing to report
        # A Warning repeats only when its message changed, so a broken spec is no event storm.
        fresh = [
            event
            for event in events
            if event[0] != "Warning" or event[2] not in (previous.get("message") or "") + _messages(previous)
        ]
        return Outcome(status["phase"], fresh, status)


def _messages(status: Mapping[str, Any]) -> str:
    return "\n".join(str(cond.get("message", "")) for cond in status.get("conditions") or [])


def _comparable(status: Mapping[str, Any]) -> Any:
    """A status without timestamps: unchanged status -> no PATCH."""
    copy = dict(status)
    copy["conditions"] = [
        {key: value for key, value in cond.items() if key != "lastTransitionTime"}
        for cond in status.get("conditions") or []
    ]
    return copy
