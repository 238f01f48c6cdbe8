"""Everything a running API server holds, built once by :mod:`api_server.serve` (or a test)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis.asyncio as redis

from api_server.dispatch import Dispatcher
from api_server.health import HealthChecker
from api_server.job_runner import JobRunner
from api_server.license_gate import LicenseGate
from api_server.metrics import ApiMetrics
from api_server.settings import ApiSettings
from api_server.stream_state import MemorySessionStore, SessionStore
from api_server.transcription import Limiter, TranscriptionFlow
from api_server.usage import UsageSender
from api_server.workers import WorkerDirectory


@dataclass
class ApiState:
    settings: ApiSettings
    metrics: ApiMetrics
    gate: LicenseGate
    limiter: Limiter
    directory: WorkerDirectory
    dispatcher: Dispatcher
    flow: TranscriptionFlow
    health: HealthChecker
    usage: UsageSender | None
    redis_client: redis.Redis | None
    streams: SessionStore = field(default_factory=MemorySessionStore)
    started_at: float = field(default_factory=time.monotonic)
    draining: bool = False
    jobs: JobRunner | None = None  # asynchronous (callback_url) jobs; None without Redis
