"""Handlers for ``oyez license ...``, ``oyez license-proxy`` and ``oyez license-server ...``.

Exit codes: 0 success; 1 the key is not valid (``inspect``) or the license unusable (proxy start-up);
2 bad arguments or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from license_proxy.issuer import (
    IssuerKeyError,
    IssuerKeyPair,
    development_key_pair,
    generate_key_pair,
    load_private_key_file,
    save_key_pair,
)
from license_proxy.keys import (
    LicenseKeyError,
    TrustPolicy,
    check_validity_window,
    issue_key,
    verify_signature,
)
from license_proxy.terms import parse_limit_assignment
from oyez import constants
from oyez.errors import InvalidParameter
from oyez.logs import configure_logging

if TYPE_CHECKING:
    from license_proxy.server.settings import LicenseServerSettings

ENV_ISSUER_KEY_FILE = "OYEZ_LICENSE_ISSUER_KEY_FILE"


def keygen(args: argparse.Namespace) -> int:
    pair = generate_key_pair()
    try:
        private_path, public_path = save_key_pair(pair, Path(args.out_dir), overwrite=args.force)
    except IssuerKeyError as exc:
        raise InvalidParameter(str(exc)) from None
    print(f"private key: {private_path} (mode 0600; keep it offline, it signs licenses)")
    print(f"public key:  {public_path}")
    print(f"fingerprint: {pair.public.fingerprint}")
    print(f"OYEZ_LICENSE_PUBLIC_KEY={pair.public.text}")
    return 0


def _issuer(args: argparse.Namespace) -> tuple[IssuerKeyPair, bool]:
    path = args.key or os.environ.get(ENV_ISSUER_KEY_FILE)
    if not path:
        return development_key_pair(), True
    try:
        return load_private_key_file(Path(path)), False
    except IssuerKeyError as exc:
        raise InvalidParameter(str(exc)) from None


def issue(args: argparse.Namespace) -> int:
    pair, is_dev = _issuer(args)
    limits: dict[str, float] = {}
    try:
        for assignment in args.limit:
            name, value = parse_limit_assignment(assignment)
            limits[name] = value
        not_before = datetime.fromisoformat(args.not_before) if args.not_before else None
        if not_before is not None and not_before.tzinfo is None:
            not_before = not_before.replace(tzinfo=UTC)
        key = issue_key(
            pair,
            customer=args.customer,
            now=datetime.now(UTC),
            valid_for=timedelta(days=args.days),
            features=args.feature or [],
            limits=limits,
            license_id=args.license_id,
            not_before=not_before,
        )
    except ValueError as exc:
        raise InvalidParameter(str(exc).splitlines()[0]) from None
    if is_dev:
        print(
            "warning: signed with the DEVELOPMENT issuer key (public, for local use and tests); it is "
            "refused with OYEZ_ENV=production. Use --key <issuer.key> for real licenses.",
            file=sys.stderr,
        )
    print(key)
    return 0


def _read_key(arg: str | None) -> str:
    if arg and arg != "-":
        return arg
    if arg is None and os.environ.get(constants.ENV_LICENSE_KEY):
        return os.environ[constants.ENV_LICENSE_KEY]
    if sys.stdin.isatty():
        raise InvalidParameter("give the key as an argument, '-' to read stdin, or set LICENSE_KEY")
    return sys.stdin.read()


def _policy(public_keys: list[str] | None) -> TrustPolicy:
    keys = public_keys or [
        item.strip() for item in os.environ.get("OYEZ_LICENSE_PUBLIC_KEY", "").split(",") if item.strip()
    ]
    production = os.environ.get("OYEZ_ENV", "development") == "production"
    try:
        return TrustPolicy.from_config(keys, production=production)
    except IssuerKeyError as exc:
        raise InvalidParameter(str(exc)) from None


def inspect(args: argparse.Namespace) -> int:
    policy = _policy(args.public_key)
    try:
        terms = verify_signature(_read_key(args.key), policy)
    except LicenseKeyError as exc:
        print(f"invalid: {exc.reason}: {exc.message}")
        return 1
    verdict, code = "valid", 0
    try:
        check_validity_window(terms, datetime.now(UTC))
    except LicenseKeyError as exc:
        verdict, code = f"{exc.reason}: {exc.message}", 1
    view = terms.public_view()
    if args.json:
        print(json.dumps({"valid": code == 0, "status": verdict, **view}, indent=2))
        return code
    print(f"status:      {verdict}")
    for name in ("license_id", "customer", "issuer", "issued_at", "valid_from", "expires_at"):
        print(f"{name + ':':<13}{view[name]}")
    print(f"{'features:':<13}{', '.join(view['features']) or '(none)'}")
    for name, value in view["limits"].items():
        print(f"{'limit:':<13}{name} = {value:g}")
    return code


def proxy_serve(args: argparse.Namespace) -> int:
    from license_proxy.serve import serve
    from license_proxy.settings import ProxyConfigError, load_proxy_settings

    try:
        settings = load_proxy_settings()
    except ProxyConfigError as exc:
        configure_logging("license_proxy")
        from oyez.logs import get_logger

        get_logger("license_proxy").critical(f"Invalid configuration: {exc.message}")
        return 2
    configure_logging("license_proxy", fmt=settings.log_format, level=settings.log_level)
    return asyncio.run(serve(settings))


def server_serve(args: argparse.Namespace) -> int:
    from license_proxy.server.serve import serve_license_server

    settings = _server_settings(args)
    configure_logging("license_server", fmt=settings.log_format, level=settings.log_level)
    return asyncio.run(serve_license_server(settings))


def _server_settings(args: argparse.Namespace) -> LicenseServerSettings:
    from license_proxy.server.settings import load_server_settings
    from license_proxy.settings import ProxyConfigError

    overrides: dict[str, object] = {}
    if getattr(args, "db", None):
        overrides["license_server_db"] = Path(args.db)
    if getattr(args, "port", None):
        overrides["license_server_port"] = args.port
    try:
        return load_server_settings(**overrides)
    except ProxyConfigError as exc:
        raise InvalidParameter(exc.message) from None


def server_revoke(args: argparse.Namespace) -> int:
    from license_proxy.server.store import LicenseServerStore

    store = LicenseServerStore(_server_settings(args).license_server_db)
    try:
        store.revoke(args.license_id, args.reason, datetime.now(UTC))
    finally:
        store.close()
    print(f"revoked {args.license_id}: {args.reason}")
    return 0


def server_reinstate(args: argparse.Namespace) -> int:
    from license_proxy.server.store import LicenseServerStore

    store = LicenseServerStore(_server_settings(args).license_server_db)
    try:
        found = store.reinstate(args.license_id)
    finally:
        store.close()
    print(f"reinstated {args.license_id}" if found else f"{args.license_id} was not revoked")
    return 0


def server_usage(args: argparse.Namespace) -> int:
    from license_proxy.server.store import LicenseServerStore

    store = LicenseServerStore(_server_settings(args).license_server_db)
    try:
        totals = store.usage_totals()
    finally:
        store.close()
    print(f"{'license_id':<24} {'batches':>8} {'events':>8} {'audio_hours':>12}")
    for row in totals:
        print(f"{row.license_id:<24} {row.batches:>8} {row.events:>8} {row.audio_seconds / 3600:>12.3f}")
    return 0
