"""The product in a kind cluster, set up the way a user does it, and taken down again.

Steps (each a real command: docker, kind, kubectl, helm):
1. build the images from images/*.Dockerfile, tagged as the operator and chart pull them;
2. create the kind cluster (tests/e2e/kind-config.yaml) and load the images (and Redis) into it;
3. ``helm install`` the chart at the repository root (operator + CRD);
4. make a license: a fresh issuer key pair and a key signed by it (``oyez license``), stored in a
   Secret; the SpeechDeployment trusts that issuer's public key;
5. apply examples/kind-cpu.yaml and wait for the CR's ``Ready`` condition;
6. ``kubectl port-forward`` the API Service's port 7100.

The pure parts (the build commands, the manifests) are functions checked by the ordinary suite
(tests/e2e/test_e2e_plan.py); the rest runs only under ``make e2e``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from oyez import __version__
from oyez_operator.render_common import default_images
from tests.service_process import free_port

ROOT = Path(__file__).resolve().parents[2]
KIND_CONFIG = ROOT / "tests" / "e2e" / "kind-config.yaml"
EXAMPLE_CR = ROOT / "examples" / "kind-cpu.yaml"
CLUSTER = "oyez-e2e"
CHART_RELEASE = "oyez"
CHART_NAMESPACE = "oyez-system"
APP_NAMESPACE = "oyez-e2e"
LICENSE_SECRET = "oyez-license"
LICENSE_FEATURES = ("batch", "streaming", "timestamps", "punctuation")
# The CPU example runs whisper-tiny.en: bake only that into the e2e worker image (faster builds).
E2E_MODELS = "whisper-tiny.en"
READY_TIMEOUT_S = 900


@dataclass(frozen=True)
class ImageBuild:
    reference: str
    dockerfile: str
    target: str | None = None
    build_args: tuple[tuple[str, str], ...] = ()

    def command(self) -> list[str]:
        command = ["docker", "build", "-f", f"images/{self.dockerfile}", "-t", self.reference]
        if self.target:
            command += ["--target", self.target]
        for key, value in self.build_args:
            command += ["--build-arg", f"{key}={value}"]
        return [*command, "."]


def image_builds(registry: str = "ghcr.io/oyez-dev", tag: str = __version__) -> list[ImageBuild]:
    """The images a CPU-only cluster runs: what the operator's defaults and the chart's values name."""
    images = default_images(registry, tag)
    return [
        ImageBuild(f"{registry}/operator:{tag}", "operator.Dockerfile"),
        ImageBuild(images.api_server, "api-server.Dockerfile"),
        ImageBuild(images.license_proxy, "license-proxy.Dockerfile"),
        ImageBuild(images.asr_worker_cpu, "asr-worker.Dockerfile", "cpu", (("OYEZ_MODELS", E2E_MODELS),)),
    ]


def speechdeployment_manifest(public_key: str) -> dict[str, Any]:
    """examples/kind-cpu.yaml in the e2e namespace, trusting the e2e issuer's public key."""
    manifest: dict[str, Any] = copy.deepcopy(yaml.safe_load(EXAMPLE_CR.read_text()))
    manifest["metadata"]["namespace"] = APP_NAMESPACE
    manifest["spec"]["license"]["publicKey"] = public_key
    return manifest


def api_service_name(manifest: dict[str, Any]) -> str:
    return f"{manifest['metadata']['name']}-api-server"


class StepFailed(RuntimeError):
    pass


