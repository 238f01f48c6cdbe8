"""Oyez: open, self-hosted speech-to-text. This package is the small shared core."""

__version__ = "0.1.0"
