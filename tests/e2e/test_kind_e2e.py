"""End to end in a kind cluster: helm install, the CPU example CR, Ready, port-forward 7100,
real speech transcribed through the API with the expected WER, and clean removal.

Run with ``make e2e`` (docker, kind and kubectl needed; helm is fetched if absent). Set
OYEZ_E2E_KEEP=1 to leave the cluster running afterwards.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.e2e.kind_stack import APP_NAMESPACE, CHART_NAMESPACE, CHART_RELEASE, KindStack, StepFailed
from tests.integration.test_transcription import WER_LIMIT
from tests.speech_data import corpus_wer, load_speech_manifest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ready(kind_stack: KindStack) -> dict[str, Any]:
    try:
        return kind_stack.wait_ready()
    except StepFailed as failure:
        pytest.fail(f"{failure}\n\n{kind_stack.diagnostics()}")


def test_the_speechdeployment_becomes_ready(kind_stack: KindStack, ready: dict[str, Any]) -> None:
    status = ready["status"]
    assert status["phase"] == "Ready", status
    not_true = [c for c in status["conditions"] if c["status"] != "True"]
    assert not not_true, not_true
    name = ready["metadata"]["name"]
    worker = kind_stack.kubectl(
        "get", "deploy", f"{name}-asr-worker", "-n", APP_NAMESPACE,
        "-o", "jsonpath={.spec.template.spec.containers[0].image}",
    ).stdout  # fmt: skip
    assert "/asr-worker-cpu:" in worker, "a CPU tier runs the CPU worker image"


def test_speech_is_transcribed_through_the_port_forward(kind_stack: KindStack, ready: dict[str, Any]) -> None:
    clips = load_speech_manifest()
    hypotheses = []
    with kind_stack.port_forward() as base, httpx.Client(base_url=base, timeout=300) as client:
        anonymous = client.post("/v1/listen", content=clips[0].path.read_bytes(),
                                headers={"Content-Type": "audio/wav"})  # fmt: skip
        assert anonymous.status_code == 401, anonymous.text
        for clip in clips:
            response = client.post(
                "/v1/listen",
                content=clip.path.read_bytes(),
                headers={"Authorization": f"Token {kind_stack.license_key}", "Content-Type": "audio/wav"},
            )
            assert response.status_code == 200, (clip.id, response.text)
            assert response.headers["X-Request-ID"] == response.json()["request_id"]
            hypotheses.append(response.json()["text"])
    wer = corpus_wer([clip.text for clip in clips], hypotheses)
    print(f"kind e2e: tiny.en through the API on {len(clips)} real clips, WER {wer:.2%}")
    assert wer <= WER_LIMIT, list(zip([clip.id for clip in clips], hypotheses, strict=True))


def test_deleting_the_speechdeployment_removes_what_it_owns(
    kind_stack: KindStack, ready: dict[str, Any]
) -> None:
    name = ready["metadata"]["name"]
    selector = f"app.kubernetes.io/instance={name}"
    kind_stack.kubectl("delete", "speechdeployment", name, "-n", APP_NAMESPACE, "--wait", "--timeout=180s",
                       timeout=240)  # fmt: skip
    deadline = time.monotonic() + 180
    while True:
        left = kind_stack.kubectl(
            "get", "deploy,sts,svc,job,pvc", "-n", APP_NAMESPACE, "-l", selector, "-o", "name"
        ).stdout.split()
        if not left:
            break
        assert time.monotonic() < deadline, f"still present 180 s after delete: {left}"
        time.sleep(3)
    kind_stack.run([kind_stack.helm, "uninstall", CHART_RELEASE, "--namespace", CHART_NAMESPACE, "--wait"])
    operator = kind_stack.kubectl("get", "deploy", "-n", CHART_NAMESPACE, "-o", "name").stdout
    assert not operator.strip(), operator