class KindStack:
    """Runs the steps, logging each command; ``diagnostics()`` collects what a failure needs."""

    def __init__(self, workdir: Path, helm: str, *, keep: bool = False) -> None:
        self.workdir = workdir
        self.helm = helm
        self.keep = keep
        self.kubeconfig = workdir / "kubeconfig"
        self.license_key = ""
        self.manifest: dict[str, Any] = {}

    # --- commands -------------------------------------------------------------------------------
    def run(
        self, command: list[str], *, input_text: str | None = None, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        shown = " ".join(command)
        print(f"+ {shown}", file=sys.stderr, flush=True)
        done = subprocess.run(
            command, input=input_text, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
        )
        if check and done.returncode != 0:
            output = f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
            raise StepFailed(f"{shown} exited {done.returncode}:\n{output}")
        return done

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(["kubectl", *args], **kwargs)

    # --- steps ----------------------------------------------------------------------------------
    def build_images(self) -> None:
        for build in image_builds():
            self.run(build.command(), timeout=3600)

    def create_cluster(self) -> None:
        existing = self.run(["kind", "get", "clusters"]).stdout.split()
        if CLUSTER not in existing:
            create = ["kind", "create", "cluster", "--config", str(KIND_CONFIG), "--wait", "180s"]
            self.run(create, timeout=600)
        self.run(["kind", "export", "kubeconfig", "--name", CLUSTER])

    def load_images(self) -> None:
        redis = default_images().redis
        self.run(["docker", "pull", redis], timeout=600)
        for reference in [build.reference for build in image_builds()] + [redis]:
            self.run(["kind", "load", "docker-image", reference, "--name", CLUSTER], timeout=900)

    def install_chart(self) -> None:
        self.run(
            [self.helm, "upgrade", "--install", CHART_RELEASE, str(ROOT), "--namespace", CHART_NAMESPACE,
             "--create-namespace", "--wait", "--timeout", "5m"],
            timeout=400,
        )  # fmt: skip

    def create_license(self) -> None:
        issuer_dir = self.workdir / "issuer"
        oyez = [sys.executable, "-m", "oyez.cli"]
        self.run([*oyez, "license", "keygen", "--out-dir", str(issuer_dir), "--force"])
        features = [arg for feature in LICENSE_FEATURES for arg in ("--feature", feature)]
        issued = self.run(
            [*oyez, "license", "issue", "--customer", "kind-e2e", "--days", "1", *features,
             "--key", str(issuer_dir / "issuer.key")]
        )  # fmt: skip
        self.license_key = issued.stdout.strip().splitlines()[-1]
        public_key = (issuer_dir / "issuer.pub").read_text().strip()
        self.manifest = speechdeployment_manifest(public_key)
        self.kubectl("create", "namespace", APP_NAMESPACE, check=False)
        secret = self.kubectl(
            "create", "secret", "generic", LICENSE_SECRET, "-n", APP_NAMESPACE,
            "--from-literal", f"license-key={self.license_key}", "--dry-run=client", "-o", "yaml",
        )  # fmt: skip
        self.kubectl("apply", "-f", "-", input_text=secret.stdout)

    def apply_speechdeployment(self) -> None:
        self.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(self.manifest))

    def wait_ready(self) -> dict[str, Any]:
        name = self.manifest["metadata"]["name"]
        self.kubectl(
            "wait", "-n", APP_NAMESPACE, f"speechdeployment/{name}", "--for=condition=Ready",
            f"--timeout={READY_TIMEOUT_S}s",
            timeout=READY_TIMEOUT_S + 60,
        )  # fmt: skip
        got = self.kubectl("get", "-n", APP_NAMESPACE, f"speechdeployment/{name}", "-o", "yaml")
        resource: dict[str, Any] = yaml.safe_load(got.stdout)
        return resource

    @contextlib.contextmanager
    def port_forward(self) -> Iterator[str]:
        """``kubectl port-forward svc/<name>-api-server <local>:7100``; yields the base URL."""
        import httpx

        port = free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        command = ["kubectl", "port-forward", "-n", APP_NAMESPACE, f"svc/{api_service_name(self.manifest)}",
                   f"{port}:7100"]  # fmt: skip
        print(f"+ {' '.join(command)}", file=sys.stderr, flush=True)
        forward = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if forward.poll() is not None:
                    said = forward.stderr.read().decode() if forward.stderr else ""
                    raise StepFailed(f"port-forward exited: {said}")
                try:
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise StepFailed(f"{base}/healthz did not answer 200 within 60 s")
                time.sleep(1)
            yield base
        finally:
            forward.terminate()
            forward.wait(timeout=10)

    def up(self) -> None:
        self.build_images()
        self.create_cluster()
        self.load_images()
        self.install_chart()
        self.create_license()
        self.apply_speechdeployment()

    def diagnostics(self) -> str:
        """Everything worth reading when a step failed: objects, events, the operator's log."""
        parts = []
        for args in (
            ["get", "speechdeployments,deploy,sts,job,pods,svc,pvc", "-A", "-o", "wide"],
            ["get", "speechdeployments", "-A", "-o", "yaml"],
            ["get", "events", "-A", "--sort-by=.lastTimestamp"],
            ["logs", "-n", CHART_NAMESPACE, "deploy/" + CHART_RELEASE + "-operator", "--tail=200"],
            ["logs", "-n", APP_NAMESPACE, "-l", "app.kubernetes.io/managed-by=oyez-operator", "--tail=50",
             "--all-containers", "--prefix"],
        ):  # fmt: skip
            done = self.kubectl(*args, check=False, timeout=60)
            parts.append(f"$ kubectl {' '.join(args)}\n{done.stdout}{done.stderr}")
        return "\n".join(parts)

    def down(self) -> None:
        if self.keep:
            print(f"OYEZ_E2E_KEEP: cluster {CLUSTER} left running", file=sys.stderr)
            return
        self.run(["kind", "delete", "cluster", "--name", CLUSTER], check=False, timeout=300)


def missing_tools() -> str | None:
    """Why the e2e suite cannot run here, or None when docker (with a daemon), kind and kubectl exist."""
    if shutil.which("docker") is None:
        return "docker is not installed"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
        return "the docker daemon is not reachable (docker info failed)"
    for tool in ("kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    return None
