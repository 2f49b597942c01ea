"""Structured logs: one JSON object per line (or plain text), with the ``extra`` fields.

Logs carry ids, channels, counts and reasons, never message content: callers
pass identifiers in ``extra``, not values read from a file (PHI). Keys whose
name suggests a secret are redacted here as a last line of defence.

The request context (:func:`bind_context`: ``request_id``, ``correlation_id``,
and the API ``client`` once authenticated) is a :class:`contextvars.ContextVar`
set by the API's request middleware (:mod:`bridge.api.context`); every line
logged while it is bound carries its fields, in threads the request's work
runs in too (Starlette copies the context into its thread pool).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["bind_client", "bind_context", "configure", "context_fields", "current_correlation_id",
           "reset_context"]

_STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName", "color_message"}
_SECRET = ("password", "secret", "token", "key_hash", "api_key", "authorization")

#: the fields of the request being served; a dict, so a dependency running in a copied
#: context (FastAPI's thread pool) can add the client name the middleware's context sees
_context: ContextVar[dict[str, str] | None] = ContextVar("bridge_log_context", default=None)


def bind_context(**fields: str) -> Token[dict[str, str] | None]:
    """Bind ``fields`` (request_id, correlation_id) to this context; undo with :func:`reset_context`."""
    return _context.set(dict(fields))


def reset_context(token: Token[dict[str, str] | None]) -> None:
    _context.reset(token)


def bind_client(name: str) -> None:
    """Add the authenticated API client's name to the bound request context, if any."""
    ctx = _context.get()
    if ctx is not None:
        ctx["client"] = name


def context_fields() -> dict[str, str]:
    ctx = _context.get()
    return dict(ctx) if ctx else {}


def current_correlation_id() -> str | None:
    """The correlation id of the request being served (None outside a request)."""
    ctx = _context.get()
    return ctx.get("correlation_id") if ctx else None


def _with_context(record: logging.LogRecord) -> dict[str, Any]:
    extra = {k: v for k, v in record.__dict__.items() if k not in _STD and not k.startswith("_")}
    for k, v in context_fields().items():
        extra.setdefault(k, v)
    return extra


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _with_context(record).items():
            doc[k] = "[redacted]" if any(s in k.lower() for s in _SECRET) else v
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{datetime.fromtimestamp(record.created, UTC):%H:%M:%S} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extra = _with_context(record)
        if extra:
            base += " " + " ".join(f"{k}={'[redacted]' if any(s in k.lower() for s in _SECRET) else v}"
                                   for k, v in extra.items())
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def configure(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Log ``level`` and above to ``stream`` (standard error by default), as JSON lines or text."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("paramiko", "pika", "watchdog", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
