"""The operator reconciles fast in tests: every 0.5 s instead of 30 s (read when handlers import)."""

from __future__ import annotations

import os

os.environ.setdefault("OYEZ_OPERATOR_RECONCILE_INTERVAL_S", "0.5")
os.environ.setdefault("OYEZ_OPERATOR_RECONCILE_INITIAL_DELAY_S", "0.2")
