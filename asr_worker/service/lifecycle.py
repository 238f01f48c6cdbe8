"""The worker's lifecycle: loading -> ready -> draining (or loading -> failed).

One small object the gRPC servicer, the HTTP health endpoint and the registry all read. Transitions
happen on the event loop; the HTTP thread only reads, which is safe for these plain attributes.
"""

from __future__ import annotations

import time
from enum import StrEnum

from asr_worker.engine.types import Engine
from oyez.errors import ServiceUnavailable


class Phase(StrEnum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class WorkerLifecycle:
    """Where the worker is in its life, and the engine once it is ready."""

    def __init__(self) -> None:
        self.phase = Phase.LOADING
        self.started_at = time.time()
        self._engine: Engine | None = None

    @property
    def is_ready(self) -> bool:
        """Model loaded and warmed, and not draining: the only phase that accepts new work."""
        return self.phase is Phase.READY and self._engine is not None

    @property
    def engine(self) -> Engine | None:
        return self._engine

    def mark_ready(self, engine: Engine) -> None:
        if self.phase is not Phase.LOADING:
            raise RuntimeError(f"cannot become ready while {self.phase}")
        self._engine = engine
        self.phase = Phase.READY

    def mark_draining(self) -> None:
        if self.phase is not Phase.FAILED:
            self.phase = Phase.DRAINING

    def mark_failed(self) -> None:
        self.phase = Phase.FAILED

    def require_engine(self) -> Engine:
        """The engine, or ``ServiceUnavailable`` naming the phase (loading, draining, failed)."""
        if not self.is_ready or self._engine is None:
            raise ServiceUnavailable(f"worker is {self.phase}", reason=str(self.phase))
        return self._engine

    def uptime_seconds(self) -> float:
        return time.time() - self.started_at
