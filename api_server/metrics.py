"""Prometheus metrics of the API server (one registry per app, so tests can run several)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter(
            "api_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "api_request_duration_seconds",
            "Time from request to response",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("api_in_flight_requests", "Transcription requests being served", registry=r)
        self.queue_depth = Gauge("api_queue_depth", "Requests waiting for a worker slot", registry=r)
        self.queue_rejections = Counter(
            "api_queue_rejections", "Requests refused by admission control", ["reason"], registry=r
        )
        self.workers_ready = Gauge("api_workers_ready", "Ready ASR workers known to this replica", registry=r)
        self.worker_failures = Counter(
            "api_worker_failures",
            "Worker calls that failed and were retried or given up",
            ["status"],
            registry=r,
        )
        self.rate_limited = Counter(
            "api_rate_limited", "Requests refused by a license limit", ["limit"], registry=r
        )
        self.limits_unenforced = Counter(
            "api_limits_unenforced",
            "Requests admitted without a limit check because Redis was unreachable",
            registry=r,
        )
        self.audio_seconds = Counter("api_audio_seconds", "Seconds of audio transcribed", registry=r)
        self.usage_dropped = Counter(
            "api_usage_events_dropped",
            "Usage events dropped because the local buffer was full while the proxy was down",
            registry=r,
        )
        self.usage_pending = Gauge("api_usage_events_pending", "Usage events not yet sent", registry=r)
        self.jobs = Counter("api_jobs", "Asynchronous jobs finished, by status", ["status"], registry=r)
        self.webhooks = Counter(
            "api_webhooks", "Job webhooks delivered or given up, by outcome", ["outcome"], registry=r
        )
        self.active_streams = Gauge(
            "asr_active_streams", "Streaming sessions bridged to a worker", registry=r
        )
        self.stream_queue_depth = Gauge(
            "asr_stream_queue_depth", "Streaming sessions waiting for a worker slot", registry=r
        )
        self.stream_failovers = Counter(
            "api_stream_failovers",
            "Streaming sessions moved to another worker after a worker loss",
            registry=r,
        )

    def export(self) -> bytes:
        return generate_latest(self.registry)
