"""Run the API server: wire the parts, check the deployment's license, serve until SIGTERM.

Start-up tolerates any start order (api-contract.md C2): the server listens at once; workers are
found as they register (``Connected to Lightning ASR at <address>``), and the deployment's own
``LICENSE_KEY`` is checked against the license proxy with retries (``License validation
successful``). Until both are there, ``/health`` and ``/healthz`` say why they are not ready. A key
the proxy calls invalid ends the process (exit 1) after ``CRITICAL: Cannot start without valid
license``. SIGTERM drains: no new connections, in-flight requests get ``OYEZ_DRAIN_GRACE_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import signal
from collections.abc import Awaitable

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from api_server.app import build_app
from api_server.dispatch import Dispatcher
from api_server.health import HealthChecker
from api_server.job_runner import build_job_runner
from api_server.license_gate import LicenseGate
from api_server.limits import LicenseLimiter
from api_server.limits_local import LocalLimiter
from api_server.metrics import ApiMetrics
from api_server.settings import ApiSettings
from api_server.state import ApiState
from api_server.stream_state import MemorySessionStore, MirroredSessionStore, RedisSessionStore
from api_server.transcription import Limiter, TranscriptionFlow
from api_server.url_fetch import FetchPolicy
from api_server.usage import UsageSender
from api_server.usage_outbox import UsageOutbox
from api_server.workers import WorkerDirectory
from oyez import constants
from oyez.asgi_server import bind_socket, serve_asgi
from oyez.errors import OyezError
from oyez.logs import get_logger

EXIT_INVALID_LICENSE = 1
EXIT_BAD_CONFIG = 2
LICENSE_RETRY_MAX_S = 30.0
CLOSE_STEP_TIMEOUT_S = 5.0
_log = get_logger("api_server")


def _redis_client(url: str, *, decode: bool = True) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=decode,
        socket_connect_timeout=2.0,
        socket_timeout=2.0,
        retry=Retry(NoBackoff(), 1),
    )


def build_state(settings: ApiSettings) -> ApiState:
    """Every part of a running server, not yet started (no sockets opened)."""
    metrics = ApiMetrics()
    redis_url = settings.resolved_redis_url
    client = _redis_client(redis_url) if redis_url else None
    directory = WorkerDirectory(
        redis_client=client,
        static_addresses=settings.worker_addresses,
        registry_refresh_s=settings.registry_refresh_s,
        static_probe_s=settings.static_probe_s,
    )
    limiter: Limiter
    if client is not None:
        limiter = LicenseLimiter(client, lease_ttl_s=settings.request_timeout_s + 30)
    else:
        _log.warning("Redis not configured: license limits are enforced per API replica, not jointly")
        limiter = LocalLimiter(lease_ttl_s=settings.request_timeout_s + 30)
    dispatcher = Dispatcher(
        directory,
        metrics,
        queue_max=settings.queue_max,
        queue_timeout_s=settings.queue_timeout_s,
        request_timeout_s=settings.request_timeout_s,
    )
    policy = FetchPolicy(
        max_bytes=constants.MAX_UPLOAD_BYTES,
        total_timeout_s=settings.url_fetch_timeout_s,
        allow_private=settings.url_allow_private,
        allowed_hosts=frozenset(settings.url_allowed_hosts),
    )
    key = settings.license_key.get_secret_value().strip() if settings.license_key else ""
    return ApiState(
        settings=settings,
        metrics=metrics,
        gate=LicenseGate(
            settings.license_proxy_url, ttl_s=settings.auth_cache_ttl_s, timeout_s=settings.upstream_timeout_s
        ),
        limiter=limiter,
        directory=directory,
        dispatcher=dispatcher,
        flow=TranscriptionFlow(dispatcher, policy, constants.MAX_UPLOAD_BYTES),
        health=HealthChecker(
            directory=directory,
            proxy_url=settings.license_proxy_url,
            redis_client=client,
            timeout_s=settings.upstream_timeout_s,
        ),
        usage=UsageSender(
            settings.license_proxy_url,
            key,
            metrics,
            flush_s=settings.usage_flush_s,
            timeout_s=settings.upstream_timeout_s,
            outbox=UsageOutbox(client) if client is not None else None,
            orphan_age_s=settings.usage_orphan_age_s,
        )
        if key
        else None,
        redis_client=client,
        streams=MirroredSessionStore(RedisSessionStore(_redis_client(redis_url, decode=False)))
        if redis_url
        else MemorySessionStore(),
    )


async def check_own_license(state: ApiState, key: str) -> bool:
    """Validate the deployment's key with the proxy, retrying while it is unreachable. True when
    usable or expired (the proxy then answers 403s until it recovers); False when invalid."""
    delay = 1.0
    while True:
        try:
            await state.gate.check(key)
        except OyezError as exc:
            if exc.code == "INVALID_LICENSE":
                _log.error(f"License validation failed: Invalid license key ({exc.message})")
                _log.critical("Cannot start without valid license")
                return False
            if exc.code == "LICENSE_EXPIRED":
                _log.error(f"License validation failed: License expired ({exc.message})")
                return True
            _log.warning(f"License proxy not reachable yet ({exc.message}); retrying in {delay:g}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, LICENSE_RETRY_MAX_S)
            continue
        _log.info("License validation successful")
        return True


async def serve(settings: ApiSettings) -> int:
    key = settings.license_key.get_secret_value().strip() if settings.license_key else ""
    if not key:
        _log.critical("LICENSE_KEY is not set: the API server needs the deployment's license key")
        return EXIT_BAD_CONFIG
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        _log.critical(f"Cannot listen on {settings.host}:{settings.port}: {exc.strerror}")
        return EXIT_BAD_CONFIG
    # ``kill -USR1 <pid>`` prints every thread's stack: for diagnosing a stuck process in place.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    state = build_state(settings)
    state.jobs = build_job_runner(state)  # callback_url jobs (None without Redis)
    app = build_app(state)
    try:
        await state.directory.start()
        if state.usage is not None:
            state.usage.start()
        if state.jobs is not None:
            state.jobs.start()
        license_task = asyncio.create_task(check_own_license(state, key))
        serving = asyncio.create_task(
            serve_asgi(
                app,
                sock,
                on_started=lambda: _log.info(f"API server listening on port {settings.port}"),
                graceful_timeout_s=int(settings.drain_grace_s),
            )
        )
        done, _ = await asyncio.wait({license_task, serving}, return_when=asyncio.FIRST_COMPLETED)
        _log.debug("Serving ended or license check finished", serving_done=serving in done)
        if license_task in done and not license_task.result():
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            return EXIT_INVALID_LICENSE
        await serving
        _log.info("HTTP server closed; releasing connections to workers, proxy and Redis")
        license_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await license_task
        return 0
    finally:
        state.draining = True
        await _close(state)
        sock.close()
        _log.info("API server stopped")


async def _close(state: ApiState) -> None:
    """Release everything, each step bounded so a stuck dependency cannot hold the exit."""
    steps: list[tuple[str, Awaitable[None]]] = []
    if state.jobs is not None:  # first: a job finishing now still sends its usage event
        steps.append(("job runner", state.jobs.close()))
    if state.usage is not None:
        steps.append(("usage events", state.usage.close()))
    steps += [
        ("worker directory", state.directory.close()),
        ("license gate", state.gate.aclose()),
        ("health checker", state.health.aclose()),
    ]
    if state.redis_client is not None:
        steps.append(("redis", state.redis_client.aclose()))
    for name, step in steps:
        try:
            await asyncio.wait_for(step, timeout=CLOSE_STEP_TIMEOUT_S)
        except TimeoutError:
            _log.warning(f"Shutdown: closing the {name} took over {CLOSE_STEP_TIMEOUT_S:g}s; moving on")
        except Exception as exc:  # noqa: BLE001 - shutting down: report and continue
            _log.warning(f"Shutdown: closing the {name} failed: {exc}")
