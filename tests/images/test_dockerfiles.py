"""images/*.Dockerfile, checked without a Docker engine (our CI machines have none; the GitHub
workflow builds them for real in the kind e2e job).

The Dockerfiles are parsed with the official BuildKit parser (the ``dockerfile`` package) and
linted with hadolint. The checks: each image's entrypoint is a real ``oyez`` command and the same
command the operator or the chart runs in that image; the runtime stage copies its virtual
environment from a stage that installs only the component's extras; the final stage runs as the
non-root user the pod security contexts expect, has a HEALTHCHECK, and installs no build tools; base
images are pinned; the build context (.dockerignore + COPY lines) holds enough to install and run
the component.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml

from oyez import constants as c
from oyez.cli import build_parser
from oyez_operator.crd_model import parse_spec
from oyez_operator.planning import make_plan
from oyez_operator.render import render_all
from oyez_operator.render_common import APP_USER, RenderContext, default_images
from oyez_operator.render_storage import MODEL_MOUNT

ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = ROOT / "images"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Image:
    name: str  # the image name under the registry (render_common.default_images)
    dockerfile: str
    target: str | None  # None: the last stage
    extras: frozenset[str]
    command: tuple[str, ...]
    package: str  # the component's import package
    ports: tuple[int, ...]


IMAGES = (
    Image("api-server", "api-server.Dockerfile", None, frozenset({"api"}), ("oyez", "api"), "api_server",
          (c.API_PORT,)),
    # s3 is the worker's own MODEL_URL fetcher (s3:// bundles), not another component.
    Image("asr-worker", "asr-worker.Dockerfile", "gpu", frozenset({"worker-gpu", "s3"}), ("oyez", "worker"),
          "asr_worker", (c.ASR_GRPC_PORT, c.ASR_HTTP_PORT)),
    Image("asr-worker-cpu", "asr-worker.Dockerfile", "cpu", frozenset({"worker", "s3"}), ("oyez", "worker"),
          "asr_worker", (c.ASR_GRPC_PORT, c.ASR_HTTP_PORT)),
    Image("license-proxy", "license-proxy.Dockerfile", None, frozenset({"license"}),
          ("oyez", "license-proxy"), "license_proxy", (c.LICENSE_PROXY_PORT,)),
    Image("operator", "operator.Dockerfile", None, frozenset({"operator"}), ("oyez", "operator"),
          "oyez_operator", (8080,)),
)  # fmt: skip
DOCKERFILES = sorted({image.dockerfile for image in IMAGES})
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|cmake|git|curl|wget|python3-pip|python3-dev)\b")
PIP_EXTRAS = re.compile(r"pip install [^\n]*?\"\.\[([a-z0-9,-]+)\]\"")


@dataclass
class Stage:
    name: str
    base: str
    commands: list[Any]

    def all(self, cmd: str) -> list[Any]:
        return [command for command in self.commands if command.cmd == cmd]


@cache
def stages(filename: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages in order) of one Dockerfile."""
    global_args: dict[str, str] = {}
    parsed: list[Stage] = []
    for command in dockerfile.parse_file(str(IMAGES_DIR / filename)):
        if command.cmd == "FROM":
            value = command.value
            name = value[2] if len(value) == 3 and value[1].upper() == "AS" else str(len(parsed))
            parsed.append(Stage(name, value[0], []))
        elif parsed:
            parsed[-1].commands.append(command)
        elif command.cmd == "ARG":
            key, _, default = command.value[0].partition("=")
            global_args[key] = default.strip('"')
    return global_args, parsed


def stage_of(image: Image) -> Stage:
    _, parsed = stages(image.dockerfile)
    if image.target is None:
        return parsed[-1]
    (stage,) = [stage for stage in parsed if stage.name == image.target]
    return stage


def stage_named(image: Image, name: str) -> Stage:
    _, parsed = stages(image.dockerfile)
    (stage,) = [stage for stage in parsed if stage.name == name]
    return stage


def copied_from(stage: Stage) -> dict[str, str]:
    """destination path -> source stage, for each COPY --from in the stage."""
    copies = {}
    for command in stage.all("COPY"):
        sources = [flag.split("=", 1)[1] for flag in command.flags if flag.startswith("--from=")]
        if sources:
            copies[command.value[-1]] = sources[0]
    return copies


def installed_extras(stage: Stage) -> set[str]:
    extras: set[str] = set()
    for command in stage.all("RUN"):
        for match in PIP_EXTRAS.finditer(command.value[0]):
            extras.update(match.group(1).split(","))
    return extras


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for command in stage.all("ENV"):
        values = list(command.value)
        env.update(zip(values[::2], values[1::2], strict=True))
    return env


