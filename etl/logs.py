"""Logging set-up: readable text, or one JSON object per line with stable field names.

JSON fields: ``ts``, ``level``, ``logger``, ``message``, and when known ``run_id``,
``referral_id``, ``outcome``, ``duration``, ``request_id`` (passed as ``extra=``); the line that
ends a run adds its cost: ``requests``, ``list_requests``, ``get_requests``, ``stored`` (referrals
created or updated) and ``requests_per_stored``.
A filter masks anything that looks like a bearer token or JWT, as a last line of defence.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO

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
_SECRETISH = re.compile(
    r"(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9._-]+", re.IGNORECASE
)


def mask(text: str) -> str:
    """Hide bearer tokens and JWTs in a string."""
    return _SECRETISH.sub(lambda m: (m.group(1) or "") + "***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
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
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def setup_logging(fmt: str = "text", verbose: int = 0, stream: IO[str] | None = None) -> None:
    """Configure the root logger once per process (idempotent)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
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
