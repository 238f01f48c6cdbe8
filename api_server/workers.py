"""Which workers exist and which one takes the next request.

Two sources: the Redis registry the workers publish (``oyez:workers`` + ``oyez:worker:<id>``, see
``asr_worker/service/registry.py``), polled every ``OYEZ_REGISTRY_REFRESH_S``; and the static list
``LIGHTNING_ASR_BASE_URL``, probed with gRPC health every ``OYEZ_STATIC_PROBE_S``. Registry workers
are preferred; static workers serve when the registry lists no ready worker (no Redis, or Redis
down). Picking is pure (:func:`pick_worker`): power of two choices on load = slots taken / capacity (see
:meth:`WorkerView.busy`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import grpc
import redis.asyncio as redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from api_server.errors import REDIS_FAILURES
from oyez.aio import cancel_and_wait
from oyez.constants import REGISTRY_SET_KEY, REGISTRY_WORKER_KEY_PREFIX
from oyez.logs import get_logger

_log = get_logger("api_server.workers")
STATIC_CAPACITY = 16  # assumed for static workers, which publish nothing


@dataclass(frozen=True)
class WorkerView:
    """One worker as this replica sees it."""

    address: str
    source: str  # "registry" | "static"
    model: str = ""
    languages: frozenset[str] | None = None  # None: unknown (static worker), may support anything
    capacity: int = STATIC_CAPACITY
    in_flight: int = 0
    queued: int = 0
    ready: bool = True

    def supports(self, language: str) -> bool:
        return self.languages is None or language in self.languages

    def busy(self, local_in_flight: int) -> int:
        """Slots taken: what the worker last published, or this replica's own count if higher (the
        published figure already includes this replica's calls, but may be a heartbeat old)."""
        return max(self.in_flight + self.queued, local_in_flight)

    def load(self, local_in_flight: int) -> float:
        return self.busy(local_in_flight) / max(self.capacity, 1)

    def has_room(self, local_in_flight: int) -> bool:
        return self.busy(local_in_flight) < self.capacity


def pick_worker(
    workers: Sequence[WorkerView],
    language: str,
    local_in_flight: dict[str, int],
    *,
    exclude: frozenset[str] = frozenset(),
    rng: random.Random | None = None,
) -> WorkerView | None:
    """Two random ready candidates that support ``language`` and have room; the less loaded wins."""
    chooser = rng or random
    candidates = [
        w
        for w in workers
        if w.ready
        and w.address not in exclude
        and w.supports(language)
        and w.has_room(local_in_flight.get(w.address, 0))
    ]
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    first, second = chooser.sample(candidates, 2)
    first_load = first.load(local_in_flight.get(first.address, 0))
    second_load = second.load(local_in_flight.get(second.address, 0))
    return first if first_load <= second_load else second


