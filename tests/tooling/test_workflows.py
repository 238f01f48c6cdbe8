"""The GitHub workflows and the Makefile: valid against the GitHub workflow schema (with a timeout
on every job), running the README's test command and the kind e2e suite, and building every image."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.images.test_dockerfiles import IMAGES

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def make_target(name: str) -> list[str]:
    """The recipe lines of one Makefile target."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def run_steps(workflow: Path) -> list[str]:
    spec = yaml.safe_load(workflow.read_text())
    return [step["run"] for job in spec["jobs"].values() for step in job["steps"] if "run" in step]


@pytest.mark.parametrize("schema", ["vendor.github-workflows", "custom.github-workflows-require-timeout"])
def test_workflows_follow_the_schema(schema: str) -> None:
    assert WORKFLOWS
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", schema, *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_workflow_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "./scripts/test.sh" in readme
    assert any(step.startswith("./scripts/test.sh") for step in run_steps(ROOT / ".github/workflows/ci.yml"))
    assert (ROOT / ".ci" / "run").read_text().count("./scripts/test.sh") == 1


def test_e2e_workflow_runs_the_kind_suite_through_make() -> None:
    assert "make e2e" in run_steps(ROOT / ".github/workflows/e2e.yml")
    recipe = " ".join(make_target("e2e"))
    assert "-m pytest -m e2e tests/e2e" in recipe


def test_make_images_builds_every_image() -> None:
    recipe = make_target("images")
    for image in IMAGES:
        pattern = rf"-f images/{re.escape(image.dockerfile)}\b.*-t \$\(REGISTRY\)/{image.name}:\$\(VERSION\)"
        matching = [line for line in recipe if re.search(pattern, line)]
        assert len(matching) == 1, image.name
        if image.target:
            assert f"--target {image.target}" in matching[0]