def test_every_image_the_operator_and_chart_pull_has_a_dockerfile() -> None:
    defaults = default_images()
    pulled = {
        ref.rsplit("/", 1)[1].split(":")[0]
        for ref in (defaults.api_server, defaults.asr_worker, defaults.asr_worker_cpu, defaults.license_proxy)
    }
    chart_values = yaml.safe_load((ROOT / "values.yaml").read_text())
    pulled.add(chart_values["operator"]["image"]["repository"].rsplit("/", 1)[1])
    assert pulled == {image.name for image in IMAGES}
    assert {path.name for path in IMAGES_DIR.glob("*.Dockerfile")} == set(DOCKERFILES)


@pytest.mark.parametrize("filename", DOCKERFILES)
def test_hadolint_is_clean(filename: str) -> None:
    config = IMAGES_DIR / ".hadolint.yaml"
    result = subprocess.run(
        [str(BIN / "hadolint"), "--config", str(config), str(IMAGES_DIR / filename)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_the_entrypoint_is_a_real_oyez_command(image: Image) -> None:
    (entrypoint,) = stage_of(image).all("ENTRYPOINT")
    assert entrypoint.json, "exec form, so SIGTERM reaches oyez (graceful drain) and not a shell"
    assert tuple(entrypoint.value) == image.command
    args = build_parser().parse_args(list(image.command[1:]))
    assert callable(args.handler)
    result = subprocess.run(
        [sys.executable, "-m", "oyez.cli", *image.command[1:], "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert not stage_of(image).all("CMD"), "the entrypoint alone says what the image runs"


def operator_rendered_commands(tier: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """container name -> (image, command) as the operator renders them for a CPU or GPU tier."""
    spec = parse_spec({"license": {"secretRef": {"name": "lic"}}, "gpu": {"tier": tier}})
    ctx = RenderContext(name="demo", namespace="speech", uid="u-1", spec=spec, plan=make_plan(spec, []))
    found = {}
    for desired in render_all(ctx):
        template = desired.body.get("spec", {}).get("template", {})
        for container in template.get("spec", {}).get("containers", []):
            found[container["name"]] = (container["image"], tuple(container.get("command", ())))
    return found


@pytest.mark.parametrize("tier", ["none", "L4"])
def test_the_operator_runs_each_image_with_its_entrypoint(tier: str) -> None:
    by_name = {image.name: image for image in IMAGES}
    rendered = operator_rendered_commands(tier)
    checked = set()
    for container, (reference, command) in rendered.items():
        image_name = reference.rsplit("/", 1)[1].split(":")[0]
        if image_name not in by_name:
            continue  # redis: the official image
        if container == "model-prefetch":
            # The prefetch Job runs another real command in the worker image.
            assert image_name == ("asr-worker-cpu" if tier == "none" else "asr-worker")
            assert command == ("oyez", "model", "fetch")
            assert callable(build_parser().parse_args(list(command[1:])).handler)
            continue
        assert command == by_name[image_name].command, container
        checked.add(image_name)
    expected_worker = "asr-worker-cpu" if tier == "none" else "asr-worker"
    assert checked == {"api-server", "license-proxy", expected_worker}


def test_the_chart_runs_the_operator_image_with_its_entrypoint() -> None:
    template = (ROOT / "templates" / "operator-deployment.yaml").read_text()
    (operator,) = [image for image in IMAGES if image.name == "operator"]
    assert f"command: {list(operator.command)}".replace("'", '"') in template


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_the_runtime_stage_gets_only_its_components_extras(image: Image) -> None:
    final = stage_of(image)
    copies = copied_from(final)
    assert set(copies) <= {"/opt/oyez/venv", "/opt/oyez/models"}, copies
    venv_stage = stage_named(image, copies["/opt/oyez/venv"])
    assert installed_extras(venv_stage) == image.extras
    assert not installed_extras(final), "nothing is pip-installed in the runtime stage"
    if "/opt/oyez/models" in copies:
        # The converter (torch, onnx: the `convert` extra) stays in the models stage.
        models = stage_named(image, copies["/opt/oyez/models"])
        assert "convert" in installed_extras(models)
        assert models.name not in {stage.name for stage in [final, venv_stage]}
    # The image's own source: oyez (shared core) and the component package, nothing else.
    sources = {command.value[0].rstrip("/") for command in venv_stage.all("COPY") if not command.flags}
    assert sources == {"pyproject.toml", "oyez", image.package}


@pytest.mark.parametrize("image", IMAGES, ids=lambda image: image.name)
def test_the_runtime_stage_is_non_root_pinned_and_health_checked(image: Image) -> None:
    global_args, _ = stages(image.dockerfile)
    final = stage_of(image)
    base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], final.base)
    repository, _, tag = base.rpartition(":")
    assert repository and re.search(r"\d+\.\d+", tag), f"{base}: pin the base image to a version"
    (user,) = final.all("USER")
    assert user.value[0] == f"{APP_USER}:{APP_USER}", "the uid the operator's pod securityContext runs as"
    (healthcheck,) = final.all("HEALTHCHECK")
    assert healthcheck.value[0] == "CMD" and healthcheck.json
    assert any(f"'{port}'" in " ".join(healthcheck.value) for port in image.ports)
    for command in final.all("RUN"):
        assert not BUILD_TOOLS.search(command.value[0]), command.value[0]
    # The root filesystem is read-only in pods and in compose: whatever writes under $HOME writes
    # to the /tmp emptyDir / tmpfs instead of failing.
    assert env_of(final)["HOME"] == "/tmp"
    exposed = {int(port) for command in final.all("EXPOSE") for port in command.value}
    assert exposed == set(image.ports)


@pytest.mark.parametrize("image", [i for i in IMAGES if i.package == "asr_worker"], ids=lambda i: i.name)
def test_worker_images_carry_the_default_models_and_the_operators_cache_path(image: Image) -> None:
    final = stage_of(image)
    env = env_of(final)
    assert env[c.ENV_OYEZ_BUNDLED_MODELS_DIR] == "/opt/oyez/models"
    assert env[c.ENV_MODEL_CACHE_DIR] == MODEL_MOUNT
    assert env[c.ENV_PORT] == str(c.ASR_GRPC_PORT)
    models = stage_named(image, copied_from(final)["/opt/oyez/models"])
    (baked,) = [cmd.value[0] for cmd in models.all("ARG") if cmd.value[0].startswith("OYEZ_MODELS=")]
    baked_models = set(baked.partition("=")[2].strip('"').split())
    crd_default = parse_spec({"license": {"secretRef": {"name": "x"}}}).model.url
    kind_example = yaml.safe_load((ROOT / "examples" / "kind-cpu.yaml").read_text())["spec"]["model"]["url"]
    assert {crd_default, kind_example, env[c.ENV_MODEL_URL]} <= baked_models
    if image.target == "gpu":
        assert env[c.ENV_REQUIRE_GPU] == "true"


def dockerignore_allows(relative: str) -> bool:
    """The .dockerignore rules (last match wins), enough for the patterns this repository uses."""
    allowed = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        any_depth = pattern.startswith("**/") and re.fullmatch(
            pattern[3:].replace(".", r"\.").replace("*", "[^/]*"), Path(relative).name
        )
        if pattern == "**" or relative == pattern or relative.startswith(pattern + "/") or any_depth:
            allowed = negate
    return allowed


@pytest.mark.parametrize("image", [IMAGES[0], IMAGES[2], IMAGES[3], IMAGES[4]], ids=lambda i: i.name)
def test_the_build_context_installs_and_runs_the_component(image: Image, tmp_path: Path) -> None:
    """Lay out what the venv stage's COPY lines take from the context (through .dockerignore), build
    and install the package from it alone, and run the entrypoint's --help from outside the repo."""
    context = tmp_path / "src"
    context.mkdir()
    venv_stage = stage_named(image, copied_from(stage_of(image))["/opt/oyez/venv"])
    for command in venv_stage.all("COPY"):
        for source in command.value[:-1]:
            path = ROOT / source.rstrip("/")
            assert dockerignore_allows(source.rstrip("/")), f"{source} is excluded by .dockerignore"
            if path.is_dir():
                shutil.copytree(
                    path, context / source.rstrip("/"), ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
            else:
                shutil.copy2(path, context / source)
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-compile", "--target", str(target), str(context)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    assert (target / image.package / "__init__.py").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run(
        [sys.executable, "-c", f"import {image.package}, oyez.cli, sys; print({image.package}.__file__); "
         f"sys.argv = ['oyez', *{list(image.command[1:])!r}, '--help']; oyez.cli.main()"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].startswith(str(target)), "imported from the installed context"
    assert "usage: oyez" in run.stdout


def test_dockerignore_keeps_the_context_small() -> None:
    for kept in ("pyproject.toml", "README.md", "oyez/cli.py", "asr_worker/cli.py"):
        assert dockerignore_allows(kept), kept
    for dropped in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "bench/run.py", ".cache/x",
                    "oyez/__pycache__/cli.cpython-311.pyc"):  # fmt: skip
        assert not dockerignore_allows(dropped), dropped