def parse_registry_record(fields: dict[str, str]) -> WorkerView | None:
    """A registry hash -> :class:`WorkerView`; None when it is incomplete or malformed."""
    try:
        languages = frozenset(code for code in fields.get("languages", "").split(",") if code)
        return WorkerView(
            address=fields["address"],
            source="registry",
            model=fields.get("model", ""),
            languages=languages or None,
            capacity=int(fields["capacity"]),
            in_flight=int(fields.get("in_flight", "0")),
            queued=int(fields.get("queued", "0")),
            ready=fields.get("state") == "ready",
        )
    except (KeyError, ValueError):
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class WorkerDirectory:
    """The live set of workers, refreshed in the background; ``changed`` fires on every refresh."""

    def __init__(
        self,
        *,
        redis_client: redis.Redis | None,
        static_addresses: Sequence[str],
        registry_refresh_s: float,
        static_probe_s: float,
        probe_timeout_s: float = 2.0,
    ) -> None:
        self._redis = redis_client
        self._static = {address: WorkerView(address, "static", ready=False) for address in static_addresses}
        self._registry: dict[str, WorkerView] = {}
        self._registry_ok: bool | None = None
        self._refresh_s = registry_refresh_s
        self._probe_s = static_probe_s
        self._probe_timeout_s = probe_timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._announced: set[str] = set()
        self.local_in_flight: dict[str, int] = {}
        self.changed = asyncio.Condition()
        self.on_change: Callable[[], None] | None = None

    # --- views ------------------------------------------------------------------------------------
    def workers(self) -> list[WorkerView]:
        """Registry workers when any is ready, else the static ones."""
        registry = list(self._registry.values())
        if any(w.ready for w in registry):
            return registry
        return list(self._static.values())

    def ready_workers(self) -> list[WorkerView]:
        return [w for w in self.workers() if w.ready]

    def pick(self, language: str, exclude: frozenset[str] = frozenset()) -> WorkerView | None:
        return pick_worker(self.workers(), language, self.local_in_flight, exclude=exclude)

    def languages(self) -> frozenset[str] | None:
        """Languages some ready worker transcribes; None when a ready worker's are unknown."""
        found: set[str] = set()
        for worker in self.ready_workers():
            if worker.languages is None:
                return None
            found |= worker.languages
        return frozenset(found)

    def acquire(self, address: str) -> None:
        self.local_in_flight[address] = self.local_in_flight.get(address, 0) + 1

    async def release(self, address: str) -> None:
        left = self.local_in_flight.get(address, 1) - 1
        if left > 0:
            self.local_in_flight[address] = left
        else:
            self.local_in_flight.pop(address, None)
        await self._notify()

    # --- background -------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.refresh_registry()
        await self.probe_static()
        if self._redis is not None:
            self._tasks.append(asyncio.create_task(self._loop(self.refresh_registry, self._refresh_s)))
        if self._static:
            self._tasks.append(asyncio.create_task(self._loop(self.probe_static, self._probe_s)))

    async def close(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        for channel in self._channels.values():
            await channel.close(None)

    async def _loop(self, step: Callable[[], object], period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            result = step()
            if asyncio.iscoroutine(result):
                await result

    async def refresh_registry(self) -> None:
        if self._redis is None:
            return
        try:
            ids = sorted(_text(member) for member in await self._redis.smembers(REGISTRY_SET_KEY))
            async with self._redis.pipeline(transaction=False) as pipe:
                for worker_id in ids:
                    pipe.hgetall(f"{REGISTRY_WORKER_KEY_PREFIX}{worker_id}")
                records = await pipe.execute()
            gone = [worker_id for worker_id, fields in zip(ids, records, strict=True) if not fields]
            if gone:
                await self._redis.srem(REGISTRY_SET_KEY, *gone)
        except REDIS_FAILURES as exc:
            if self._registry_ok is not False:
                _log.warning(f"Worker registry unreadable ({exc}); using the last known workers")
            self._registry_ok = False
            return
        if self._registry_ok is False:
            _log.info("Worker registry readable again")
        self._registry_ok = True
        fresh: dict[str, WorkerView] = {}
        for fields in records:
            view = parse_registry_record(fields) if fields else None
            if view is not None:
                fresh[view.address] = view
        self._registry = fresh
        self._announce()
        await self._notify()

    async def probe_static(self) -> None:
        if not self._static:
            return
        results = await asyncio.gather(*(self._probe(address) for address in self._static))
        for address, ready in zip(list(self._static), results, strict=True):
            self._static[address] = replace(self._static[address], ready=ready)
        self._announce()
        await self._notify()

    async def _probe(self, address: str) -> bool:
        channel = self.channel(address)
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=self._probe_timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def channel(self, address: str) -> grpc.aio.Channel:
        """One shared channel per worker address (gRPC multiplexes calls over it)."""
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(
                address,
                options=[
                    ("grpc.max_send_message_length", 4 * 1024 * 1024),
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                    ("grpc.keepalive_time_ms", 30_000),
                ],
            )
            self._channels[address] = channel
        return channel

    def _announce(self) -> None:
        for worker in self.workers():
            if worker.ready and worker.address not in self._announced:
                self._announced.add(worker.address)
                _log.info(f"Connected to Lightning ASR at {worker.address}", source=worker.source)
            elif not worker.ready and worker.address in self._announced:
                self._announced.discard(worker.address)
                _log.warning(f"Lightning ASR at {worker.address} is not ready", source=worker.source)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()
