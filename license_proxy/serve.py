"""Run the license proxy: validate the license, then serve HTTP until SIGTERM/SIGINT.

Start-up order (api-contract.md C2, C9): read ``LICENSE_KEY`` -> verify it (signature, expiry) ->
ask the license server (revocation, terms) or fall back to the cached validation -> cache -> listen.
An unusable license ends the process with exit code 1 after the documented lines; a configuration
error with exit code 2. On shutdown the reporter makes one bounded attempt to upload what is
spooled; whatever it cannot send stays on disk for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from license_proxy.app import build_app
from license_proxy.clock import Clock, OffsetClock, SystemClock
from license_proxy.issuer import IssuerKeyError
from license_proxy.keys import LicenseKeyError, LicenseUnconfirmed, TrustPolicy
from license_proxy.metrics import ProxyMetrics
from license_proxy.reporter import UsageReporter
from license_proxy.settings import LicenseProxySettings
from license_proxy.spool import UsageSpool
from license_proxy.state_store import ValidationStore
from license_proxy.terms import iso
from license_proxy.upstream_client import LicenseServerClient
from license_proxy.validator import LicenseValidator
from oyez.asgi_server import bind_socket, serve_asgi
from oyez.logs import get_logger

EXIT_INVALID_LICENSE = 1
EXIT_BAD_CONFIG = 2
SHUTDOWN_FLUSH_S = 5.0
_log = get_logger("license_proxy")


def _clock(settings: LicenseProxySettings) -> Clock:
    if settings.clock_offset_s:
        _log.warning("Clock offset active (development/tests only)", offset_s=settings.clock_offset_s)
        return OffsetClock(timedelta(seconds=settings.clock_offset_s))
    return SystemClock()


async def serve(settings: LicenseProxySettings, clock: Clock | None = None) -> int:
    """Run until a signal; returns the process exit code."""
    clock = clock or _clock(settings)
    try:
        policy = TrustPolicy.from_config(settings.license_public_key, production=settings.production)
    except IssuerKeyError as exc:
        _log.critical(f"Invalid configuration: {exc}")
        return EXIT_BAD_CONFIG
    key = settings.license_key.get_secret_value()
    metrics = ProxyMetrics()
    client = (
        LicenseServerClient(settings.license_server_url, timeout_s=settings.license_upstream_timeout_s)
        if settings.license_server_url
        else None
    )
    validator = LicenseValidator(
        license_key=key,
        policy=policy,
        store=ValidationStore(settings.license_state_dir, key),
        client=client,
        clock=clock,
        grace=settings.grace_period,
        metrics=metrics,
        revalidate_s=settings.license_revalidate_s,
        retry_initial_s=settings.license_retry_initial_s,
        retry_max_s=settings.license_retry_max_s,
        grace_check_s=settings.license_grace_check_s,
        startup_timeout_s=settings.license_startup_timeout_s,
    )
    try:
        try:
            status = await validator.startup()
        except LicenseKeyError as exc:
            what = (
                exc.message if isinstance(exc, LicenseUnconfirmed) else f"{exc.public_error} ({exc.message})"
            )
            _log.error(f"License validation failed: {what}", reason=exc.reason)
            _log.critical("Cannot start without valid license")
            return EXIT_INVALID_LICENSE
        if status.valid:
            _log.info("License validated successfully", license_id=validator.terms.license_id)
        else:
            _log.error(
                "License server unreachable past the grace period: serving 403 LICENSE_EXPIRED until it "
                "answers again",
                license_id=validator.terms.license_id,
            )
        _log.info(f"License valid until: {iso(validator.terms.expires)}")
        _log.info(f"Grace period: {settings.license_grace_period_h:g} hours")
        return await _serve_http(settings, validator, client, metrics, clock)
    finally:
        if client is not None:
            await client.aclose()


async def _serve_http(
    settings: LicenseProxySettings,
    validator: LicenseValidator,
    client: LicenseServerClient | None,
    metrics: ProxyMetrics,
    clock: Clock,
) -> int:
    spool = UsageSpool(
        settings.license_state_dir / "usage.sqlite3", max_events=settings.usage_spool_max_events
    )
    reporter = UsageReporter(
        spool=spool,
        client=client,
        license_id=validator.terms.license_id,
        key_digest=validator.digest,
        clock=clock,
        metrics=metrics,
        flush_interval_s=settings.usage_flush_interval_s,
        batch_max=settings.usage_batch_max,
        retry_initial_s=settings.license_retry_initial_s,
        retry_max_s=settings.license_retry_max_s,
    )
    metrics.spool_depth.set(spool.depth())
    app = build_app(validator=validator, spool=spool, reporter=reporter, metrics=metrics, salt=spool.salt())
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        _log.critical(f"Cannot listen on {settings.host}:{settings.port}: {exc.strerror}")
        spool.close()
        return EXIT_BAD_CONFIG
    tasks = [asyncio.create_task(validator.run()), asyncio.create_task(reporter.run())]
    try:
        await serve_asgi(app, sock, on_started=lambda: _log.info(f"Server listening on port {settings.port}"))
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if client is not None and spool.depth():
            flushed = await reporter.flush(give_up_after_s=SHUTDOWN_FLUSH_S)
            _log.info("Usage spool on shutdown", delivered_all=flushed, pending_events=spool.depth())
        spool.close()
        sock.close()
        _log.info("License proxy stopped")
    return 0
