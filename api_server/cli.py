"""``oyez api``: run the API server from the environment (dispatched from :mod:`oyez.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from api_server.serve import EXIT_BAD_CONFIG, serve
from api_server.settings import ApiConfigError, load_api_settings
from oyez.logs import configure_logging


def api_serve(_: argparse.Namespace) -> int:
    try:
        settings = load_api_settings()
    except ApiConfigError as exc:
        configure_logging("api_server")
        print(f"CRITICAL: {exc.message}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    configure_logging("api_server", fmt=settings.log_format, level=settings.log_level)
    return asyncio.run(serve(settings))
