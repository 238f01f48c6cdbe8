"""images/docker-compose.yml, checked without a Docker engine: the Compose Specification schema
(check-jsonschema's vendored copy), then what the file must say: the four services of the brief,
their start order and health conditions, the GPU reservation and the CPU profile, the model cache
volume, the same images and targets as the Dockerfiles, and no secret written into the file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from oyez import constants as c
from oyez_operator.render_common import APP_USER, REDIS_USER, default_images
from tests.images.test_dockerfiles import IMAGES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "images" / "docker-compose.yml"
BIN = Path(sys.executable).parent
OYEZ_SERVICES = ("license-proxy", "asr-worker", "asr-worker-cpu", "api-server")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return spec["services"]


def healthy_dependencies(service: dict[str, Any]) -> dict[str, bool]:
    """name -> required, for each dependency the service waits on until healthy."""
    depends = service.get("depends_on", {})
    assert isinstance(depends, dict), "dependencies name their condition"
    return {
        name: rule.get("required", True)
        for name, rule in depends.items()
        if rule["condition"] == "service_healthy"
    }


def test_the_file_follows_the_compose_specification() -> None:
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_redis_is_checked_with_redis_cli_ping(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert redis["image"] == default_images().redis, "the same Redis the operator runs"
    assert redis["user"].split(":")[0] == str(REDIS_USER)
    assert "--appendonly" in redis["command"], "durable async jobs survive a restart"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_services_start_in_dependency_order_once_healthy(services: dict[str, Any]) -> None:
    assert set(services) == {"redis", *OYEZ_SERVICES}
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", f"{name} has an exec-form healthcheck"
    assert healthy_dependencies(services["license-proxy"]) == {"redis": True}
    for worker in ("asr-worker", "asr-worker-cpu"):
        assert healthy_dependencies(services[worker]) == {"redis": True, "license-proxy": True}
    # The API waits for whichever worker its profile started.
    assert healthy_dependencies(services["api-server"]) == {
        "redis": True,
        "license-proxy": True,
        "asr-worker": False,
        "asr-worker-cpu": False,
    }


def test_the_gpu_worker_reserves_a_gpu_and_the_cpu_worker_is_a_profile(services: dict[str, Any]) -> None:
    gpu, cpu = services["asr-worker"], services["asr-worker-cpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1
    assert gpu["environment"][c.ENV_REQUIRE_GPU] == "true"
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    assert "deploy" not in cpu
    assert cpu["environment"][c.ENV_REQUIRE_GPU] == "false"
    for worker in (gpu, cpu):
        assert "models:/models" in worker["volumes"]
        assert worker["environment"][c.ENV_MODEL_CACHE_DIR] == "/models"
        # Registered under a name the API can reach on the compose network.
        assert worker["environment"][c.ENV_WORKER_ADVERTISE_ADDRESS].endswith(f":{c.ASR_GRPC_PORT}")


def test_each_service_builds_its_dockerfile_and_target(services: dict[str, Any]) -> None:
    for image in IMAGES:
        if image.name == "operator":
            continue  # the operator is for Kubernetes; compose runs the components directly
        service = services[image.name]
        build = service["build"]
        assert (ROOT / "images" / build["context"]).resolve() == ROOT
        assert build["dockerfile"] == f"images/{image.dockerfile}"
        assert build.get("target") == image.target
        assert service["image"].startswith(f"ghcr.io/oyez-dev/{image.name}:")


@pytest.mark.parametrize("name", OYEZ_SERVICES)
def test_oyez_containers_are_locked_down(services: dict[str, Any], name: str) -> None:
    service = services[name]
    assert service["user"] == f"{APP_USER}:{APP_USER}"
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert any(mount.startswith("/tmp") for mount in service["tmpfs"])


def test_no_secret_is_written_into_the_file(services: dict[str, Any]) -> None:
    for name in OYEZ_SERVICES:
        key = services[name]["environment"][c.ENV_LICENSE_KEY]
        assert re.fullmatch(r"\$\{OYEZ_LICENSE_KEY:\?[^}]+\}", key), f"{name}: the key comes from the host"


def test_the_api_is_published_on_loopback_by_default(services: dict[str, Any]) -> None:
    (port,) = services["api-server"]["ports"]
    assert port == "${OYEZ_API_BIND:-127.0.0.1}:7100:7100"
    assert not any("ports" in services[name] for name in services if name != "api-server")
