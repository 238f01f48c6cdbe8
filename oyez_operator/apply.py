"""Make the cluster match the desired objects: create what is missing, merge-patch what drifted,
delete owned objects no longer desired. The comparison is pure and unit-tested.

A desired field is compared against the live object only where the desired object says
something: fields the API server defaults (``imagePullPolicy``, ``clusterIP`` ...) never count as
drift. A ``None`` in the desired object means "absent" and is sent as ``null`` to remove it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .kube import KubeClient
from .quantity import quantity_value
from .render import Desired


def strip_nones(value: Any) -> Any:
    """The object to create: keys whose value is None dropped, recursively."""
    if isinstance(value, dict):
        return {key: strip_nones(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [strip_nones(item) for item in value]
    return value


def _same_quantity(desired: Any, actual: Any) -> bool:
    if not (isinstance(desired, (int, str)) and isinstance(actual, (int, str))):
        return False
    if str(desired) == str(actual):
        return True
    left, right = quantity_value(desired), quantity_value(actual)
    return left is not None and left == right


def matches(desired: Any, actual: Any) -> bool:
    """Whether ``actual`` already has everything ``desired`` says (None: must be absent)."""
    if desired is None:
        return actual is None or actual == {} or actual == []
    if actual is None and (desired == {} or desired == []):
        return True  # the API server omits empty lists and maps (a NetworkPolicy's `ingress: []`)
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return False
        return all(matches(value, actual.get(key)) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(desired) != len(actual):
            return False
        return all(matches(d, a) for d, a in zip(desired, actual, strict=True))
    return bool(desired == actual or _same_quantity(desired, actual))


def without_paths(body: dict[str, Any], paths: Iterable[Sequence[str]]) -> dict[str, Any]:
    trimmed = copy.deepcopy(body)
    for path in paths:
        node = trimmed
        for part in path[:-1]:
            node = node.get(part, {})
        node.pop(path[-1], None)
    return trimmed


def patch_for(desired: Desired) -> dict[str, Any]:
    """The merge patch that makes a live object match: the desired body minus create-only paths;
    metadata limited to labels, annotations and ownerReferences."""
    body = without_paths(desired.body, desired.create_only)
    meta = body["metadata"]
    body["metadata"] = {key: meta[key] for key in ("labels", "annotations", "ownerReferences") if key in meta}
    body.pop("apiVersion", None)
    body.pop("kind", None)
    return body


@dataclass(frozen=True)
class ApplyResult:
    created: list[str]
    patched: list[str]
    deleted: list[str]
    live: dict[tuple[str, str, str], dict[str, Any]]


def _label(key: tuple[str, str, str]) -> str:
    return f"{key[1]}/{key[2]}"


async def apply_all(client: KubeClient, namespace: str, desired: Sequence[Desired]) -> ApplyResult:
    created: list[str] = []
    patched: list[str] = []
    live: dict[tuple[str, str, str], dict[str, Any]] = {}
    for item in desired:
        api_version, kind, name = item.key
        current = await client.get(api_version, kind, namespace, name)
        if current is None:
            live[item.key] = await client.create(strip_nones(item.body))
            created.append(_label(item.key))
            continue
        patch = patch_for(item)
        if matches(patch, current):
            live[item.key] = current
            continue
        live[item.key] = await client.merge_patch(api_version, kind, namespace, name, patch)
        patched.append(_label(item.key))
    return ApplyResult(created, patched, [], live)


# Kinds the operator may have created earlier and must remove when the spec stops wanting them.
PRUNABLE_KINDS = (
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("batch/v1", "Job"),
    ("v1", "Service"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
)


def owned_by(obj: dict[str, Any], owner_uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid and ref.get("controller") for ref in refs)


async def prune(
    client: KubeClient,
    namespace: str,
    instance: str,
    owner_uid: str,
    keep: set[tuple[str, str, str]],
    *,
    optional_kinds_served: set[tuple[str, str]],
) -> list[str]:
    """Delete objects this CR owns (controller ownerReference) that are no longer desired.

    Listing filters by label on the server; the owner uid is checked here as well, so nothing the
    operator did not create is ever touched. PVCs are never pruned (they hold data).
    """
    selector = f"app.kubernetes.io/instance={instance},app.kubernetes.io/managed-by=oyez-operator"
    deleted = []
    for api_version, kind in PRUNABLE_KINDS:
        if api_version in ("keda.sh/v1alpha1", "monitoring.coreos.com/v1") and (
            (api_version, kind) not in optional_kinds_served
        ):
            continue
        for obj in await client.list(api_version, kind, namespace, label_selector=selector):
            meta = obj.get("metadata", {})
            key = (api_version, kind, meta.get("name", ""))
            if key in keep or not owned_by(obj, owner_uid) or meta.get("deletionTimestamp"):
                continue
            await client.delete(api_version, kind, namespace, key[2])
            deleted.append(_label(key))
    return deleted
