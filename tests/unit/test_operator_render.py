"""oyez_operator.render (pure): every object a SpeechDeployment renders, for every plan x GPU tier and
the options that change what is rendered. Objects are checked against the Kubernetes 1.30 OpenAPI
schemas (kubernetes-validate, strict: unknown fields fail) and the fields that matter are pinned."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate import utils as kv_utils
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from api_server.settings import ApiSettings
from asr_worker.service.settings import WorkerSettings
from license_proxy.settings import LicenseProxySettings
from oyez_operator import catalog
from oyez_operator.apply import matches, patch_for, strip_nones
from oyez_operator.crd_model import MAX_NAME_LENGTH, SpeechDeploymentSpec, parse_spec
from oyez_operator.planning import make_plan
from oyez_operator.render import Desired, render_all
from oyez_operator.render_common import RenderContext
from oyez_operator.render_storage import prefetch_job_name

NAMESPACE = "speech"
UID = "6f1c2a9e-8a53-4c35-9d4e-1f2a3b4c5d6e"
LONG_NAME = "speech-" + "0123456789" * 3 + "abc"  # 40 characters, the most a CR name may have
PLANS = ("minimum", "production", "multi-worker", "custom")
TIERS = ("T4", "L4", "A10", "A100", "none")
GPU_TIERS = TIERS[:-1]
CRD_KINDS = {"ScaledObject", "ServiceMonitor"}  # not in the Kubernetes schemas
POD_KINDS = {"Deployment", "StatefulSet", "Job"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# Node-affinity terms the reconciler derives from the nodes of each tier (label key, exact values).
TIER_TERMS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "T4": (("nvidia.com/gpu.product", ("Tesla-T4",)),),
    "L4": (("cloud.google.com/gke-accelerator", ("nvidia-l4",)),),
    "A10": (("node.kubernetes.io/instance-type", ("g5.2xlarge", "g5.xlarge")),),
    "A100": (
        ("karpenter.k8s.aws/instance-gpu-name", ("a100",)),
        ("nvidia.com/gpu.product", ("NVIDIA-A100-SXM4-40GB",)),
    ),
    "none": (("nvidia.com/gpu.product", ("Tesla-T4",)),),  # seen, but a CPU worker must ignore it
}
USER_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["asr"]}]}
            ]
        }
    }
}


@dataclass(frozen=True)
class Options:
    """Spec fields beyond plan and tier, plus the cluster facts rendering depends on."""

    fields: dict[str, Any]
    keda: bool = False
    monitors: bool = False


OPTIONS = {
    "defaults": Options({}),
    # HPA, managed Redis with a password and persistence, every placement override, pull secrets,
    # a LoadBalancer API, license upstream, a pinned model on a ReadWriteMany cache.
    "hpa-everything": Options(
        {
            "gpu": {"count": 2},
            "license": {
                "secretRef": {"name": "oyez-license", "key": "key"},
                "serverUrl": "https://license.example.com",
                "publicKey": "ed25519:AAAA",
            },
            "asr": {
                "autoscaling": {"enabled": True, "min": 2, "max": 6, "targetActiveRequests": 8},
                "tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "asr", "effect": "NoSchedule"}
                ],
                "nodeSelector": {"pool": "asr"},
                "priorityClassName": "oyez-high",
                "drainGracePeriodSeconds": 120,
            },
            "api": {
                "replicas": 2,
                "drainGracePeriodSeconds": 45,
                "priorityClassName": "oyez-high",
                "tolerations": [{"key": "edge", "operator": "Exists"}],
                "service": {
                    "type": "LoadBalancer",
                    "port": 80,
                    "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
                },
            },
            "licenseProxy": {"nodeSelector": {"pool": "system"}, "replicas": 2},
            "redis": {
                "passwordSecretRef": {"name": "redis-auth", "key": "password"},
                "persistence": True,
                "persistenceSize": "4Gi",
                "storageClassName": "fast-ssd",
                "nodeSelector": {"pool": "system"},
            },
            "images": {"pullSecrets": ["regcred", "mirror-cred"], "pullPolicy": "Always"},
            "model": {
                "url": "https://models.example.com/whisper-base.tar.gz",
                "sha256": "ab" * 32,
                "cache": {"size": "50Gi", "storageClassName": "shared", "accessMode": "ReadWriteMany"},
            },
        }
    ),
    # KEDA (+ ServiceMonitor), external Redis from a Secret, no NetworkPolicies, an existing model
    # claim, the user's own worker affinity.
    "keda-external": Options(
        {
            "asr": {"autoscaling": {"enabled": True, "min": 0, "max": 3}, "affinity": USER_AFFINITY},
            "redis": {"mode": "external", "urlSecretRef": {"name": "redis-url", "key": "url"}},
            "networkPolicies": False,
            "model": {"cache": {"existingClaim": "shared-models"}},
        },
        keda=True,
        monitors=True,
    ),
    "external-url-not-retained": Options(
        {
            "redis": {"mode": "external", "url": "rediss://redis.example.com:6380/2"},
            "model": {"cache": {"retainOnDelete": False}},
            "licenseProxy": {"affinity": {"podAntiAffinity": {}}, "priorityClassName": "system"},
        }
    ),
}


def make_spec(**fields: Any) -> SpeechDeploymentSpec:
    fields.setdefault("license", {"secretRef": {"name": "oyez-license"}})
    return parse_spec(fields)


def make_ctx(
    fields: dict[str, Any] | None = None,
    *,
    name: str = "demo",
    keda: bool = False,
    monitors: bool = False,
    terms: tuple[tuple[str, tuple[str, ...]], ...] | None = None,
) -> RenderContext:
    typed = make_spec(**copy.deepcopy(fields or {}))
    plan = make_plan(typed, [], keda_installed=keda)
    return RenderContext(
        name=name,
        namespace=NAMESPACE,
        uid=UID,
        spec=typed,
        plan=plan,
        gpu_node_terms=TIER_TERMS[plan.tier.tier] if terms is None else terms,
        service_monitor_installed=monitors,
    )


def case_ctx(plan: str, tier: str, option: str) -> RenderContext:
    options = OPTIONS[option]
    fields = copy.deepcopy(options.fields)
    fields["plan"] = plan
    fields["gpu"] = {**fields.get("gpu", {}), "tier": tier}
    return make_ctx(fields, name=LONG_NAME, keda=options.keda, monitors=options.monitors)


CASES = [(plan, tier, option) for plan in PLANS for tier in TIERS for option in OPTIONS]
CASE_IDS = ["-".join(case) for case in CASES]


def bodies(ctx: RenderContext, *, include_workers: bool = True) -> list[dict[str, Any]]:
    return [item.body for item in render_all(ctx, include_workers=include_workers)]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} rendered"
    return matches[0]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def workload(ctx: RenderContext, kind: str, component: str) -> dict[str, Any]:
    return find(bodies(ctx), kind, ctx.object_name(component))


def api(ctx: RenderContext) -> dict[str, Any]:
    return workload(ctx, "Deployment", "api-server")


def worker(ctx: RenderContext) -> dict[str, Any]:
    return workload(ctx, "Deployment", "asr-worker")


def proxy(ctx: RenderContext) -> dict[str, Any]:
    return workload(ctx, "Deployment", "license-proxy")


def env_list(workload_body: dict[str, Any]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = only_container(workload_body).get("env") or []
    return env


def env_of(workload_body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    env = env_list(workload_body)
    names = [item["name"] for item in env]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {item["name"]: item for item in env}


def env_value(workload_body: dict[str, Any], name: str) -> str:
    value: str = env_of(workload_body)[name]["value"]
    return value


def walk_pods(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in POD_KINDS:
            yield f"{obj['kind']}/{obj['metadata']['name']}", pod_spec(obj)


# --- the Kubernetes schemas ----------------------------------------------------------------------


def test_every_object_of_every_case_passes_the_kubernetes_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    # kubernetes-validate reads its (1.2 MB) definitions file on every call; read it once.
    monkeypatch.setattr(
        kv_utils, "schema_contents", functools.lru_cache(maxsize=None)(kv_utils.schema_contents)
    )
    unique: dict[str, dict[str, Any]] = {}
    kinds_seen: set[str] = set()
    for case in CASES:
        for body in bodies(case_ctx(*case)):
            kinds_seen.add(body["kind"])
            if body["kind"] in CRD_KINDS:
                continue
            stripped = strip_nones(body)
            unique.setdefault(json.dumps(stripped, sort_keys=True), stripped)
    assert kinds_seen == {
        "PersistentVolumeClaim",
        "Service",
        "NetworkPolicy",
        "StatefulSet",
        "Deployment",
        "Job",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "ServiceMonitor",
    }
    failures = []
    for body in unique.values():
        try:
            kubernetes_validate.validate(body, "1.30", strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            failures.append(f"{body['kind']}/{body['metadata']['name']}: {path}: {error.message}")
    assert failures == []
    assert len(unique) > 50  # the matrix really varies what is rendered


def test_the_schema_check_rejects_an_unknown_field() -> None:
    body = strip_nones(worker(make_ctx()))
    kubernetes_validate.validate(body, "1.30", strict=True)
    only_container(body)["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(body, "1.30", strict=True)


# --- invariants over the whole matrix ------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_pod_is_locked_down(case: tuple[str, str, str]) -> None:
    ctx = case_ctx(*case)
    pods = list(walk_pods(bodies(ctx)))
    assert len(pods) == (5 if ctx.spec.redis.mode == "managed" else 4)  # + the Redis StatefulSet
    for where, pod in pods:
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] > 0, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["privileged"] is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
            assert "/tmp" in mounts, where  # something writable for a read-only root


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_names_fit_dns_labels_for_the_longest_cr_name(case: tuple[str, str, str]) -> None:
    assert len(LONG_NAME) == MAX_NAME_LENGTH
    for body in bodies(case_ctx(*case)):
        name = body["metadata"]["name"]
        assert len(name) <= 63 and DNS_LABEL.match(name), name
        for value in body["metadata"]["labels"].values():
            assert len(value) <= 63, value
        for claim in body["spec"].get("volumeClaimTemplates") or []:
            assert len(f"{claim['metadata']['name']}-{name}-0") <= 63  # the StatefulSet's PVC name


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_everything_is_owned_except_a_retained_model_claim(case: tuple[str, str, str]) -> None:
    ctx = case_ctx(*case)
    owner = {
        "apiVersion": "oyez.dev/v1alpha1",
        "kind": "SpeechDeployment",
        "name": LONG_NAME,
        "uid": UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for body in bodies(ctx):
        meta = body["metadata"]
        assert meta["namespace"] == NAMESPACE
        retained = body["kind"] == "PersistentVolumeClaim" and ctx.spec.model.cache.retain_on_delete
        if retained:
            assert "ownerReferences" not in meta
            assert meta["annotations"] == {"oyez.dev/retain": "true"}
        else:
            assert meta["ownerReferences"] == [owner], f"{body['kind']}/{meta['name']}"
        assert meta["labels"]["app.kubernetes.io/instance"] == LONG_NAME
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "oyez-operator"


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gpu_fields_follow_the_tier(case: tuple[str, str, str]) -> None:
    ctx = case_ctx(*case)
    on_gpu = case[1] != "none"
    body = worker(ctx)
    pod, container = pod_spec(body), only_container(body)
    resources = container["resources"]
    gpus = str(ctx.spec.gpu.count)
    if on_gpu:
        assert resources["requests"]["nvidia.com/gpu"] == gpus
        assert resources["limits"]["nvidia.com/gpu"] == gpus
        assert pod["tolerations"][0] == GPU_TOLERATION
        assert container["image"] == ctx.images.asr_worker
    else:
        assert "nvidia.com/gpu" not in resources["requests"]
        assert "nvidia.com/gpu" not in resources["limits"]
        assert GPU_TOLERATION not in (pod["tolerations"] or [])
        assert container["image"] == ctx.images.asr_worker_cpu
    env = env_of(body)
    assert env["OYEZ_REQUIRE_GPU"]["value"] == ("true" if on_gpu else "false")
    assert env["OYEZ_INFERENCE_LANES"]["value"] == (str(catalog.GPU_INFERENCE_LANES) if on_gpu else "1")
    # user tolerations come after the GPU one, unchanged
    user = [t.model_dump(by_alias=True, exclude_none=True) for t in ctx.spec.asr.tolerations or []]
    assert (pod["tolerations"] or []) == ([GPU_TOLERATION] if on_gpu else []) + user
    # affinity: the user's replaces ours; ours pins GPU workers to the tier's nodes
    if ctx.spec.asr.affinity is not None:
        assert pod["affinity"] == USER_AFFINITY
    elif on_gpu:
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"] == [
            {"matchExpressions": [{"key": key, "operator": "In", "values": list(values)}]}
            for key, values in TIER_TERMS[case[1]]
        ]
    else:
        assert pod["affinity"] is None
    # nothing else asks for a GPU
    worker_name = ctx.object_name("asr-worker")
    for other in [
        obj for obj in bodies(ctx) if obj["kind"] in POD_KINDS and obj["metadata"]["name"] != worker_name
    ]:
        for part in ("requests", "limits"):
            assert "nvidia.com/gpu" not in only_container(other)["resources"][part]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_worker_replicas_are_create_only_exactly_with_an_autoscaler(case: tuple[str, str, str]) -> None:
    ctx = case_ctx(*case)
    items = render_all(ctx)
    workers = [item for item in items if item.key == ("apps/v1", "Deployment", ctx.object_name("asr-worker"))]
    assert len(workers) == 1
    assert workers[0].body["spec"]["replicas"] == ctx.plan.workers.replicas
    if ctx.spec.asr.autoscaling.enabled:
        assert ctx.plan.scaler in ("hpa", "keda")
        assert workers[0].create_only == (("spec", "replicas"),)
    else:
        assert workers[0].create_only == ()
    for item in items:
        if item.key[1] == "Job":
            assert item.create_only == (("spec",),)  # immutable: a new model is a new Job
        elif item.key[1] == "StatefulSet":
            assert ("spec", "volumeClaimTemplates") in item.create_only
        elif item.key[1] == "PersistentVolumeClaim":
            assert item.create_only == (("spec", "accessModes"), ("spec", "storageClassName"))
        elif item is not workers[0]:
            assert item.create_only == ()


def as_served(value: Any) -> Any:
    """Roughly what the API server returns for a created object: empty lists omitted (omitempty;
    empty structs such as `namespaceSelector: {}` are pointers and stay)."""
    if isinstance(value, dict):
        served = {key: as_served(item) for key, item in value.items()}
        return {key: item for key, item in served.items() if item != []}
    if isinstance(value, list):
        return [as_served(item) for item in value]
    return value


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_a_freshly_created_object_shows_no_drift(case: tuple[str, str, str]) -> None:
    for item in render_all(case_ctx(*case)):
        live = as_served(strip_nones(item.body))
        live["metadata"] |= {"uid": "x", "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z"}
        live["status"] = {"observedGeneration": 1}
        assert matches(patch_for(item), live), f"{item.key} would be patched on every reconcile"


def test_a_rendered_job_is_patched_in_its_metadata_only() -> None:
    ctx = make_ctx()
    (job,) = [item for item in render_all(ctx) if item.key[1] == "Job"]
    assert set(patch_for(job)) == {"metadata"}  # a Job's spec is immutable
    assert patch_for(job)["metadata"]["labels"] == job.body["metadata"]["labels"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_services_select_their_pods_and_target_named_ports(case: tuple[str, str, str]) -> None:
    objects = bodies(case_ctx(*case))
    pod_templates = [obj for obj in objects if obj["kind"] in ("Deployment", "StatefulSet")]
    for service in of_kind(objects, "Service"):
        selected = [
            obj
            for obj in pod_templates
            if service["spec"]["selector"].items() <= obj["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        port_names = {port["name"] for port in only_container(selected[0])["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    for obj in pod_templates:
        assert (
            obj["spec"]["selector"]["matchLabels"].items()
            <= obj["spec"]["template"]["metadata"]["labels"].items()
        )


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_pod_is_covered_by_one_network_policy_when_enabled(case: tuple[str, str, str]) -> None:
    ctx = case_ctx(*case)
    objects = bodies(ctx)
    policies = of_kind(objects, "NetworkPolicy")
    if not ctx.spec.network_policies:
        assert policies == []
        return
    for obj in objects:
        if obj["kind"] not in POD_KINDS:
            continue
        pod_labels = obj["spec"]["template"]["metadata"]["labels"]
        covering = [
            p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
        ]
        assert len(covering) == 1, obj["metadata"]["name"]
        assert covering[0]["spec"]["policyTypes"] == ["Ingress"]


# --- the env each service reads ------------------------------------------------------------------


def settings_env_names(settings: type[BaseSettings]) -> set[str]:
    """The environment names a pydantic-settings class reads (upper-cased: it is case-insensitive)."""
    assert settings.model_config.get("case_sensitive") is False
    prefix = str(settings.model_config.get("env_prefix") or "")
    names = set()
    for field_name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
        else:
            names.add(prefix + field_name)
    return {name.upper() for name in names}


EXPANSION_ONLY = {"POD_IP", "REDIS_PASSWORD"}  # rendered only for $(VAR) expansion in other values


def test_settings_env_names_helper_reads_aliases_and_prefixes() -> None:
    names = settings_env_names(WorkerSettings)
    assert {"MODEL_URL", "MODEL_CACHE_DIR", "OYEZ_MODEL_CACHE_DIR", "OYEZ_HTTP_PORT", "PORT"} <= names
    assert "OYEZ_MODEL_URL" not in names  # an aliased field is read under its alias only
    assert "API_BASE_URL" in settings_env_names(ApiSettings)


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("tier", ["A10", "none"])
@pytest.mark.parametrize(
    ("component", "settings"),
    [("api-server", ApiSettings), ("asr-worker", WorkerSettings), ("license-proxy", LicenseProxySettings)],
)
def test_every_rendered_env_name_is_read_by_the_service(
    component: str, settings: type[BaseSettings], tier: str, option: str
) -> None:
    ctx = case_ctx("production", tier, option)
    rendered = {item["name"] for item in env_list(workload(ctx, "Deployment", component))}
    unread = {name for name in rendered if name.upper() not in settings_env_names(settings)} - EXPANSION_ONLY
    assert unread == set()
    for name in rendered & EXPANSION_ONLY:  # and the expansion-only ones are really expanded somewhere
        values = [item.get("value") or "" for item in env_list(workload(ctx, "Deployment", component))]
        assert any(f"$({name})" in value for value in values), name


# --- env wiring ----------------------------------------------------------------------------------


def secret_ref(entry: dict[str, Any]) -> dict[str, str]:
    ref: dict[str, str] = entry["valueFrom"]["secretKeyRef"]
    return ref


def test_license_key_comes_from_the_secret_everywhere() -> None:
    ctx = make_ctx({"license": {"secretRef": {"name": "oyez-license", "key": "token"}}})
    for body in (api(ctx), worker(ctx), proxy(ctx)):
        entry = env_of(body)["LICENSE_KEY"]
        assert "value" not in entry
        assert secret_ref(entry) == {"name": "oyez-license", "key": "token"}
    assert secret_ref(env_of(api(make_ctx()))["LICENSE_KEY"]) == {
        "name": "oyez-license",
        "key": "license-key",
    }


def test_managed_redis_without_password() -> None:
    ctx = make_ctx()
    for body in (api(ctx), worker(ctx)):
        assert env_value(body, "REDIS_URL") == f"redis://demo-redis.{NAMESPACE}.svc:6379/0"
        assert "REDIS_PASSWORD" not in env_of(body)
    redis = workload(ctx, "StatefulSet", "redis")
    assert "--requirepass" not in only_container(redis)["command"]
    assert only_container(redis)["env"] is None
    service = find(bodies(ctx), "Service", "demo-redis")
    assert service["spec"]["ports"][0]["port"] == 6379


def test_managed_redis_with_password_defines_it_before_the_url() -> None:
    ctx = make_ctx({"redis": {"passwordSecretRef": {"name": "redis-auth", "key": "pw"}}})
    for body in (api(ctx), worker(ctx)):
        names = [item["name"] for item in env_list(body)]
        assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")  # $(VAR) only sees earlier vars
        assert secret_ref(env_of(body)["REDIS_PASSWORD"]) == {"name": "redis-auth", "key": "pw"}
        assert env_value(body, "REDIS_URL") == f"redis://:$(REDIS_PASSWORD)@demo-redis.{NAMESPACE}.svc:6379/0"
    redis = only_container(workload(ctx, "StatefulSet", "redis"))
    assert redis["command"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert secret_ref(redis["env"][0]) == {"name": "redis-auth", "key": "pw"}
    assert "REDISCLI_AUTH" in redis["readinessProbe"]["exec"]["command"][-1]


def test_external_redis_url_and_url_secret() -> None:
    plain = make_ctx({"redis": {"mode": "external", "url": "redis://cache.example.com:6379/3"}})
    secret = make_ctx({"redis": {"mode": "external", "urlSecretRef": {"name": "redis-url", "key": "url"}}})
    for body in (api(plain), worker(plain)):
        assert env_of(body)["REDIS_URL"] == {"name": "REDIS_URL", "value": "redis://cache.example.com:6379/3"}
    for body in (api(secret), worker(secret)):
        assert secret_ref(env_of(body)["REDIS_URL"]) == {"name": "redis-url", "key": "url"}
        assert "REDIS_PASSWORD" not in env_of(body)
    for ctx in (plain, secret):
        objects = bodies(ctx)
        assert of_kind(objects, "StatefulSet") == []
        assert all("redis" not in obj["metadata"]["name"] for obj in objects)


def test_service_urls_point_at_the_rendered_services() -> None:
    ctx = make_ctx()
    objects = bodies(ctx)
    env = env_of(api(ctx))
    proxy_service = find(objects, "Service", "demo-license-proxy")
    worker_service = find(objects, "Service", "demo-asr-worker")
    assert env["API_BASE_URL"]["value"] == f"http://demo-license-proxy.{NAMESPACE}.svc:6699"
    assert env["LIGHTNING_ASR_BASE_URL"]["value"] == f"http://demo-asr-worker.{NAMESPACE}.svc:2233"
    assert proxy_service["spec"]["ports"][0]["port"] == 6699
    assert worker_service["spec"]["ports"][0]["port"] == 2233
    assert worker_service["spec"]["clusterIP"] == "None"  # headless: resolves every worker pod
    assert env["API_SERVER_PORT"]["value"] == "7100"


def test_worker_env_carries_the_model_and_its_identity() -> None:
    ctx = make_ctx({"model": {"url": "https://m.example.com/b.tar", "sha256": "CD" * 32}})
    env = env_of(worker(ctx))
    assert env["MODEL_URL"]["value"] == "https://m.example.com/b.tar"
    assert env["MODEL_SHA256"]["value"] == "CD" * 32
    assert env["MODEL_CACHE_DIR"]["value"] == "/models"
    assert env["PORT"]["value"] == "2233"
    assert env["OYEZ_HTTP_PORT"]["value"] == "9090"
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["OYEZ_WORKER_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["OYEZ_ADVERTISE_ADDRESS"]["value"] == "$(POD_IP):2233"
    names = [item["name"] for item in env_list(worker(ctx))]
    assert names.index("POD_IP") < names.index("OYEZ_ADVERTISE_ADDRESS")
    mounts = {m["name"]: m["mountPath"] for m in only_container(worker(ctx))["volumeMounts"]}
    assert mounts["model-cache"] == "/models"


def test_license_proxy_env() -> None:
    bare = env_of(proxy(make_ctx()))
    assert bare["OYEZ_ENV"]["value"] == "production"
    assert bare["PORT"]["value"] == "6699"
    assert "OYEZ_LICENSE_SERVER_URL" not in bare and "OYEZ_LICENSE_PUBLIC_KEY" not in bare
    full = make_ctx(
        {
            "license": {
                "secretRef": {"name": "lic"},
                "serverUrl": "https://license.example.com",
                "publicKey": "ed25519:AAAA",
            }
        }
    )
    env = env_of(proxy(full))
    assert env["OYEZ_LICENSE_SERVER_URL"]["value"] == "https://license.example.com"
    assert env["OYEZ_LICENSE_PUBLIC_KEY"]["value"] == "ed25519:AAAA"
    state = env["OYEZ_LICENSE_STATE_DIR"]["value"]
    assert {"name": "state", "mountPath": state} in only_container(proxy(full))["volumeMounts"]


# --- probes, grace periods -----------------------------------------------------------------------


def probe_paths(body: dict[str, Any]) -> dict[str, tuple[str, str]]:
    container = only_container(body)
    return {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }


def test_probe_paths() -> None:
    ctx = make_ctx()
    assert probe_paths(api(ctx)) == {
        "startupProbe": ("/api/v1/health", "http"),
        "livenessProbe": ("/api/v1/health", "http"),
        "readinessProbe": ("/healthz", "http"),
    }
    assert probe_paths(worker(ctx)) == {
        "startupProbe": ("/health", "metrics"),
        "livenessProbe": ("/metrics", "metrics"),  # answers while draining, when /health is 503
        "readinessProbe": ("/health", "metrics"),
    }
    assert probe_paths(proxy(ctx)) == {
        "startupProbe": ("/ready", "http"),
        "livenessProbe": ("/ready", "http"),
        "readinessProbe": ("/health", "http"),  # ready only while the license is valid
    }
    startup = only_container(worker(ctx))["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30 * 60  # model load may be slow


@pytest.mark.parametrize(("api_grace", "asr_grace"), [(30, 60), (45, 120), (1, 3600)])
def test_termination_grace_is_the_drain_grace_plus_15(api_grace: int, asr_grace: int) -> None:
    ctx = make_ctx(
        {"api": {"drainGracePeriodSeconds": api_grace}, "asr": {"drainGracePeriodSeconds": asr_grace}}
    )
    assert pod_spec(api(ctx))["terminationGracePeriodSeconds"] == api_grace + 15
    assert pod_spec(worker(ctx))["terminationGracePeriodSeconds"] == asr_grace + 15
    assert env_value(api(ctx), "OYEZ_DRAIN_GRACE_S") == str(api_grace)
    assert env_value(worker(ctx), "OYEZ_DRAIN_GRACE_S") == str(asr_grace)


def test_worker_rollout_never_drops_below_the_desired_count() -> None:
    strategy = worker(make_ctx())["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


# --- storage and the prefetch Job ----------------------------------------------------------------


def test_prefetch_job_name_follows_the_model_only() -> None:
    base: dict[str, Any] = {"model": {"url": "https://m.example.com/a.tar"}}
    name = prefetch_job_name(make_ctx(base))
    assert re.fullmatch(r"demo-model-[0-9a-f]{10}", name)
    assert find(bodies(make_ctx(base)), "Job", name)["spec"]["backoffLimit"] == 3
    same_model: list[dict[str, Any]] = [
        {**base, "plan": "multi-worker"},
        {**base, "gpu": {"tier": "none"}},
        {**base, "asr": {"replicas": 4}},
        {"model": {**base["model"], "cache": {"size": "99Gi"}}},
        {**base, "images": {"pullPolicy": "Always"}},
    ]
    for fields in same_model:
        assert prefetch_job_name(make_ctx(fields)) == name, fields
    other_url = prefetch_job_name(make_ctx({"model": {"url": "https://m.example.com/b.tar"}}))
    with_sha = prefetch_job_name(make_ctx({"model": {**base["model"], "sha256": "ab" * 32}}))
    other_sha = prefetch_job_name(make_ctx({"model": {**base["model"], "sha256": "cd" * 32}}))
    assert len({name, other_url, with_sha, other_sha}) == 4


def test_prefetch_job_downloads_into_the_claim_the_workers_mount() -> None:
    for fields, claim in [
        ({}, "demo-model-cache"),
        ({"model": {"cache": {"existingClaim": "shared"}}}, "shared"),
    ]:
        ctx = make_ctx(fields)
        objects = bodies(ctx)
        job = find(objects, "Job", prefetch_job_name(ctx))
        job_claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in pod_spec(job)["volumes"]
            if "persistentVolumeClaim" in v
        ]
        worker_claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in pod_spec(worker(ctx))["volumes"]
            if "persistentVolumeClaim" in v
        ]
        assert job_claims == worker_claims == [claim]
        assert pod_spec(job)["restartPolicy"] == "Never"
        assert {e["name"]: e["value"] for e in only_container(job)["env"]}["MODEL_CACHE_DIR"] == "/models"
        claims = of_kind(objects, "PersistentVolumeClaim")
        assert [c["metadata"]["name"] for c in claims] == ([] if fields else ["demo-model-cache"])


def test_model_claim_spec_and_retention() -> None:
    retained = find(
        bodies(
            make_ctx(
                {
                    "model": {
                        "cache": {"size": "50Gi", "storageClassName": "nfs", "accessMode": "ReadWriteMany"}
                    }
                }
            )
        ),
        "PersistentVolumeClaim",
        "demo-model-cache",
    )
    assert retained["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "50Gi"}},
        "storageClassName": "nfs",
    }
    assert "ownerReferences" not in retained["metadata"]
    dropped = find(
        bodies(make_ctx({"model": {"cache": {"retainOnDelete": False}}})),
        "PersistentVolumeClaim",
        "demo-model-cache",
    )
    assert dropped["metadata"]["ownerReferences"][0]["uid"] == UID
    assert "annotations" not in dropped["metadata"]


def test_redis_persistence_uses_a_claim_template() -> None:
    ctx = make_ctx({"redis": {"persistence": True, "persistenceSize": "4Gi", "storageClassName": "fast"}})
    redis = workload(ctx, "StatefulSet", "redis")
    assert redis["spec"]["volumeClaimTemplates"] == [
        {
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "4Gi"}},
                "storageClassName": "fast",
            },
        }
    ]
    assert "data" not in {v["name"] for v in pod_spec(redis)["volumes"]}
    command = only_container(redis)["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    ephemeral = workload(make_ctx(), "StatefulSet", "redis")
    assert "volumeClaimTemplates" not in ephemeral["spec"]
    assert {"name": "data", "emptyDir": {"sizeLimit": "2Gi"}} in pod_spec(ephemeral)["volumes"]
    assert (
        only_container(ephemeral)["command"][only_container(ephemeral)["command"].index("--appendonly") + 1]
        == "no"
    )


# --- network policies ----------------------------------------------------------------------------


def from_components(rule: dict[str, Any]) -> set[str]:
    return {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rule.get("from", [])
    }


def test_network_policy_rules() -> None:
    ctx = make_ctx()
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(bodies(ctx), "NetworkPolicy")}
    assert set(policies) == {
        "demo-api-server",
        "demo-asr-worker",
        "demo-license-proxy",
        "demo-redis",
        "demo-model-prefetch",
    }
    tcp = {"protocol": "TCP"}
    assert policies["demo-api-server"]["ingress"] == [{"ports": [{**tcp, "port": 7100}]}]  # from anywhere
    worker_rules = policies["demo-asr-worker"]["ingress"]
    grpc_rules = [rule for rule in worker_rules if {**tcp, "port": 2233} in rule["ports"]]
    assert len(grpc_rules) == 1 and from_components(grpc_rules[0]) == {"api-server"}
    assert len(grpc_rules[0]["from"]) == 1
    metrics_rules = [rule for rule in worker_rules if rule not in grpc_rules]
    assert metrics_rules == [{"from": [{"namespaceSelector": {}}], "ports": [{**tcp, "port": 9090}]}]
    for name, port in (("demo-redis", 6379), ("demo-license-proxy", 6699)):
        (rule,) = policies[name]["ingress"]
        assert rule["ports"] == [{**tcp, "port": port}]
        assert from_components(rule) == {"api-server", "asr-worker"}
        assert all(set(peer) == {"podSelector"} for peer in rule["from"])  # same namespace only
    assert policies["demo-model-prefetch"]["ingress"] == []
    for name, spec in policies.items():
        assert spec["podSelector"]["matchLabels"] == {
            "app.kubernetes.io/instance": "demo",
            "app.kubernetes.io/component": name.removeprefix("demo-"),
        }


def test_no_network_policies_when_disabled_and_no_redis_policy_for_external_redis() -> None:
    assert of_kind(bodies(make_ctx({"networkPolicies": False})), "NetworkPolicy") == []
    external = make_ctx({"redis": {"mode": "external", "url": "redis://r.example.com:6379"}})
    names = {p["metadata"]["name"] for p in of_kind(bodies(external), "NetworkPolicy")}
    assert names == {"demo-api-server", "demo-asr-worker", "demo-license-proxy", "demo-model-prefetch"}


# --- scaling ---------------------------------------------------------------------------------------


def test_hpa_scales_the_workers_on_active_requests() -> None:
    ctx = make_ctx({"asr": {"autoscaling": {"enabled": True, "min": 2, "max": 7, "targetActiveRequests": 6}}})
    objects = bodies(ctx)
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["metadata"]["name"] == "demo-asr-worker"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "demo-asr-worker",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 7)
    assert spec["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "asr_active_requests"},
                "target": {"type": "AverageValue", "averageValue": "6"},
            },
        }
    ]
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    assert of_kind(objects, "ScaledObject") == []
    assert of_kind(objects, "ServiceMonitor") == []  # not installed


def test_hpa_min_replicas_is_at_least_one() -> None:
    ctx = make_ctx({"asr": {"autoscaling": {"enabled": True, "min": 0, "max": 3}}})
    (hpa,) = of_kind(bodies(ctx), "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 1


def test_keda_scaled_object_and_service_monitor() -> None:
    ctx = make_ctx(
        {"asr": {"autoscaling": {"enabled": True, "min": 0, "max": 9, "targetActiveRequests": 3}}},
        keda=True,
        monitors=True,
    )
    objects = bodies(ctx)
    assert of_kind(objects, "HorizontalPodAutoscaler") == []
    (scaled,) = of_kind(objects, "ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"name": "demo-asr-worker"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 9)
    metrics_service = find(objects, "Service", "demo-asr-worker-metrics")
    for trigger in spec["triggers"]:
        assert trigger["metadata"]["threshold"] == "3"
        assert f'service="{metrics_service["metadata"]["name"]}"' in trigger["metadata"]["query"]
        assert f'namespace="{NAMESPACE}"' in trigger["metadata"]["query"]
    assert {t["name"] for t in spec["triggers"]} == {"asr_active_requests", "asr_batch_queue_depth"}
    (monitor,) = of_kind(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics_service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == metrics_service["spec"]["ports"][0]["name"]


def test_no_autoscaler_and_no_service_monitor_without_autoscaling() -> None:
    objects = bodies(make_ctx(keda=True, monitors=True))
    kinds = {obj["kind"] for obj in objects}
    assert not kinds & {"HorizontalPodAutoscaler", "ScaledObject", "ServiceMonitor"}
    budgets = of_kind(objects, "PodDisruptionBudget")
    assert {b["metadata"]["name"] for b in budgets} == {
        "demo-api-server",
        "demo-asr-worker",
        "demo-license-proxy",
    }
    assert all(b["spec"]["maxUnavailable"] == 1 for b in budgets)


def test_include_workers_false_omits_only_the_worker_deployment() -> None:
    ctx = make_ctx({"asr": {"autoscaling": {"enabled": True}}})
    with_workers = [item.key for item in render_all(ctx)]
    without = [item.key for item in render_all(ctx, include_workers=False)]
    assert [key for key in with_workers if key != ("apps/v1", "Deployment", "demo-asr-worker")] == without
    assert len(with_workers) == len(without) + 1


def test_render_order_puts_dependencies_first() -> None:
    kinds = [item.key[1] for item in render_all(make_ctx({"asr": {"autoscaling": {"enabled": True}}}))]
    assert kinds[0] == "PersistentVolumeClaim"
    assert kinds.index("Job") < kinds.index("Deployment", kinds.index("Job"))
    assert kinds.index("StatefulSet") < kinds.index("Deployment")
    assert kinds[-1] == "HorizontalPodAutoscaler"


# --- placement and images ------------------------------------------------------------------------


def test_placement_overrides_reach_their_own_component_only() -> None:
    toleration = {"key": "dedicated", "operator": "Equal", "value": "api", "effect": "NoSchedule"}
    ctx = make_ctx(
        {
            "gpu": {"tier": "L4"},
            "api": {
                "tolerations": [toleration],
                "nodeSelector": {"pool": "web"},
                "priorityClassName": "high",
            },
            "asr": {
                "nodeSelector": {"pool": "gpu"},
                "affinity": USER_AFFINITY,
                "priorityClassName": "gpu-high",
            },
            "licenseProxy": {"nodeSelector": {"pool": "system"}},
            "redis": {"priorityClassName": "data"},
        }
    )
    api_pod, worker_pod = pod_spec(api(ctx)), pod_spec(worker(ctx))
    assert (api_pod["nodeSelector"], api_pod["tolerations"], api_pod["priorityClassName"]) == (
        {"pool": "web"},
        [toleration],
        "high",
    )
    assert api_pod["affinity"] is None
    assert worker_pod["nodeSelector"] == {"pool": "gpu"}
    assert worker_pod["affinity"] == USER_AFFINITY  # replaces the tier's node affinity
    assert worker_pod["priorityClassName"] == "gpu-high"
    assert worker_pod["tolerations"] == [GPU_TOLERATION]
    assert pod_spec(proxy(ctx))["nodeSelector"] == {"pool": "system"}
    assert pod_spec(proxy(ctx))["priorityClassName"] is None
    redis_pod = pod_spec(workload(ctx, "StatefulSet", "redis"))
    assert (redis_pod["priorityClassName"], redis_pod["nodeSelector"]) == ("data", None)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] == "production"], ids=lambda c: "-".join(c))
def test_prefetch_job_runs_where_the_workers_will(case: tuple[str, str, str]) -> None:
    ctx = case_ctx(*case)
    job = find(bodies(ctx), "Job", prefetch_job_name(ctx))
    fields = ("nodeSelector", "tolerations", "affinity", "priorityClassName")
    worker_pod, job_pod = pod_spec(worker(ctx)), pod_spec(job)
    assert {f: job_pod[f] for f in fields} == {f: worker_pod[f] for f in fields}
    if case[1] != "none":  # a tainted GPU pool must not leave the download Pending
        assert GPU_TOLERATION in job_pod["tolerations"]
    assert "nvidia.com/gpu" not in only_container(job)["resources"]["requests"]  # it needs no GPU


def test_pull_secrets_and_pull_policy_on_every_pod() -> None:
    ctx = make_ctx({"images": {"pullSecrets": ["regcred", "mirror"], "pullPolicy": "Always"}})
    for where, pod in walk_pods(bodies(ctx)):
        assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}], where
        assert all(c["imagePullPolicy"] == "Always" for c in pod["containers"]), where
    for where, pod in walk_pods(bodies(make_ctx())):
        assert pod["imagePullSecrets"] is None, where
        assert "imagePullSecrets" not in strip_nones(pod), where


def test_image_overrides() -> None:
    images = {
        "apiServer": "reg.example.com/api:1",
        "asrWorker": "reg.example.com/worker-gpu:1",
        "asrWorkerCpu": "reg.example.com/worker-cpu:1",
        "licenseProxy": "reg.example.com/proxy:1",
        "redis": "reg.example.com/redis:7",
    }
    gpu = make_ctx({"images": images, "gpu": {"tier": "T4"}})
    cpu = make_ctx({"images": images, "gpu": {"tier": "none"}})
    assert only_container(api(gpu))["image"] == "reg.example.com/api:1"
    assert only_container(worker(gpu))["image"] == "reg.example.com/worker-gpu:1"
    assert only_container(worker(cpu))["image"] == "reg.example.com/worker-cpu:1"
    assert (
        only_container(find(bodies(cpu), "Job", prefetch_job_name(cpu)))["image"]
        == "reg.example.com/worker-cpu:1"
    )
    assert only_container(proxy(gpu))["image"] == "reg.example.com/proxy:1"
    assert only_container(workload(gpu, "StatefulSet", "redis"))["image"] == "reg.example.com/redis:7"
    only_gpu_image = make_ctx({"images": {"asrWorker": "reg.example.com/worker:2"}, "gpu": {"tier": "none"}})
    assert only_container(worker(only_gpu_image))["image"] == "reg.example.com/worker:2"


def test_load_balancer_api_service() -> None:
    annotations = {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}
    ctx = make_ctx({"api": {"service": {"type": "LoadBalancer", "port": 80, "annotations": annotations}}})
    service = find(bodies(ctx), "Service", "demo-api-server")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["metadata"]["annotations"] == annotations
    default = find(bodies(make_ctx()), "Service", "demo-api-server")
    assert default["spec"]["type"] == "ClusterIP"
    assert "annotations" not in default["metadata"]  # not owned: other tools' annotations stay
    assert default["spec"]["ports"][0]["port"] == 7100


def test_replica_counts_come_from_the_spec_and_the_plan() -> None:
    ctx = make_ctx({"plan": "multi-worker", "api": {"replicas": 3}, "licenseProxy": {"replicas": 2}})
    assert api(ctx)["spec"]["replicas"] == 3
    assert proxy(ctx)["spec"]["replicas"] == 2
    assert worker(ctx)["spec"]["replicas"] == 2
    assert workload(ctx, "StatefulSet", "redis")["spec"]["replicas"] == 1


def test_container_resources_are_the_plans() -> None:
    ctx = make_ctx({"plan": "production", "gpu": {"tier": "A10"}})
    for component in ("api-server", "asr-worker", "license-proxy"):
        assert (
            only_container(workload(ctx, "Deployment", component))["resources"]
            == ctx.plan.resources[component]
        )
    redis = only_container(workload(ctx, "StatefulSet", "redis"))
    assert redis["resources"] == ctx.plan.resources["redis"]


def test_gpu_affinity_needs_observed_terms() -> None:
    ctx = replace(make_ctx({"gpu": {"tier": "A10"}}), gpu_node_terms=())
    assert pod_spec(worker(ctx))["affinity"] is None  # no tier nodes seen: only the GPU request pins it


def test_desired_key_is_api_version_kind_name() -> None:
    item = Desired({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}})
    assert item.key == ("v1", "Service", "x")
