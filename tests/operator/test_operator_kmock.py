"""The real operator (kopf) end to end against kmock's Kubernetes emulator."""

from __future__ import annotations

import kmock
import pytest

from .kmock_support import (
    CR_RESOURCE,
    NAMESPACE,
    declare_resources,
    eventually,
    license_secret,
    running_operator,
    speech_deployment,
)

pytestmark = pytest.mark.asyncio


async def test_create_renders_children_and_status(kmock: kmock.KubernetesEmulator) -> None:
    declare_resources(kmock)
    kmock.objects["v1/secrets", NAMESPACE, "oyez-license"] = license_secret()
    kmock.objects[CR_RESOURCE, NAMESPACE, "demo"] = speech_deployment()
    async with running_operator(kmock) as runner:
        api = await eventually(
            lambda: kmock.objects["apps/v1/deployments", NAMESPACE, "demo-api-server"], what="API Deployment"
        )
        status = await eventually(
            lambda: kmock.objects[CR_RESOURCE, NAMESPACE, "demo"].get("status"), what="status"
        )
    assert runner.exception is None, runner.output
    print(dict(api))
    print(dict(status))
