"""The real operator (kopf CLI, our handlers) end to end against kmock's Kubernetes emulator.

kmock is an emulator, not an API server (see ../shared/spec/k8s-testing.md): no schema
validation, no garbage collection, no controllers. So Deployments never become ready here and
Jobs finish only when a test says so; what these tests pin is the conversation between the
operator and the API: which objects it creates, patches, restores and deletes, and the status
and events it writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kmock
import pytest

from .kmock_support import (
    CR_RESOURCE,
    NAMESPACE,
    declare_resources,
    eventually,
    license_secret,
    running_operator,
    speech_deployment,
)

pytestmark = pytest.mark.asyncio

DEPLOYMENTS = "apps/v1/deployments"


def _get(
    emulator: kmock.KubernetesEmulator, resource: str, name: str, namespace: str | None = NAMESPACE
) -> Any:
    try:
        obj = emulator.objects[resource, namespace, name]
    except KeyError:
        return None
    return None if obj.deleted else obj


def _status(emulator: kmock.KubernetesEmulator, name: str = "demo") -> dict[str, Any]:
    return dict((_get(emulator, CR_RESOURCE, name) or {}).get("status") or {})


def _condition(emulator: kmock.KubernetesEmulator, kind: str, name: str = "demo") -> dict[str, Any]:
    return next((dict(c) for c in _status(emulator, name).get("conditions", []) if c["type"] == kind), {})


def _requests(emulator: kmock.KubernetesEmulator, method: str, path_part: str) -> list[Any]:
    return [r for r in list(emulator) if r.method.value.upper() == method and path_part in str(r.url.path)]


def _events(emulator: kmock.KubernetesEmulator, reason: str) -> list[Any]:
    return [r for r in _requests(emulator, "POST", "/events") if (r.data or {}).get("reason") == reason]


def _prefetch_job_name(emulator: kmock.KubernetesEmulator) -> str:
    posts = [r for r in _requests(emulator, "POST", "/jobs")]
    assert posts, "no Job was created"
    return str(posts[-1].data["metadata"]["name"])


def plain(value: Any) -> Any:
    """kmock hands out its own mapping types; tests write back plain JSON-able dicts."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def _complete_job(emulator: kmock.KubernetesEmulator, name: str) -> None:
    job = plain(emulator.objects["batch/v1/jobs", NAMESPACE, name])
    job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    emulator.objects["batch/v1/jobs", NAMESPACE, name] = job


def _env(deployment: Any) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


async def _start(emulator: kmock.KubernetesEmulator, **spec: Any) -> None:
    declare_resources(emulator)
    emulator.objects["v1/secrets", NAMESPACE, "oyez-license"] = license_secret()
    emulator.objects[CR_RESOURCE, NAMESPACE, "demo"] = speech_deployment(**spec)


async def test_create_builds_children_then_workers_once_the_model_is_fetched(
    kmock: kmock.KubernetesEmulator,
) -> None:
    declare_resources(kmock)
    kmock.objects["v1/secrets", NAMESPACE, "oyez-license"] = license_secret()
    kmock.objects["v1/nodes", None, "gpu-1"] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "gpu-1", "labels": {"nvidia.com/gpu.product": "NVIDIA-A10G"}},
        "status": {"allocatable": {"nvidia.com/gpu": "1"}},
    }
    kmock.objects[CR_RESOURCE, NAMESPACE, "demo"] = speech_deployment(gpu={"tier": "auto"}, plan="production")
    async with running_operator(kmock) as runner:
        api = await eventually(lambda: _get(kmock, DEPLOYMENTS, "demo-api-server"), what="API Deployment")
        await eventually(lambda: _status(kmock).get("phase") == "Progressing", what="phase Progressing")
        job = _prefetch_job_name(kmock)
        await asyncio.sleep(1.5)  # a few timer rounds: the model is not there yet, so no workers
        assert _get(kmock, DEPLOYMENTS, "demo-asr-worker") is None
        assert _condition(kmock, "ModelReady")["reason"] == "Downloading"
        _complete_job(kmock, job)
        worker = await eventually(
            lambda: _get(kmock, DEPLOYMENTS, "demo-asr-worker"), what="worker Deployment"
        )
        await eventually(lambda: _condition(kmock, "ModelReady").get("status") == "True", what="ModelReady")
        await eventually(lambda: _events(kmock, "TierChosen") and _events(kmock, "Created"), what="events")
    assert runner.exception is None, runner.output

    owner = api["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "SpeechDeployment",
        "demo",
        "uid-demo",
        True,
    )
    for name in ("demo-api-server", "demo-asr-worker", "demo-license-proxy", "demo-redis"):
        service = _get(kmock, "v1/services", name)
        assert service is not None and service["metadata"]["ownerReferences"][0]["uid"] == "uid-demo"
    api_env = _env(api)
    assert api_env["LICENSE_KEY"] == {"secretKeyRef": {"name": "oyez-license", "key": "license-key"}}
    assert api_env["API_BASE_URL"] == "http://demo-license-proxy.speech.svc:6699"
    assert api_env["LIGHTNING_ASR_BASE_URL"] == "http://demo-asr-worker.speech.svc:2233"
    assert api_env["REDIS_URL"] == "redis://demo-redis.speech.svc:6379/0"

    pod = worker["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-A10G"]}]}
    ]
    worker_env = _env(worker)
    assert worker_env["OYEZ_REQUIRE_GPU"] == "true" and worker_env["MODEL_URL"] == "whisper-base"

    status = _status(kmock)
    assert status["observedGeneration"] == 1
    assert status["resolved"]["tier"] == "A10" and "NVIDIA-A10G" not in status["resolved"]["tierReason"]
    assert "gpu-1" in status["resolved"]["tierReason"]
    assert status["endpoint"] == "http://demo-api-server.speech.svc:7100"


