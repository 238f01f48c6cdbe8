"""Dynamic batching: windows from concurrent requests share encoder and decoder runs.

``lanes`` inference threads share the ONNX sessions (``Run`` is thread-safe). Each takes the first
waiting window, then gathers more for at most ``max_wait_ms`` or until ``max_batch`` are in hand,
and runs them as one batch. The default is one lane (measured best on the 2-core CPU, see
bench/RESULTS.md); more lanes can overlap host work with device work on larger machines. Callers
get a ``concurrent.futures.Future`` (``submit``) or await one (``submit_async``), so the same batcher
serves the gRPC service, streams and the in-process CLI.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from oyez.logs import get_logger

from .decoding import DecodedWindow, greedy_decode
from .onnx_model import WhisperOnnx

log = get_logger(__name__)


@dataclass
class _Job:
    mel: npt.NDArray[np.float32]
    prompt: list[int]
    future: Future[DecodedWindow] = field(default_factory=Future)


class DynamicBatcher:
    def __init__(
        self,
        model: WhisperOnnx,
        max_batch: int = 8,
        max_wait_ms: float = 10.0,
        on_batch: Callable[[int], None] | None = None,
        lanes: int = 1,
    ) -> None:
        if max_batch < 1 or lanes < 1:
            raise ValueError("max_batch and lanes must be at least 1")
        self._model = model
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000.0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._on_batch = on_batch
        self._threads = [
            threading.Thread(target=self._run, name=f"oyez-inference-{lane}", daemon=True)
            for lane in range(lanes)
        ]
        self._started = False
        self._lock = threading.Lock()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        with self._lock:
            if not self._started:
                for thread in self._threads:
                    thread.start()
                self._started = True

    def stop(self) -> None:
        with self._lock:
            if self._started:
                for _ in self._threads:
                    self._queue.put(None)
                for thread in self._threads:
                    thread.join(timeout=30)
                self._started = False

    def submit(self, mel: npt.NDArray[np.float32], prompt: list[int]) -> Future[DecodedWindow]:
        self.start()
        job = _Job(mel, prompt)
        self._queue.put(job)
        return job.future

    async def submit_async(self, mel: npt.NDArray[np.float32], prompt: list[int]) -> DecodedWindow:
        return await asyncio.wrap_future(self.submit(mel, prompt))

    @property
    def lanes(self) -> int:
        return len(self._threads)

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs = [first]
        deadline = time.monotonic() + self._max_wait
        stop = False
        while len(jobs) < self._max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            jobs.append(job)
        return jobs, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._gather(first)
            by_prompt_length: dict[int, list[_Job]] = {}
            for job in jobs:
                by_prompt_length.setdefault(len(job.prompt), []).append(job)
            for group in by_prompt_length.values():
                self._run_batch(group)
            if stop:
                return

    def _run_batch(self, jobs: list[_Job]) -> None:
        live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            if self._on_batch is not None:
                self._on_batch(len(live))
            mel = np.stack([job.mel for job in live])
            cross_k, cross_v = self._model.encode(mel)
            results = greedy_decode(self._model, cross_k, cross_v, [job.prompt for job in live])
        except Exception as exc:  # noqa: BLE001 - every waiting caller must hear about the failure
            log.error("Inference batch failed", error=str(exc), batch=len(live))
            for job in live:
                job.future.set_exception(exc)
            return
        for job, result in zip(live, results, strict=True):
            job.future.set_result(result)
