"""A small async Kubernetes REST client over aiohttp, with the credentials kopf logged in with.

Only what the reconciler needs: get, list, create, merge-patch, delete, for the kinds it manages.
Errors are :class:`KubeError` with the status code and the API server's message.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import kopf

# (apiVersion, kind) -> (plural, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Service"): ("services", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "PersistentVolumeClaim"): ("persistentvolumeclaims", True),
    ("v1", "Node"): ("nodes", False),
    ("v1", "Event"): ("events", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("apps/v1", "StatefulSet"): ("statefulsets", True),
    ("batch/v1", "Job"): ("jobs", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networkpolicies", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ("horizontalpodautoscalers", True),
    ("keda.sh/v1alpha1", "ScaledObject"): ("scaledobjects", True),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("servicemonitors", True),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): ("customresourcedefinitions", False),
    ("oyez.dev/v1alpha1", "SpeechDeployment"): ("speechdeployments", True),
}


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    plural, namespaced = RESOURCES[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = prefix + (f"/namespaces/{quote(namespace or '', safe='')}" if namespaced else "") + f"/{plural}"
    return path + (f"/{quote(name, safe='')}" if name else "")


def _material(path: Any, data: Any, scratch: Path, name: str) -> str | None:
    """A file path for PEM material given as a path or as (base64 or raw) data."""
    if path:
        return str(path)
    if not data:
        return None
    raw = data if isinstance(data, bytes) else data.encode()
    if not raw.lstrip().startswith(b"-----"):
        raw = base64.b64decode(raw)
    target = scratch / name
    target.write_bytes(raw)
    return str(target)


def _tls(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if not info.server.startswith("https"):
        return False
    if info.insecure:
        return False
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        ca = _material(info.ca_path, info.ca_data, scratch, "ca.pem")
        context = ssl.create_default_context(cafile=ca)
        cert = _material(info.certificate_path, info.certificate_data, scratch, "cert.pem")
        key = _material(info.private_key_path, info.private_key_data, scratch, "key.pem")
        if cert:
            context.load_cert_chain(cert, key)
    return context


class KubeClient:
    """One aiohttp session per operator process; ``close()`` on shutdown."""

    def __init__(self, info: kopf.ConnectionInfo, *, timeout_s: float = 30.0) -> None:
        self.server = info.server.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "oyez-operator"}
        headers.update(info.as_http_headers())
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            connector=aiohttp.TCPConnector(ssl=_tls(info)),
        )

    async def close(self) -> None:
        await self._session.close()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
    ) -> Any:
        if self._session.closed:
            raise aiohttp.ClientConnectionError("the operator is shutting down (client closed)")
        url = self.server + path + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self._session.request(method, url, data=data, headers=headers) as response:
            text = await response.text()
            if response.status >= 400:
                try:
                    message = json.loads(text).get("message") or text
                except (ValueError, AttributeError):
                    message = text
                raise KubeError(response.status, str(message)[:500])
            return json.loads(text) if text else None

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            result: dict[str, Any] = await self._request(
                "GET", resource_path(api_version, kind, namespace, name)
            )
        except KubeError as error:
            if error.status == 404:
                return None
            raise
        return result

    async def list(
        self, api_version: str, kind: str, namespace: str | None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        try:
            result = await self._request("GET", resource_path(api_version, kind, namespace), query=query)
        except KubeError as error:
            if error.status == 404:  # the kind is not served (an optional CRD)
                return []
            raise
        return list((result or {}).get("items") or [])

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        path = resource_path(body["apiVersion"], body["kind"], meta.get("namespace"))
        result: dict[str, Any] = await self._request("POST", path, body=body)
        return result

    async def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        status: bool = False,
    ) -> dict[str, Any]:
        path = resource_path(api_version, kind, namespace, name) + ("/status" if status else "")
        result: dict[str, Any] = await self._request(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )
        return result

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        try:
            await self._request(
                "DELETE",
                resource_path(api_version, kind, namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
        except KubeError as error:
            if error.status != 404:
                raise
