"""Prometheus metrics of the ASR worker (api-contract.md C10), on a registry of their own.

Exposed names: gauges ``asr_active_requests``, ``asr_batch_queue_depth``, ``asr_active_streams``,
``asr_stream_queue_depth``; histograms ``asr_e2e_latency_seconds``,
``asr_processing_duration_seconds{language}``, ``asr_real_time_factor``; counters
``asr_errors_total{code}`` and ``total_requests_total``; plus the standard ``process_*`` metrics.
The four gauges are read from the admission gate when scraped, so they cannot drift from it.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from oyez import errors

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)

CountSource = Callable[[], int]

# Error codes the service can report, pre-created at 0 so every series exists before its first error.
_ERROR_TYPES = (
    errors.InvalidParameter,
    errors.UnsupportedFormat,
    errors.CorruptAudio,
    errors.EmptyAudio,
    errors.AudioTooLong,
    errors.FileTooLarge,
    errors.UnsupportedLanguage,
    errors.ModelError,
    errors.ServiceUnavailable,
    errors.CapacityExceeded,
)
KNOWN_ERROR_CODES = (*(cls.code for cls in _ERROR_TYPES), "INTERNAL_ERROR", "CANCELLED")


class WorkerMetrics:
    """The worker's metric families and the few operations the service performs on them."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.active_requests = Gauge(
            "asr_active_requests", "Batch requests currently being processed.", registry=self.registry
        )
        self.batch_queue_depth = Gauge(
            "asr_batch_queue_depth", "Batch requests waiting for a free slot.", registry=self.registry
        )
        self.active_streams = Gauge(
            "asr_active_streams", "Streaming sessions currently open.", registry=self.registry
        )
        self.stream_queue_depth = Gauge(
            "asr_stream_queue_depth", "Streaming sessions waiting for a free slot.", registry=self.registry
        )
        self.e2e_latency = Histogram(
            "asr_e2e_latency_seconds",
            "Seconds from a batch request's arrival to its response.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.processing_duration = Histogram(
            "asr_processing_duration_seconds",
            "Seconds spent decoding and transcribing one batch request.",
            ["language"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.real_time_factor = Histogram(
            "asr_real_time_factor",
            "Processing seconds per second of audio.",
            buckets=_RTF_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "asr_errors", "Failed requests and streams, by error code.", ["code"], registry=self.registry
        )
        for code in KNOWN_ERROR_CODES:
            self.errors.labels(code=code)
        self.total_requests = Counter(
            "total_requests", "Batch requests and streams received.", registry=self.registry
        )

    def track_admission(
        self,
        *,
        active_requests: CountSource,
        batch_queue_depth: CountSource,
        active_streams: CountSource,
        stream_queue_depth: CountSource,
    ) -> None:
        """Read the four gauges from live counters at scrape time."""
        self.active_requests.set_function(active_requests)
        self.batch_queue_depth.set_function(batch_queue_depth)
        self.active_streams.set_function(active_streams)
        self.stream_queue_depth.set_function(stream_queue_depth)

    def request_received(self) -> None:
        self.total_requests.inc()

    def transcription_completed(
        self, *, language: str, processing_seconds: float, real_time_factor: float
    ) -> None:
        self.processing_duration.labels(language=language).observe(processing_seconds)
        self.real_time_factor.observe(real_time_factor)

    def request_finished(self, e2e_seconds: float) -> None:
        """Observe the end-to-end latency of a batch request that succeeded."""
        self.e2e_latency.observe(e2e_seconds)

    def error(self, code: str) -> None:
        self.errors.labels(code=code).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
