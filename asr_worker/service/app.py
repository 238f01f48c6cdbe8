"""Wiring of the worker process: HTTP + gRPC up first, then the engine, then ready; drain on SIGTERM.

Order (api-contract.md C2): HTTP :9090 answers 503 ``loading`` and gRPC health says NOT_SERVING
while the engine factory loads and warms the model in a thread; then the worker flips to ready,
registers in Redis and logs ``Server ready on port <port>``. On SIGTERM/SIGINT it drains: health
NOT_SERVING and HTTP 503 at once, deregistration, new RPCs refused with UNAVAILABLE, in-flight work
given up to ``OYEZ_DRAIN_GRACE_S``, then exit 0. An engine factory that raises ends the process
with a CRITICAL line and a non-zero exit code.

The CLI calls :func:`run_worker` (or awaits :func:`serve`); tests drive :class:`WorkerApp`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from asr_worker.engine.types import Engine
from asr_worker.service.admission import AdmissionGate, JobKind
from asr_worker.service.grpc_service import AsrWorkerService, AudioDecoder, decode_upload
from asr_worker.service.http_server import WorkerHttpServer
from asr_worker.service.lifecycle import Phase, WorkerLifecycle
from asr_worker.service.metrics import WorkerMetrics
from asr_worker.service.registry import WorkerRecord, WorkerRegistry
from asr_worker.service.settings import WorkerSettings
from oyez.errors import ModelCacheFull, OyezError
from oyez.logs import configure_logging, get_logger
from oyez.proto import asr_v1_pb2 as pb
from oyez.proto import asr_v1_pb2_grpc as pb_grpc

EngineFactory = Callable[[WorkerSettings], Engine]
"""Builds a loaded, warmed engine (blocking; called in a thread). Raises to abort the start."""

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AsrWorker"].full_name
_HEALTH_SERVICES = ("", SERVICE_NAME)
_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_log = get_logger("asr_worker.app")


class WorkerApp:
    """One worker: servers, lifecycle, admission, metrics, registry. Start, load, drain."""

    def __init__(
        self,
        settings: WorkerSettings,
        engine_factory: EngineFactory,
        *,
        decoder: AudioDecoder = decode_upload,
    ) -> None:
        self.settings = settings
        self._engine_factory = engine_factory
        self.lifecycle = WorkerLifecycle()
        self.gate = AdmissionGate(settings.capacity, settings.max_queue)
        self.metrics = WorkerMetrics()
        self.metrics.track_admission(
            active_requests=lambda: self.gate.active(JobKind.BATCH),
            batch_queue_depth=lambda: self.gate.waiting(JobKind.BATCH),
            active_streams=lambda: self.gate.active(JobKind.STREAM),
            stream_queue_depth=lambda: self.gate.waiting(JobKind.STREAM),
        )
        self._service = AsrWorkerService(self.lifecycle, self.gate, self.metrics, decoder=decoder)
        self._health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._http: WorkerHttpServer | None = None
        self.registry: WorkerRegistry | None = None
        self.grpc_port = 0
        self.worker_id = ""
        self.advertise_address = ""
        self._stopped = False

    @property
    def http_port(self) -> int:
        return self._http.port if self._http is not None else 0

    async def start(self) -> None:
        """Bind HTTP and gRPC (ports 0 pick free ones); both report not ready until :meth:`load`."""
        for service in _HEALTH_SERVICES:
            await self._health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self._http = WorkerHttpServer(
            self.settings.host,
            self.settings.http_port,
            health=self.health_report,
            metrics=self.metrics.render,
            metrics_type=self.metrics.content_type,
        )
        self._http.start()
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ]
        )
        pb_grpc.add_AsrWorkerServicer_to_server(self._service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self.grpc_port = server.add_insecure_port(f"{self.settings.host}:{self.settings.port}")
        await server.start()
        self._server = server
        self.worker_id = self.settings.resolved_worker_id(self.grpc_port)
        self.advertise_address = self.settings.resolved_advertise_address(self.grpc_port)
        _log.info(f"gRPC listening on port {self.grpc_port} (not ready: loading model)")

    async def load(self) -> None:
        """Build the engine in a thread, flip to ready, register in Redis. Raises what the factory raised."""
        while True:
            try:
                engine = await _call_in_daemon_thread(self._engine_factory, self.settings)
                break
            except ModelCacheFull as exc:
                # Not the model's fault: once the volume has room again (resized, or space freed) the
                # next try succeeds, with no restart and no crash loop. Until then: not ready.
                retry_s = self.settings.model_retry_s
                _log.error(f"{exc.message} Trying again in {retry_s:g}s.", code=exc.code)
                await asyncio.sleep(retry_s)
            except BaseException:
                self.lifecycle.mark_failed()
                raise
        if self.lifecycle.phase is not Phase.LOADING:
            return  # drained while loading
        self.lifecycle.mark_ready(engine)
        for service in _HEALTH_SERVICES:
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.settings.redis_url:
            self.registry = WorkerRegistry.from_url(
                self.settings.redis_url,
                self.worker_id,
                self._registry_record,
                heartbeat_s=self.settings.heartbeat_s,
                ttl_s=self.settings.heartbeat_ttl_s,
            )
            await self.registry.start()
        _log.info(
            f"Server ready on port {self.grpc_port}",
            model=engine.model_name,
            capacity=self.gate.capacity,
            http_port=self.http_port,
            worker_id=self.worker_id,
        )

    async def drain(self) -> None:
        """Refuse new work at once, let in-flight work finish within the grace period, then stop."""
        if self._stopped:
            return
        self.lifecycle.mark_draining()
        await self._health.enter_graceful_shutdown()
        grace = self.settings.drain_grace_s
        _log.info(
            f"Draining: refusing new requests, waiting up to {grace:g}s for {self.gate.in_flight} in flight",
            queued=self.gate.queued,
        )
        started = time.monotonic()
        if self.registry is not None:
            await self.registry.deregister()
        try:
            await asyncio.wait_for(
                self.gate.wait_idle(), timeout=max(0.0, grace - (time.monotonic() - started))
            )
        except TimeoutError:
            _log.warning(f"Drain grace period over; cancelling {self.gate.in_flight} in-flight jobs")
        await self.stop(grace=max(0.0, grace - (time.monotonic() - started)))

    async def stop(self, grace: float | None = None) -> None:
        """Stop both servers (``grace`` seconds for RPCs still running) and release the registry."""
        if self._stopped:
            return
        self._stopped = True
        if self.lifecycle.phase is not Phase.FAILED:
            self.lifecycle.mark_draining()
        if self.registry is not None:
            await self.registry.close()
        if self._server is not None:
            await self._server.stop(grace)
        if self._http is not None:
            await asyncio.to_thread(self._http.stop)
        _log.info("Worker stopped")

    def health_report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, body) for ``GET /health``; read from the HTTP thread."""
        engine = self.lifecycle.engine
        if not self.lifecycle.is_ready or engine is None:
            return False, {"status": "unhealthy", "reason": str(self.lifecycle.phase)}
        return True, {
            "status": "healthy",
            "model": engine.model_name,
            "languages": list(engine.languages),
            "worker_id": self.worker_id,
            "capacity": self.gate.capacity,
            "in_flight": self.gate.in_flight,
            "queued": self.gate.queued,
            "uptime_seconds": int(self.lifecycle.uptime_seconds()),
        }

    def _registry_record(self) -> WorkerRecord:
        engine = self.lifecycle.engine
        return WorkerRecord(
            address=self.advertise_address,
            model=engine.model_name if engine is not None else "",
            languages=tuple(engine.languages) if engine is not None else (),
            capacity=self.gate.capacity,
            in_flight=self.gate.in_flight,
            queued=self.gate.queued,
            state="ready" if self.lifecycle.is_ready else "draining",
            started_at=self.lifecycle.started_at,
        )


