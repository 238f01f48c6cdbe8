"""``oyez operator``: run the operator, or print its CRD or RBAC rules."""

from __future__ import annotations

import argparse
import os
import sys

import yaml

from .crd_schema import crd_manifest
from .rbac import rbac_rules


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
    if args.namespace:
        os.environ["OYEZ_OPERATOR_NAMESPACES"] = ",".join(args.namespace)
    if args.all_namespaces:
        os.environ["OYEZ_OPERATOR_NAMESPACES"] = ""
    if args.liveness_port is not None:
        os.environ["OYEZ_OPERATOR_LIVENESS_PORT"] = str(args.liveness_port)

    import kopf

    from . import handlers  # registers the handlers; reads the settings

    settings = handlers.SETTINGS
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
