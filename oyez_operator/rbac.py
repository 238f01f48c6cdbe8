"""The operator's RBAC rules, read from ``rbac.yaml`` (shared with the Helm chart)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml


def rbac_rules() -> list[dict[str, Any]]:
    text = resources.files("oyez_operator").joinpath("rbac.yaml").read_text(encoding="utf-8")
    rules: list[dict[str, Any]] = yaml.safe_load(text)
    return rules