async def _call_in_daemon_thread(factory: EngineFactory, settings: WorkerSettings) -> Engine:
    """Run the blocking factory in a daemon thread, so a signal during loading need not wait for it."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[Engine] = loop.create_future()
    context = contextvars.copy_context()  # keeps the bound log fields (component) in the thread

    def deliver(settle: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            loop.call_soon_threadsafe(lambda: None if result.done() else settle())

    def work() -> None:
        try:
            engine = context.run(factory, settings)
        except BaseException as exc:  # noqa: BLE001 - handed over to the event loop
            deliver(functools.partial(result.set_exception, exc))
        else:
            deliver(functools.partial(result.set_result, engine))

    threading.Thread(target=work, name="engine-loader", daemon=True).start()
    return await result


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
            _log.debug("Signal handlers unavailable; stop the worker by cancelling serve()")
            return


async def serve(settings: WorkerSettings, engine_factory: EngineFactory) -> int:
    """Run a worker until SIGTERM/SIGINT; returns the process exit code (0 after a clean drain)."""
    configure_logging("asr-worker", fmt=settings.log_format, level=settings.log_level)
    app = WorkerApp(settings, engine_factory)
    stop_requested = asyncio.Event()
    _install_signal_handlers(stop_requested)
    try:
        await app.start()
    except (OSError, RuntimeError) as exc:
        _log.critical(f"Cannot start servers: {exc}")
        await app.stop(grace=0)
        return 1
    loading = asyncio.create_task(app.load(), name="engine-load")
    stopping = asyncio.create_task(stop_requested.wait(), name="stop-signal")
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():
        _log.info("Stop requested while loading the model; exiting")
        loading.cancel()
        stopping.cancel()
        await app.stop(grace=0)
        return 0
    error = loading.exception()
    if error is not None:
        stopping.cancel()
        _report_startup_failure(error)
        await app.stop(grace=0)
        return 1
    await stopping
    await app.drain()
    return 0


def _report_startup_failure(error: BaseException) -> None:
    if isinstance(error, OyezError):
        _log.critical(f"Worker failed to start: {error.message}", code=error.code)
    else:
        _log.critical(f"Worker failed to start: {type(error).__name__}: {error}", exc_info=error)


def run_worker(settings: WorkerSettings, engine_factory: EngineFactory) -> int:
    """Blocking entry point for the CLI: ``sys.exit(run_worker(load_worker_settings(), factory))``."""
    return asyncio.run(serve(settings, engine_factory))
