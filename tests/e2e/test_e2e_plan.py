"""The kind e2e suite's pure parts, checked by the ordinary suite (no docker needed): it builds the
images the operator and chart actually pull, from the right Dockerfiles and targets; its CR is the
CPU example, valid against the CRD; and where docker or kind are missing, it skips and says why."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import jsonschema
import pytest
import yaml

from oyez import __version__
from oyez_operator.crd_model import parse_spec
from oyez_operator.crd_schema import crd_manifest
from oyez_operator.render_common import default_images
from tests.e2e.kind_stack import (
    APP_NAMESPACE,
    E2E_MODELS,
    KIND_CONFIG,
    ROOT,
    api_service_name,
    image_builds,
    missing_tools,
    speechdeployment_manifest,
)
from tests.images.test_dockerfiles import IMAGES, copied_from, stage_named, stage_of


def test_versions_agree_across_package_chart_and_images() -> None:
    chart = yaml.safe_load((ROOT / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"] == __version__


def test_it_builds_every_image_a_cpu_cluster_pulls() -> None:
    builds = {build.reference: build for build in image_builds()}
    defaults = default_images()
    chart_values = yaml.safe_load((ROOT / "values.yaml").read_text())
    operator_ref = f"{chart_values['operator']['image']['repository']}:{__version__}"
    assert set(builds) == {defaults.api_server, defaults.license_proxy, defaults.asr_worker_cpu, operator_ref}
    by_name = {image.name: image for image in IMAGES}
    for reference, build in builds.items():
        image = by_name[reference.rsplit("/", 1)[1].split(":")[0]]
        assert (build.dockerfile, build.target) == (image.dockerfile, image.target)
        command = build.command()
        assert command[:2] == ["docker", "build"] and command[-1] == "."
        assert (ROOT / command[command.index("-f") + 1]).is_file()


def test_the_worker_image_bakes_the_model_the_example_runs() -> None:
    (cpu,) = [image for image in IMAGES if image.name == "asr-worker-cpu"]
    models = stage_named(cpu, copied_from(stage_of(cpu))["/opt/oyez/models"])
    assert any(cmd.value[0].startswith("OYEZ_MODELS=") for cmd in models.all("ARG"))
    (worker_build,) = [build for build in image_builds() if build.target == "cpu"]
    assert dict(worker_build.build_args) == {"OYEZ_MODELS": E2E_MODELS}
    manifest = speechdeployment_manifest("ed25519:" + "A" * 43)
    assert manifest["spec"]["model"]["url"] == E2E_MODELS


def test_the_custom_resource_is_the_cpu_example_and_valid() -> None:
    manifest = speechdeployment_manifest("ed25519:JXHWri2ktGARllc5c0ckuSBonNUZstkT3lE5KunU5R4")
    assert manifest["metadata"]["namespace"] == APP_NAMESPACE
    schema = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.Draft4Validator(schema).validate(manifest)
    spec = parse_spec(manifest["spec"])
    assert spec.gpu.tier == "none"
    assert spec.license.public_key == manifest["spec"]["license"]["publicKey"]
    assert api_service_name(manifest) == f"{manifest['metadata']['name']}-api-server"


def test_the_kind_config_pins_its_node_image() -> None:
    config = yaml.safe_load(KIND_CONFIG.read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    (node,) = config["nodes"]
    assert node["image"].startswith("kindest/node:v1.")


def test_without_docker_or_kind_the_suite_skips_and_says_why() -> None:
    reason = missing_tools()
    if reason is None:
        pytest.skip("docker, kind and kubectl are all here: `make e2e` runs the suite for real")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "e2e", "-rs", "-p", "no:cacheprovider",
         "tests/e2e/test_kind_e2e.py"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 skipped" in done.stdout, done.stdout
    assert f"kind e2e needs docker, kind and kubectl: {reason}" in done.stdout
