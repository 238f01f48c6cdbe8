"""Run the reference license server until SIGTERM/SIGINT."""

from __future__ import annotations

from license_proxy.clock import SystemClock
from license_proxy.issuer import IssuerKeyError
from license_proxy.keys import TrustPolicy
from license_proxy.server.app import build_server_app
from license_proxy.server.settings import LicenseServerSettings
from license_proxy.server.store import LicenseServerStore
from oyez.asgi_server import bind_socket, serve_asgi
from oyez.logs import get_logger

_log = get_logger("license_server")


async def serve_license_server(settings: LicenseServerSettings) -> int:
    try:
        policy = TrustPolicy.from_config(settings.license_public_key, production=settings.env == "production")
    except IssuerKeyError as exc:
        _log.critical(f"Invalid configuration: {exc}")
        return 2
    store = LicenseServerStore(settings.license_server_db)
    app = build_server_app(store=store, policy=policy, clock=SystemClock())
    try:
        sock = bind_socket(settings.license_server_host, settings.license_server_port)
    except OSError as exc:
        _log.critical(f"Cannot listen on port {settings.license_server_port}: {exc.strerror}")
        store.close()
        return 2
    port = settings.license_server_port
    try:
        await serve_asgi(app, sock, on_started=lambda: _log.info(f"License server listening on port {port}"))
    finally:
        store.close()
        sock.close()
    return 0
