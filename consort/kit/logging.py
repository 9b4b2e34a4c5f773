"""JSON logs: one object a line, with the app id and the trace id of the request in hand."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

#: The W3C trace id of the request or event being handled, if any.
trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)
#: The W3C `traceparent` of the request or event being handled, passed on to the sidecar.
traceparent_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "traceparent", default=None
)


def trace_id_from_traceparent(traceparent: str | None) -> str | None:
    """The trace id inside a W3C `traceparent` header (`00-<trace>-<span>-<flags>`)."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) >= 4 and len(parts[1]) == 32:
        return parts[1]
    return None


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object with `app_id` and `trace_id`."""

    def __init__(self, app_id: str) -> None:
        super().__init__()
        self.app_id = app_id

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (exceptions included as text)."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "app_id": self.app_id,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace_id = trace_id_var.get()
        if trace_id:
            entry["trace_id"] = trace_id
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(app_id: str, level: str = "INFO") -> None:
    """Send every logger, uvicorn's included, to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(app_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Access lines for every health probe would drown the log; errors still show.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
