"""``oyez operator``: run the operator, or print its CRD or RBAC rules."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from .crd_schema import crd_manifest
from .rbac import rbac_rules
from .settings import load_operator_settings


def dump_yaml(document: object) -> str:
    text: str = yaml.safe_dump(document, sort_keys=False, width=120)
    return text


def operator_main(args: argparse.Namespace) -> int:
    if args.print_crd:
        sys.stdout.write(dump_yaml(crd_manifest()))
        return 0
    if args.print_rbac:
        sys.stdout.write(dump_yaml(rbac_rules()))
        return 0
    overrides: dict[str, Any] = {}
    if args.namespace:
        overrides["namespaces"] = args.namespace
    if args.all_namespaces:
        overrides["namespaces"] = []
    if args.liveness_port is not None:
        overrides["liveness_port"] = args.liveness_port
    settings = load_operator_settings(**overrides)  # flags over OYEZ_OPERATOR_* over defaults

    import kopf

    from . import handlers  # noqa: F401 - registers the handlers

    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    kopf.configure(verbose=False)
    kopf.run(
        standalone=settings.peering is None,
        peering_name=settings.peering,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
    )
    return 0