async def test_spec_update_patches_only_what_changed(kmock: kmock.KubernetesEmulator) -> None:
    await _start(kmock)
    async with running_operator(kmock) as runner:
        await eventually(lambda: _get(kmock, DEPLOYMENTS, "demo-api-server"), what="API Deployment")
        await eventually(lambda: _status(kmock).get("phase"), what="status")
        patches_before = len(_requests(kmock, "PATCH", "/deployments/"))
        await asyncio.sleep(1.5)  # timer rounds with nothing changed: no PATCH of any child
        assert len(_requests(kmock, "PATCH", "/deployments/")) == patches_before
        body = plain(kmock.objects[CR_RESOURCE, NAMESPACE, "demo"])
        body["spec"] = {**body["spec"], "api": {"replicas": 3}}
        body["metadata"] = {**body["metadata"], "generation": 2, "resourceVersion": "2"}
        kmock.objects[CR_RESOURCE, NAMESPACE, "demo"] = body
        await eventually(
            lambda: _get(kmock, DEPLOYMENTS, "demo-api-server")["spec"]["replicas"] == 3, what="replicas 3"
        )
        await eventually(lambda: _status(kmock).get("observedGeneration") == 2, what="observedGeneration 2")
    assert runner.exception is None, runner.output
    patched = {str(r.url.path).rsplit("/", 1)[-1] for r in _requests(kmock, "PATCH", "/deployments/")}
    assert patched == {"demo-api-server"}


async def test_children_deleted_or_edited_by_hand_are_restored(kmock: kmock.KubernetesEmulator) -> None:
    await _start(kmock)
    async with running_operator(kmock) as runner:
        await eventually(lambda: _get(kmock, DEPLOYMENTS, "demo-license-proxy"), what="proxy Deployment")
        await eventually(lambda: _get(kmock, "v1/services", "demo-api-server"), what="API Service")
        del kmock.objects["v1/services", NAMESPACE, "demo-api-server"]
        edited = plain(kmock.objects[DEPLOYMENTS, NAMESPACE, "demo-license-proxy"])
        edited["spec"] = {**edited["spec"], "replicas": 0}
        kmock.objects[DEPLOYMENTS, NAMESPACE, "demo-license-proxy"] = edited
        await eventually(lambda: _get(kmock, "v1/services", "demo-api-server"), what="Service recreated")
        await eventually(
            lambda: _get(kmock, DEPLOYMENTS, "demo-license-proxy")["spec"]["replicas"] == 1,
            what="replicas restored",
        )
    assert runner.exception is None, runner.output


