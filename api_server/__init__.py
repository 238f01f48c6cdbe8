"""The Oyez API server (:7100)."""
