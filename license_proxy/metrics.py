"""Prometheus metrics of the license proxy (one registry per app, so tests can run several)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.grace_period_active = Gauge(
            "license_proxy_grace_period_active",
            "1 while the license server is unreachable and the cached validation is being used",
            registry=r,
        )
        self.grace_period_remaining = Gauge(
            "license_proxy_grace_period_remaining_seconds",
            "Seconds left in the offline grace period (0 when not in grace)",
            registry=r,
        )
        self.license_valid = Gauge("license_proxy_license_valid", "1 while the license is usable", registry=r)
        self.license_expiry = Gauge(
            "license_proxy_license_expiry_timestamp_seconds", "Unix time the license key expires", registry=r
        )
        self.upstream_failures = Counter(
            "license_proxy_upstream_failures",
            "Failed calls to the license server",
            ["operation"],
            registry=r,
        )
        self.validations = Counter(
            "license_proxy_validations", "Answers to POST /v1/validate", ["result"], registry=r
        )
        self.spool_depth = Gauge(
            "license_proxy_usage_spool_depth", "Usage events not yet acknowledged upstream", registry=r
        )
        self.usage_events = Counter(
            "license_proxy_usage_events", "Usage events accepted into the spool", registry=r
        )
        self.usage_duplicates = Counter(
            "license_proxy_usage_duplicate_events", "Usage events ignored as already recorded", registry=r
        )
        self.batches_sent = Counter(
            "license_proxy_usage_batches_sent", "Usage batches acknowledged by the license server", registry=r
        )
        self.batches_rejected = Counter(
            "license_proxy_usage_batches_rejected",
            "Usage batches the license server refused for good (kept in the spool's rejected table)",
            registry=r,
        )

    def export(self) -> bytes:
        return generate_latest(self.registry)
