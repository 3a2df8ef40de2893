"""Log setup: stable event names with their fields, as JSON lines or ``key=value`` text.

Modules log ``log.info("upload.created", extra={"upload_id": ...})``; the default formatter
would drop the fields, which are the useful part. Every record made while a request is being
served carries its request id (``RequestIdMiddleware`` sets it in a context variable). Fields
whose names say they hold a secret are masked, whatever logged them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# uvicorn adds an ANSI-coloured copy of its message; noise in a log pipeline.
_DROPPED = frozenset({"color_message"})
_SECRET_WORDS = ("secret", "password", "token", "authorization", "signature", "credential")
REDACTED = "[redacted]"

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tus_request_id", default=None
)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and k not in _DROPPED}
    for key in fields:
        if any(word in key.lower() for word in _SECRET_WORDS):
            fields[key] = REDACTED
    return fields


class RequestIdFilter(logging.Filter):
    """Stamps the current request id on records logged while serving a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = request_id_var.get()
            if request_id is not None:
                record.request_id = request_id
        return True


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{k}={v!r}" for k, v in sorted(fields.items()))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event (the message), then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str, fmt: str = "auto") -> None:
    handler = logging.StreamHandler()
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    if use_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's loggers propagate to ours (log_config=None leaves them handler-less).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
