"""The license proxy (:6699): signed license keys, offline grace period, metadata-only usage reports."""