async def test_invalid_spec_is_a_condition_and_one_event_not_a_retry_storm(
    kmock: kmock.KubernetesEmulator,
) -> None:
    await _start(kmock, asr={"replicas": 2, "throughputTarget": 50}, redis={"mode": "external"})
    async with running_operator(kmock) as runner:
        await eventually(lambda: _status(kmock).get("phase") == "Failed", what="phase Failed")
        await asyncio.sleep(2)  # four more timer rounds
    assert runner.exception is None, runner.output
    ready = _condition(kmock, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert "spec.asr: set asr.replicas or asr.throughputTarget, not both" in ready["message"]
    assert "spec.redis: redis.mode external needs redis.url or redis.urlSecretRef" in ready["message"]
    assert len(_events(kmock, "InvalidSpec")) == 1
    assert len(_requests(kmock, "PATCH", "/speechdeployments/demo/status")) == 1
    assert not _requests(kmock, "POST", "/deployments")


async def test_missing_license_secret_fails_until_it_appears(kmock: kmock.KubernetesEmulator) -> None:
    declare_resources(kmock)
    kmock.objects[CR_RESOURCE, NAMESPACE, "demo"] = speech_deployment()
    async with running_operator(kmock) as runner:
        await eventually(lambda: _status(kmock).get("phase") == "Failed", what="phase Failed")
        license_valid = _condition(kmock, "LicenseValid")
        assert license_valid["status"] == "False"
        assert "license Secret 'oyez-license' not found in namespace 'speech'" in license_valid["message"]
        assert not _requests(kmock, "POST", "/deployments")
        kmock.objects["v1/secrets", NAMESPACE, "oyez-license"] = license_secret()
        await eventually(lambda: _get(kmock, DEPLOYMENTS, "demo-api-server"), what="API Deployment")
        await eventually(lambda: _status(kmock).get("phase") == "Progressing", what="phase Progressing")
    assert runner.exception is None, runner.output
    assert len(_events(kmock, "LicenseSecretMissing")) == 1


async def test_autoscaler_follows_the_spec_and_keda(kmock: kmock.KubernetesEmulator) -> None:
    await _start(kmock, asr={"autoscaling": {"enabled": True, "min": 2, "max": 6}})
    async with running_operator(kmock) as runner:
        hpa = await eventually(
            lambda: _get(kmock, "autoscaling/v2/horizontalpodautoscalers", "demo-asr-worker"), what="HPA"
        )
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
        body = plain(kmock.objects[CR_RESOURCE, NAMESPACE, "demo"])
        body["spec"] = {**body["spec"], "asr": {"autoscaling": {"enabled": False}}}
        kmock.objects[CR_RESOURCE, NAMESPACE, "demo"] = body
        await eventually(
            lambda: _get(kmock, "autoscaling/v2/horizontalpodautoscalers", "demo-asr-worker") is None,
            what="HPA pruned",
        )
        await eventually(lambda: _events(kmock, "Deleted"), what="a Deleted event")
    assert runner.exception is None, runner.output


async def test_keda_scaled_object_replaces_the_hpa_when_keda_is_installed(
    kmock: kmock.KubernetesEmulator,
) -> None:
    await _start(kmock, asr={"autoscaling": {"enabled": True}})
    kmock.resources["keda.sh/v1alpha1/scaledobjects"] = kmock_resource_info("ScaledObject")
    kmock.objects["apiextensions.k8s.io/v1/customresourcedefinitions", None, "scaledobjects.keda.sh"] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "scaledobjects.keda.sh"},
        "spec": {"group": "keda.sh"},
    }
    async with running_operator(kmock) as runner:
        scaled = await eventually(
            lambda: _get(kmock, "keda.sh/v1alpha1/scaledobjects", "demo-asr-worker"), what="ScaledObject"
        )
        await eventually(
            lambda: _status(kmock).get("resolved", {}).get("scaler") == "keda", what="scaler keda"
        )
    assert runner.exception is None, runner.output
    assert scaled["spec"]["scaleTargetRef"] == {"name": "demo-asr-worker"}
    assert _get(kmock, "autoscaling/v2/horizontalpodautoscalers", "demo-asr-worker") is None


def kmock_resource_info(kind: str) -> kmock.ResourceInfo:
    return kmock.ResourceInfo(
        kind=kind, namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"}
    )


async def test_deleting_the_cr_runs_the_finalizer_and_lets_it_go(kmock: kmock.KubernetesEmulator) -> None:
    await _start(kmock)
    async with running_operator(kmock) as runner:
        cr = await eventually(
            lambda: (
                "oyez.dev/finalizer" in (_get(kmock, CR_RESOURCE, "demo")["metadata"].get("finalizers") or [])
            ),
            what="finalizer added",
        )
        assert cr
        await eventually(lambda: _get(kmock, DEPLOYMENTS, "demo-api-server"), what="API Deployment")
        path = f"/apis/oyez.dev/v1alpha1/namespaces/{NAMESPACE}/speechdeployments/demo"
        response = await kmock.delete(path)
        assert response.status in (200, 202)
        await eventually(lambda: _get(kmock, CR_RESOURCE, "demo") is None, what="CR gone")
        deleting = await eventually(lambda: _events(kmock, "Deleting"), what="the delete handler's event")
    assert runner.exception is None, runner.output
    message = deleting[0].data["message"]
    assert "its children go by ownerReferences" in message
    assert "the model cache PVC demo-model-cache is kept" in message
    pvc = _get(kmock, "v1/persistentvolumeclaims", "demo-model-cache")
    assert pvc is not None and "ownerReferences" not in pvc["metadata"]  # retained: GC leaves it
