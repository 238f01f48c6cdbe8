"""The CRD: generated from the operator's model, identical to crds/, valid, and it accepts the
examples and rejects bad CRs with the field named. CEL rules (which only a real API server runs)
are pinned to their Python mirrors: same rule set, same messages."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from oyez_operator.crd_model import describe_errors, parse_spec
from oyez_operator.crd_schema import crd_manifest
from oyez_operator.planning import make_plan, resource_problems
from oyez_operator.reconcile import validate
from oyez_operator.render import render_all
from oyez_operator.render_common import RenderContext

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "speechdeployments.oyez.dev.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
LICENSE = {"license": {"secretRef": {"name": "lic"}}}


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _schema_errors(body: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft4Validator(_schema())
    return sorted(
        ".".join(str(p) for p in error.absolute_path) + ": " + error.message
        for error in validator.iter_errors(body)
    )


def _cr(spec: dict[str, Any], name: str = "demo") -> dict[str, Any]:
    return {
        "apiVersion": "oyez.dev/v1alpha1",
        "kind": "SpeechDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_crds_folder_is_generated_from_the_model() -> None:
    on_disk = yaml.safe_load(CRD_FILE.read_text())
    assert on_disk == crd_manifest(), (
        "crds/ is stale: run `oyez operator --print-crd > crds/speechdeployments.oyez.dev.yaml`"
    )


def test_print_crd_command_writes_the_same_document() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "oyez.cli", "operator", "--print-crd"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert yaml.safe_load(out) == crd_manifest()


def test_crd_is_a_valid_apiextensions_object() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-k", "1.30.0", str(CRD_FILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout


def test_crd_shape() -> None:
    crd = crd_manifest()
    version = crd["spec"]["versions"][0]
    assert (crd["spec"]["group"], version["name"], crd["spec"]["scope"]) == (
        "oyez.dev",
        "v1alpha1",
        "Namespaced",
    )
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase",
        "GPU",
        "Workers",
        "Ready",
        "Age",
    ]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["license"]
    assert spec["properties"]["gpu"]["properties"]["tier"]["enum"] == [
        "auto",
        "T4",
        "L4",
        "A10",
        "A100",
        "none",
    ]
    assert spec["properties"]["asr"]["default"] == {}  # nested defaults apply on a bare spec


def _cel_rules(node: Any, found: list[dict[str, str]]) -> list[dict[str, str]]:
    if isinstance(node, dict):
        found.extend(node.get("x-kubernetes-validations", []))
        for value in node.values():
            _cel_rules(value, found)
    elif isinstance(node, list):
        for value in node:
            _cel_rules(value, found)
    return found


# One violating spec per CEL rule: the Python mirror must reject it with the rule's own message.
CEL_VIOLATIONS = {
    "autoscaling.min must not exceed autoscaling.max": {"asr": {"autoscaling": {"min": 5, "max": 2}}},
    "set asr.replicas or asr.throughputTarget, not both": {"asr": {"replicas": 2, "throughputTarget": 10}},
    "model.cache.existingClaim and model.cache.storageClassName are exclusive": {
        "model": {"cache": {"existingClaim": "pvc", "storageClassName": "fast"}}
    },
    "redis.mode external needs redis.url or redis.urlSecretRef": {"redis": {"mode": "external"}},
    "redis.url and redis.urlSecretRef are only for redis.mode external": {"redis": {"url": "redis://r:6379"}},
    "set redis.url or redis.urlSecretRef, not both": {
        "redis": {"mode": "external", "url": "redis://r:6379", "urlSecretRef": {"name": "s", "key": "url"}}
    },
}


def test_every_cel_rule_has_a_python_mirror_with_the_same_message() -> None:
    spec_rules = _cel_rules(_schema()["properties"]["spec"], [])
    assert {rule["message"] for rule in spec_rules} == set(CEL_VIOLATIONS)
    for message, bad in CEL_VIOLATIONS.items():
        with pytest.raises(ValidationError) as caught:
            parse_spec({**LICENSE, **bad})
        assert message in describe_errors(caught.value)


def test_name_rule_is_enforced_by_cel_and_by_the_operator() -> None:
    root_rules = _schema()["x-kubernetes-validations"]
    assert root_rules[0]["rule"] == "self.metadata.name.size() <= 40"
    assert validate("a" * 40, LICENSE)[1] is None
    spec, problem = validate("a" * 41, LICENSE)
    assert spec is None and problem is not None and "metadata.name" in problem
    assert validate("Bad_Name", LICENSE)[1] is not None


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_and_render(path: Path) -> None:
    body = yaml.safe_load(path.read_text())
    assert _schema_errors(body) == []
    spec = parse_spec(body["spec"])
    plan = make_plan(spec, [])
    assert resource_problems(plan.resources) == []
    objects = render_all(
        RenderContext(name=body["metadata"]["name"], namespace="default", uid="u", spec=spec, plan=plan)
    )
    assert any(item.key[1] == "Deployment" for item in objects)


def test_examples_cover_every_plan_and_a_cpu_only_cluster() -> None:
    specs = [yaml.safe_load(path.read_text())["spec"] for path in EXAMPLES]
    assert {spec.get("plan", "minimum") for spec in specs} == {
        "minimum",
        "production",
        "multi-worker",
        "custom",
    }
    assert any(spec.get("gpu", {}).get("tier") == "none" for spec in specs)


# Invalid CRs the schema itself rejects (what a real API server says before the operator sees them),
# and the same specs through the operator's parser (what it says if the CRD were looser).
SCHEMA_INVALID = [
    ({}, "spec: 'license' is a required property"),
    ({"license": {"secretRef": {}}}, "spec.license.secretRef: 'name' is a required property"),
    ({**LICENSE, "plan": "huge"}, "spec.plan: 'huge' is not one of"),
    ({**LICENSE, "gpu": {"tier": "H100"}}, "spec.gpu.tier: 'H100' is not one of"),
    ({**LICENSE, "gpu": {"count": 0}}, "spec.gpu.count: 0 is less than the minimum of 1"),
    ({**LICENSE, "asr": {"replicas": "two"}}, "spec.asr.replicas: 'two' is not of type 'integer'"),
    (
        {**LICENSE, "asr": {"throughputTarget": 0}},
        "spec.asr.throughputTarget: 0 is less than or equal to the minimum",
    ),
    (
        {**LICENSE, "asr": {"resources": {"limits": {"memory": "lots"}}}},
        "spec.asr.resources.limits.memory: 'lots' does not match",
    ),
    ({**LICENSE, "model": {"sha256": "abc"}}, "spec.model.sha256: 'abc' does not match"),
    ({**LICENSE, "api": {"service": {"type": "Ingress"}}}, "spec.api.service.type: 'Ingress' is not one of"),
    (
        {**LICENSE, "api": {"service": {"port": 70000}}},
        "spec.api.service.port: 70000 is greater than the maximum",
    ),
    (
        {**LICENSE, "redis": {"mode": "external", "url": "redis://user:pw@host:6379"}},
        "spec.redis.url: 'redis://user:pw@host:6379' does not match",
    ),
    (
        {**LICENSE, "asr": {"tolerations": [{"effect": "Sometimes"}]}},
        "spec.asr.tolerations.0.effect: 'Sometimes' is not one of",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), SCHEMA_INVALID, ids=[e for _, e in SCHEMA_INVALID])
def test_invalid_crs_are_rejected_by_the_schema_and_the_operator(spec: dict[str, Any], expected: str) -> None:
    errors = _schema_errors(_cr(copy.deepcopy(spec)))
    assert any(error.startswith(expected) for error in errors), errors
    field = expected.split(":")[0]
    _, problem = validate("demo", spec)
    assert problem is not None and field.rsplit(".", 1)[0] in problem, problem


def test_unknown_fields_are_named_by_the_operator() -> None:
    # A real API server prunes unknown fields (with a warning); the operator names them if they get through.
    _, problem = validate("demo", {**LICENSE, "asr": {"replica": 2}})
    assert problem == "spec.asr.replica: Extra inputs are not permitted"


def test_requests_above_the_plans_limits_are_named() -> None:
    spec = parse_spec({**LICENSE, "asr": {"resources": {"requests": {"cpu": "12"}}}})
    assert resource_problems(make_plan(spec, []).resources) == [
        "spec.asr.resources: requests.cpu 12 exceeds limits.cpu 8 (set limits.cpu too)"
    ]
