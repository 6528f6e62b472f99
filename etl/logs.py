"""Logging set-up: readable text, or one JSON object per line with stable field names.

JSON fields: ``ts``, ``level``, ``logger``, ``message``, and when known ``run_id``,
``referral_id``, ``outcome``, ``duration``, ``request_id`` (passed as ``extra=``); the line that
ends a run adds its cost: ``requests``, ``list_requests``, ``get_requests``, ``stored`` (referrals
created or updated) and ``requests_per_stored``.
Every line is masked (``etl.redact.mask``: tokens in use, Authorization values, bearer and JWT
shapes), as a last line of defence.

Tracebacks appear only at ``-vv``: below that, a record that carries an exception shows the
exception's type and first line instead, whoever logged it (our modules or a library).
Python warnings are routed through logging, so that in JSON mode they are JSON lines too.
:func:`json_line` makes the same kind of object for what the CLI prints on stdout (the run's
``summary`` record, ``db upgrade``'s line).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from types import TracebackType
from typing import IO

from etl.errors import first_line
from etl.redact import mask

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

FIELDS = (
    "run_id",
    "referral_id",
    "outcome",
    "duration",
    "request_id",
    "status_code",
    "event",
    # the run's end: its cost
    "requests",
    "list_requests",
    "get_requests",
    "stored",
    "requests_per_stored",
)
__all__ = ["FIELDS", "JsonFormatter", "TextFormatter", "json_line", "mask", "setup_logging"]


def _stamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


def json_line(
    message: str, *, level: str = "info", logger: str = "etl.cli", **fields: object
) -> str:
    """One JSON object (the log line's fields, then ``fields``) for a line printed on stdout."""
    entry: dict[str, object] = {
        "ts": _stamp(time.time()),
        "level": level,
        "logger": logger,
        "message": mask(message),
    }
    entry.update({k: v for k, v in fields.items() if v is not None})
    return json.dumps(entry, ensure_ascii=False, default=str)


def _one_line(exc_info: ExcInfo) -> str:
    """An exception as ``Type: first line of its message`` (no traceback)."""
    exc = exc_info[1]
    if exc is None:
        return ""
    line = first_line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


class JsonFormatter(logging.Formatter):
    def __init__(self, tracebacks: bool = True) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802 (logging's name)
        return super().formatException(ei) if self.tracebacks else _one_line(ei)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["error"] = mask(self.formatException(record.exc_info))
        if record.stack_info and self.tracebacks:
            entry["stack"] = mask(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, tracebacks: bool = True) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S")
        self.tracebacks = tracebacks

    def formatException(self, ei: ExcInfo) -> str:  # noqa: N802 (logging's name)
        return super().formatException(ei) if self.tracebacks else "  " + _one_line(ei)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (logging's name)
        return super().formatStack(stack_info) if self.tracebacks else ""

    def format(self, record: logging.LogRecord) -> str:
        # logging caches the formatted traceback on the record; never reuse another's.
        cached, record.exc_text = record.exc_text, None
        try:
            return mask(super().format(record)).rstrip("\n")
        finally:
            record.exc_text = cached


def setup_logging(fmt: str = "text", verbose: int = 0, stream: IO[str] | None = None) -> None:
    """Configure the root logger once per process (idempotent); tracebacks only at ``-vv``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    tracebacks = verbose > 1
    handler.setFormatter(JsonFormatter(tracebacks) if fmt == "json" else TextFormatter(tracebacks))
    logging.captureWarnings(True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_referrals_etl", False):
            root.removeHandler(old)
    handler._referrals_etl = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(
        logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    )
    # Our own INFO lines are wanted at -v; libraries' chatter only at -vv.
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.getLogger("etl").setLevel(level)
    for noisy in ("httpx", "httpcore", "aiohttp", "msal", "apscheduler", "alembic", "uvicorn"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)
