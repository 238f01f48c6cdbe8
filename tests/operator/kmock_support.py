"""Running the real operator (kopf CLI in a thread) against kmock's Kubernetes emulator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
from kopf.testing import KopfRunner

NAMESPACE = "speech"
CR_RESOURCE = "oyez.dev/v1alpha1/speechdeployments"
LICENSE_SECRET = "oyez-license"


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    """Built-ins from kmock's bundled discovery, plus our CRD's resource (with /status)."""
    emulator.resources.load_bundled()
    emulator.resources[CR_RESOURCE] = kmock.ResourceInfo(
        kind="SpeechDeployment",
        singular="speechdeployment",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        subresources={"status"},
    )


def speech_deployment(name: str = "demo", uid: str = "uid-demo", **spec: Any) -> dict[str, Any]:
    """A CR body as the API server would store it (kmock fills neither uid nor generation)."""
    body_spec = {"license": {"secretRef": {"name": LICENSE_SECRET}}, "gpu": {"tier": "none"}, **spec}
    return {
        "apiVersion": "oyez.dev/v1alpha1",
        "kind": "SpeechDeployment",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": uid,
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": body_spec,
    }


def license_secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": LICENSE_SECRET, "namespace": NAMESPACE},
        "data": {"license-key": "b3llei1rZXk="},
    }


async def eventually(check: Callable[[], Any], *, timeout_s: float = 20.0, what: str = "condition") -> Any:
    """Poll ``check`` (asyncio-friendly: kmock serves on this loop) until it returns a truthy value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(KeyError, LookupError, TypeError):
            last = check()
            if last:
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


@contextlib.asynccontextmanager
async def running_operator(emulator: kmock.KubernetesEmulator) -> AsyncIterator[KopfRunner]:
    """The operator, as `oyez operator` runs it, talking to ``emulator`` over HTTP."""
    env = {
        "OYEZ_OPERATOR_KUBE_API_URL": str(emulator.url).rstrip("/"),
        "OYEZ_OPERATOR_LIVENESS_PORT": "0",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    runner = KopfRunner(
        ["run", "--standalone", "--all-namespaces", "-m", "oyez_operator.handlers"],
        timeout=30,
    )
    runner.__enter__()
    try:
        yield runner
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
