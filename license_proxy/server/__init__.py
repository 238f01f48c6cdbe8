"""``oyez license-server``: the reference upstream license server (revocations, usage ingestion)."""
