"""Logging setup shared by every service: structlog, JSON or human lines, request IDs.

JSON lines carry ``timestamp``, ``level``, ``message``, ``component`` and, inside a request,
``request_id`` (bound with :func:`bind_request_id`). The human format prints ``LEVEL: message``
followed by ``key=value`` pairs, so the documented log lines can be grepped in either format.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["json", "text"]
_ENV_LOG_FORMAT = "OYEZ_LOG_FORMAT"
_ENV_LOG_LEVEL = "OYEZ_LOG_LEVEL"

# Keys that must never reach a log line (api-contract.md: keys never in logs).
_REDACTED_KEYS = frozenset({"license_key", "authorization", "token", "api_key", "password", "secret"})


def _rename_event(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event_dict["message"] = event_dict.pop("event", "")
    return event_dict


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in _REDACTED_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


def _human_renderer(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> str:
    level = str(event_dict.pop("level", "info")).upper()
    message = event_dict.pop("message", "")
    event_dict.pop("timestamp", None)
    extras = " ".join(f"{key}={value}" for key, value in event_dict.items())
    return f"{level}: {message}" + (f" [{extras}]" if extras else "")


def configure_logging(
    component: str,
    fmt: LogFormat | None = None,
    level: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the stdlib root logger for one process."""
    chosen_format: str = fmt or os.environ.get(_ENV_LOG_FORMAT, "json")
    chosen_level = (level or os.environ.get(_ENV_LOG_LEVEL, "INFO")).upper()
    numeric_level = logging.getLevelNamesMapping().get(chosen_level, logging.INFO)
    renderer: Any = structlog.processors.JSONRenderer() if chosen_format == "json" else _human_renderer
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            structlog.processors.format_exc_info,
            _redact,
            _rename_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(component=component)
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=stream or sys.stderr)


def get_logger(name: str | None = None) -> Any:
    """A lazy structlog logger (it follows a later :func:`configure_logging`); ``name`` becomes
    the ``logger`` field."""
    return structlog.get_logger() if name is None else structlog.get_logger(logger_name=name)


def bind_request_id(request_id: str) -> None:
    """Attach a request ID to every log line of the current context (task/thread)."""
    structlog.contextvars.bind_contextvars(request_id=request_id)


def clear_request_id() -> None:
    structlog.contextvars.unbind_contextvars("request_id")
