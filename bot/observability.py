"""Structured logging with structlog: JSON or console, stable context keys, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Slack tokens, Anthropic keys, signing secrets passed as values, bearer headers.
_SECRET = re.compile(
    r"(xox[abposr]-[A-Za-z0-9-]{4,}|xapp-[A-Za-z0-9-]{4,}|sk-ant-[A-Za-z0-9_-]{4,}|"
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,})"
)
_SECRET_KEYS = frozenset({"token", "api_key", "signing_secret", "authorization", "password", "secret"})


def redact(text: str) -> str:
    return _SECRET.sub("[redacted]", text)


def _redact_event(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key.lower() in _SECRET_KEYS:
            event[key] = "[redacted]"
        elif isinstance(value, str):
            event[key] = redact(value)
    return event


def configure_logging(level: str = "INFO", fmt: str = "console", *, stream: Any = None) -> None:
    """Configure structlog and route the standard library's logs (bolt, aiohttp) through it."""
    out = stream or sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_event,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared[1:], processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                                                  renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "sqlalchemy.engine", "httpx", "httpx2", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
