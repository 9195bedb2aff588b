"""JSON logs: one JSON object per line, from structlog and from stdlib `logging` alike.

Owns the log pipeline of a process. Every line has `ts` (ISO 8601 UTC), `level`, `event` and
`service`, then the bound keys (`shard`, `order_id`, `request_id`, ...) and the keys bound in
structlog's contextvars (the HTTP layer binds `request_id` there). `service` is the configured
default unless the logger's own context names one: in the embedded mode five services share
the process, each with `get_logger(service=...)`. Before rendering, the value of every key
whose name contains `token`, `secret` or `password`, or is `authorization` (also in nested
dicts), is replaced by `***`. Every line also has `pid`, the id of the process that wrote it
(unless the line names one itself, as the distributed supervisor's lines about a child do).

Stdlib records all come from libraries (dex itself logs with structlog): uvicorn, httpx,
httpcore, litestar, asyncio, aiosqlite, ... They go through the same processors on a root
handler, at `library_level` (warning by default) or `level`, whichever is higher, so that a
proxied GET adds no httpx line and uvicorn prints no "Started server process" per port; the
services log their own start line. `configure_logging` may be called again: it replaces the
previous configuration, and loggers from `get_logger` follow it since they resolve lazily.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import IO, Any, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

MASK = "***"
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_HANDLER_NAME = "dex-json"
_SECRET_PARTS = ("token", "secret", "password")
_FIRST_KEYS = ("ts", "level", "service", "event")
# Library loggers whose handlers and levels we take over (any other stdlib logger follows
# the root logger, which has the same level).
LIBRARY_LOGGERS = (
    "aiosqlite",
    "asyncio",
    "asyncpg",
    "httpcore",
    "httpx",
    "litestar",
    "redis",
    "sqlalchemy",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
)


def configure_logging(
    service: str,
    level: str = "info",
    stream: IO[str] | None = None,
    library_level: str = "warning",
) -> None:
    """Send structlog and stdlib logs as JSON lines to `stream` (stdout by default).

    `level` filters dex's own logs; stdlib (library) records pass at `library_level` or
    `level`, whichever is higher.
    """
    for what, value in (("log level", level), ("library log level", library_level)):
        if value not in LEVELS:
            raise ValueError(f"{what} must be one of {', '.join(LEVELS)}, got {value!r}")
    stdlib_level = max(LEVELS[level], LEVELS[library_level])
    out = cast(TextIO, stream if stream is not None else sys.stdout)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _DefaultService(service),
        _add_pid,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        mask_secrets,
        structlog.processors.format_exc_info,
    ]
    render: list[Processor] = [
        _first_keys,
        structlog.processors.JSONRenderer(separators=(",", ":")),
    ]
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    reset_logging()
    structlog.configure(
        processors=[*shared, *render],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        context_class=dict,
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(stdlib_level)
    for name in LIBRARY_LOGGERS:
        # Drop handlers a library (or uvicorn's default log config) put there: one output.
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
        named.setLevel(stdlib_level)


def reset_logging() -> None:
    """Undo `configure_logging`: structlog defaults, and our root handler removed (tests)."""
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)


def get_logger(**bind: object) -> FilteringBoundLogger:
    """A logger with `bind` as its context; it follows later `configure_logging` calls."""
    logger: FilteringBoundLogger = structlog.get_logger(**bind)
    return logger


def is_secret_key(key: str) -> bool:
    """Whether a log key names a secret whose value must never be written."""
    lowered = key.lower()
    return lowered == "authorization" or any(part in lowered for part in _SECRET_PARTS)


def mask_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace the values of secret-named keys by `***`."""
    return {key: _masked(key, value) for key, value in event_dict.items()}


def _masked(key: object, value: Any) -> Any:
    if isinstance(key, str) and is_secret_key(key):
        return MASK
    if isinstance(value, Mapping):
        return {k: _masked(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(None, item) for item in value]
    return value


class _DefaultService:
    """structlog processor: `service` is the configured one unless the context has one."""

    def __init__(self, service: str) -> None:
        self.service = service

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", self.service)
        return event_dict


def _add_pid(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: `pid` of the writing process, unless the line names one."""
    event_dict.setdefault("pid", os.getpid())
    return event_dict


def _first_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Put ts, level, service and event first so that lines read well in a terminal."""
    ordered = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered
