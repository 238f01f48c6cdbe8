"""`oyez operator` as users run it: a separate process, its liveness endpoint, a clean SIGTERM,
talking to kmock over HTTP. And the RBAC rules it prints (the chart renders the same file)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import httpx
import kmock
import pytest
import yaml

from oyez_operator.rbac import rbac_rules

from .kmock_support import (
    CR_RESOURCE,
    NAMESPACE,
    declare_resources,
    eventually,
    license_secret,
    speech_deployment,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _healthy(port: int) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{port}/healthz", timeout=1)).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.asyncio
async def test_operator_process_serves_liveness_reconciles_and_stops_on_sigterm(
    kmock: kmock.KubernetesEmulator,
) -> None:
    declare_resources(kmock)
    kmock.objects["v1/secrets", NAMESPACE, "oyez-license"] = license_secret()
    kmock.objects[CR_RESOURCE, NAMESPACE, "demo"] = speech_deployment()
    port = _free_port()
    env = {
        **os.environ,
        "OYEZ_OPERATOR_KUBE_API_URL": str(kmock.url).rstrip("/"),
        "OYEZ_OPERATOR_RECONCILE_INTERVAL_S": "1",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "oyez.cli",
            "operator",
            # not --namespace: then kopf lists /api/v1/namespaces, a path kmock 0.8 cannot parse
            "--all-namespaces",
            "--liveness-port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        healthy = False
        for _ in range(150):
            healthy = await _healthy(port)
            if healthy or process.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert healthy, "no /healthz 200 from the operator"

        def deployment() -> Any:
            obj = kmock.objects["apps/v1/deployments", NAMESPACE, "demo-api-server"]
            return None if obj.deleted else obj

        try:
            await eventually(deployment, what="the API Deployment from the operator process")
        except AssertionError:
            process.kill()
            raise AssertionError(process.communicate()[0][-5000:]) from None
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
    finally:
        if process.poll() is None:
            process.kill()
    output = process.stdout.read() if process.stdout else ""
    assert code == 0, output


def test_print_rbac_is_the_shared_rules_file() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "oyez.cli", "operator", "--print-rbac"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rules = yaml.safe_load(out)
    assert rules == rbac_rules()
    by_resource = {
        (group, resource): set(rule["verbs"])
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert by_resource[("", "secrets")] == {"get"}  # never list/watch Secrets
    assert ("", "pods") not in by_resource
    assert (
        "delete" not in by_resource[("", "persistentvolumeclaims")]
    )  # the model cache is never deleted by us
    assert by_resource[("oyez.dev", "speechdeployments/status")] == {"get", "patch"}
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]


@pytest.mark.parametrize(
    ("argv", "clusterwide", "namespaces", "liveness"),
    [
        (["operator"], True, [], "http://0.0.0.0:8080/healthz"),
        (["operator", "-A", "--liveness-port", "0"], True, [], None),
        (["operator", "-n", "speech", "-n", "asr"], False, ["speech", "asr"], "http://0.0.0.0:8080/healthz"),
    ],
)
def test_cli_scope_maps_to_kopf(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    clusterwide: bool,
    namespaces: list[str],
    liveness: str | None,
) -> None:
    import kopf

    from oyez import cli

    seen: dict[str, Any] = {}
    for key in ("OYEZ_OPERATOR_NAMESPACES", "OYEZ_OPERATOR_LIVENESS_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(kopf, "run", lambda **kwargs: seen.update(kwargs))
    assert cli.main(argv) == 0
    assert (seen["clusterwide"], list(seen["namespaces"]), seen["liveness_endpoint"]) == (
        clusterwide,
        namespaces,
        liveness,
    )
    assert seen["standalone"] is True


@pytest.mark.parametrize(
    ("name", "value"),
    [("OYEZ_OPERATOR_RECONCILE_INTERVAL_S", "-1"), ("OYEZ_OPERATOR_CAPACITY", '{"H100": 9}')],
)
def test_bad_operator_setting_is_a_clear_error(name: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "oyez.cli", "operator"],
        env={**os.environ, name: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert name in result.stderr and "INVALID_CONFIG" in result.stderr


def test_startup_sets_watch_timeouts_and_our_own_storage_prefixes() -> None:
    import kopf

    from oyez_operator import handlers

    settings = kopf.OperatorSettings()
    handlers.configure(settings=settings)
    assert settings.watching.server_timeout == handlers.SETTINGS.watch_server_timeout_s == 300
    assert settings.watching.client_timeout == 330 and settings.watching.connect_timeout == 30
    assert settings.persistence.finalizer == "oyez.dev/finalizer"
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
