"""Shared settings for the hostile-input fuzz tests (hypothesis).

Runs are derandomised, so CI explores the same inputs every time and a failure reproduces. Set
``OYEZ_FUZZ_EXAMPLES`` to explore more (for example 2000 on a long run); the default keeps the
suite fast. There is no deadline per example: a hang shows as a test that never ends, not as a
slow example.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def fuzz_settings(examples: int) -> settings:
    """``examples`` by default, or ``OYEZ_FUZZ_EXAMPLES`` when set."""
    return settings(
        max_examples=int(os.environ.get("OYEZ_FUZZ_EXAMPLES", examples)),
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
