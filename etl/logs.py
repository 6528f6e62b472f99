"""Logging set-up: readable text, or one JSON object per line with stable field names.

JSON fields: ``ts``, ``level``, ``logger``, ``message``, and when known ``run_id``,
``referral_id``, ``outcome``, ``duration``, ``request_id`` (passed as ``extra=``).
Every line is masked (``etl.redact.mask``: tokens in use, Authorization values, bearer and JWT
shapes), as a last line of defence.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO

from etl.redact import mask

FIELDS = ("run_id", "referral_id", "outcome", "duration", "request_id", "status_code", "event")
__all__ = ["FIELDS", "JsonFormatter", "TextFormatter", "mask", "setup_logging"]


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
