"""WorkerMetrics: the exposed names of api-contract.md C10, on a registry of their own."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from asr_worker.service.metrics import KNOWN_ERROR_CODES, WorkerMetrics


def samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_every_contract_metric_is_exposed_with_its_type() -> None:
    text = WorkerMetrics().render().decode()
    expected_types = {
        "asr_active_requests": "gauge",
        "asr_batch_queue_depth": "gauge",
        "asr_active_streams": "gauge",
        "asr_stream_queue_depth": "gauge",
        "asr_e2e_latency_seconds": "histogram",
        "asr_processing_duration_seconds": "histogram",
        "asr_real_time_factor": "histogram",
        "asr_errors_total": "counter",
        "total_requests_total": "counter",
    }
    for name, kind in expected_types.items():
        assert re.search(rf"^# TYPE {name} {kind}$", text, re.MULTILINE), name
    assert re.search(r"^total_requests_total 0\.0$", text, re.MULTILINE)
    assert re.search(r"^process_(cpu_seconds_total|resident_memory_bytes) ", text, re.MULTILINE)


def test_registries_are_independent() -> None:
    first, second = WorkerMetrics(), WorkerMetrics()
    first.request_received()
    assert samples(first)[("total_requests_total", ())] == 1.0
    assert samples(second)[("total_requests_total", ())] == 0.0


def test_error_series_exist_before_the_first_error_and_count_by_code() -> None:
    metrics = WorkerMetrics()
    metrics.error("FILE_TOO_LARGE")
    metrics.error("FILE_TOO_LARGE")
    found = samples(metrics)
    for code in KNOWN_ERROR_CODES:
        assert ("asr_errors_total", (("code", code),)) in found
    assert found[("asr_errors_total", (("code", "FILE_TOO_LARGE"),))] == 2.0
    assert found[("asr_errors_total", (("code", "EMPTY_AUDIO"),))] == 0.0


def test_gauges_read_live_counts_at_scrape_time() -> None:
    metrics = WorkerMetrics()
    counts = {"requests": 0, "batch_queue": 0, "streams": 0, "stream_queue": 0}
    metrics.track_admission(
        active_requests=lambda: counts["requests"],
        batch_queue_depth=lambda: counts["batch_queue"],
        active_streams=lambda: counts["streams"],
        stream_queue_depth=lambda: counts["stream_queue"],
    )
    counts.update(requests=3, batch_queue=2, streams=5, stream_queue=1)
    found = samples(metrics)
    assert found[("asr_active_requests", ())] == 3.0
    assert found[("asr_batch_queue_depth", ())] == 2.0
    assert found[("asr_active_streams", ())] == 5.0
    assert found[("asr_stream_queue_depth", ())] == 1.0


def test_transcription_observations_land_in_their_histograms() -> None:
    metrics = WorkerMetrics()
    metrics.transcription_completed(language="de", processing_seconds=0.4, real_time_factor=0.04)
    metrics.request_finished(0.5)
    found = samples(metrics)
    assert found[("asr_processing_duration_seconds_count", (("language", "de"),))] == 1.0
    assert found[("asr_processing_duration_seconds_sum", (("language", "de"),))] == 0.4
    assert found[("asr_real_time_factor_bucket", (("le", "0.05"),))] == 1.0
    assert found[("asr_real_time_factor_bucket", (("le", "0.02"),))] == 0.0
    assert found[("asr_e2e_latency_seconds_count", ())] == 1.0
