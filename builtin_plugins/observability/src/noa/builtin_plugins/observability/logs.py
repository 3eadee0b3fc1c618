"""structlog set-up: JSON lines (or console) for NOA's own and every library's log records.

Logs go to stderr so that a command's output on stdout (``noa config show --json``)
stays clean.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
import structlog
from noa.builtin_plugins.observability.accesslog import JsonAccessLog, StructlogAccessLog
from noa.builtin_plugins.observability.config import ObservabilityConfig

__all__ = ["access_logger", "configure_logging"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_encoder = msgspec.json.Encoder(enc_hook=str)


def _json(_logger: Any, _name: str, event: structlog.typing.EventDict) -> bytes:
    return _encoder.encode(event)


def configure_logging(config: ObservabilityConfig) -> None:
    """Route structlog and the stdlib ``logging`` tree through one renderer."""
    level = _LEVELS[config.log_level]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if config.log_format == "json":
        structlog.configure(
            processors=[*shared, structlog.processors.format_exc_info, _json],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
            cache_logger_on_first_use=True,
        )
        stdlib_renderer: structlog.typing.Processor = structlog.processors.JSONRenderer(
            serializer=lambda obj, **_: _encoder.encode(obj).decode()
        )
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        structlog.configure(
            processors=[*shared, renderer],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            cache_logger_on_first_use=True,
        )
        stdlib_renderer = renderer
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=stdlib_renderer,
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_noa", False)]:
        root.removeHandler(old)
    handler._noa = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def access_logger(config: ObservabilityConfig) -> JsonAccessLog | StructlogAccessLog:
    """The access log writer for the configured format."""
    if config.log_format == "json":
        return JsonAccessLog()
    return StructlogAccessLog(structlog.get_logger("noa.access"))
