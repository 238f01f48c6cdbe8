"""The CRD manifest, generated from :mod:`.crd_model` (``oyez operator crd`` prints it).

Pydantic's JSON Schema is turned into a Kubernetes *structural* schema: references inlined,
``X | None`` collapsed to ``X``, draft-2020 ``exclusiveMinimum: n`` rewritten to the OpenAPI v3
``minimum: n, exclusiveMinimum: true``, ``additionalProperties: false`` dropped (the API server
prunes unknown fields), and ``default: {}`` put on every sub-object that has defaults inside so
``kubectl get -o yaml`` shows the effective spec.
"""

from __future__ import annotations

import copy
from typing import Any

from .crd_model import (
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    SpeechDeploymentSpec,
)
from .status_model import CONDITION_TYPES, PHASES


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return {key: _resolve(value, defs) for key, value in node.items()}


def _collapse_optional(node: dict[str, Any]) -> dict[str, Any]:
    variants = node.get("anyOf")
    if not variants or node.get("x-kubernetes-int-or-string"):
        return node
    non_null = [v for v in variants if v.get("type") != "null"]
    if len(non_null) != 1 or len(non_null) == len(variants):
        return node
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if rest.get("default", "absent") is None:
        del rest["default"]
    return {**non_null[0], **rest}


def _has_defaults_inside(node: dict[str, Any]) -> bool:
    return any(
        "default" in prop or _has_defaults_inside(prop) for prop in node.get("properties", {}).values()
    )


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = _collapse_optional(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" or (key == "additionalProperties" and value is False):
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        out[key] = _structural(value)
    if "exclusiveMinimum" in out and not isinstance(out["exclusiveMinimum"], bool):
        out["minimum"], out["exclusiveMinimum"] = out["exclusiveMinimum"], True
    if "exclusiveMaximum" in out and not isinstance(out["exclusiveMaximum"], bool):
        out["maximum"], out["exclusiveMaximum"] = out["exclusiveMaximum"], True
    if out.get("type") == "object" and "properties" in out:
        required = set(out.get("required", []))
        for name, prop in out["properties"].items():
            if name not in required and "default" not in prop and _has_defaults_inside(prop):
                prop["default"] = {}
    return out


def spec_schema() -> dict[str, Any]:
    raw = SpeechDeploymentSpec.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _structural(_resolve(raw, defs))
    assert isinstance(schema, dict)
    return schema


def _condition_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string", "enum": list(CONDITION_TYPES)},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string", "maxLength": 1024},
            "message": {"type": "string", "maxLength": 32768},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer", "minimum": 0},
        },
    }


def _component_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"ready": {"type": "integer"}, "desired": {"type": "integer"}},
    }


def status_schema() -> dict[str, Any]:
    components = ("apiServer", "asrWorker", "licenseProxy", "redis")
    return {
        "type": "object",
        "properties": {
            "phase": {"type": "string", "enum": list(PHASES)},
            "observedGeneration": {"type": "integer", "minimum": 0},
            "message": {"type": "string"},
            "ready": {"type": "string", "description": "Ready worker pods / desired, e.g. 2/2."},
            "endpoint": {"type": "string", "description": "In-cluster URL of the API."},
            "conditions": {
                "type": "array",
                "items": _condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "resolved": {
                "type": "object",
                "properties": {
                    "plan": {"type": "string"},
                    "tier": {"type": "string"},
                    "tierReason": {"type": "string"},
                    "workers": {"type": "integer"},
                    "workersReason": {"type": "string"},
                    "scaler": {"type": "string", "enum": ["none", "hpa", "keda"]},
                },
            },
            "components": {
                "type": "object",
                "properties": {name: _component_schema() for name in components},
            },
        },
    }


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "GPU", "type": "string", "jsonPath": ".status.resolved.tier"},
    {"name": "Workers", "type": "integer", "jsonPath": ".status.resolved.workers"},
    {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd_manifest() -> dict[str, Any]:
    """The ``CustomResourceDefinition`` object for ``speechdeployments.oyez.dev``."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "oyez", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["oyez", "all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Speech-to-text: API, ASR workers, license proxy, Redis.",
                            "required": ["spec"],
                            "x-kubernetes-validations": [
                                {
                                    "rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
                                    "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters "
                                    "(child object names append up to 23)",
                                }
                            ],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def values_spec_schema() -> dict[str, Any]:
    """The chart's ``speechDeployment.spec`` schema (values.schema.json): the CRD's spec without
    ``license`` (the chart fills it from ``speechDeployment.license``), as plain JSON Schema, closed
    to unknown fields so ``helm install`` names a misspelt key instead of the API server pruning it."""
    schema = copy.deepcopy(spec_schema())
    schema["properties"].pop("license")
    schema["required"] = [name for name in schema.get("required", []) if name != "license"]
    if not schema["required"]:
        del schema["required"]
    closed: dict[str, Any] = _closed(schema)
    return closed


def _closed(node: Any) -> Any:
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _closed(value) for key, value in node.items() if not key.startswith("x-kubernetes-")}
    # OpenAPI v3 (draft 4) writes exclusive bounds as booleans beside minimum/maximum; draft 7 as numbers.
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(exclusive) is True:
            out[exclusive] = out.pop(bound)
        elif out.get(exclusive) is False:
            del out[exclusive]
    if "properties" in out and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out
