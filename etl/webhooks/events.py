"""A Partner Center callback body -> :class:`WebhookEvent`, or :class:`RejectedCallback`.

The body is ``{"EventName", "ResourceUri", "ResourceName", "AuditUri", "ResourceChangeUtcDate"}``;
the referral id is the last path segment of ``ResourceUri`` (whose host and path are not the
Referrals API's: it is used for the id only). There is no event id: an event is identified by
(referral id, event name, ResourceChangeUtcDate).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from etl.errors import InvalidIdError
from etl.ids import canonical_id

EVENT_NAMES = (
    "referral-created",
    "referral-updated",
    "related-referral-created",
    "related-referral-updated",
)
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,7}))?(Z|[+-]\d{2}:\d{2})?")


class RejectedCallback(Exception):  # noqa: N818 - an answer to give, not a bug
    """A callback that is refused: the HTTP status to answer and a reason for one log line.

    ``reason`` is a short metric label (``bad_signature``, ``host_not_allowed``, ...); the
    message never contains the body.
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    name: str
    referral_id: str
    change_date: str  # ResourceChangeUtcDate as sent
    changed_at: datetime | None  # the same, parsed (None when it is not a date we can read)


def parse_event(body: bytes) -> WebhookEvent:
    """The event in a (verified) callback body; 400 for anything that is not one."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RejectedCallback(400, "malformed", "the body is not JSON") from None
    if not isinstance(doc, dict):
        raise RejectedCallback(400, "malformed", "the body is not a JSON object")
    name, uri, date = doc.get("EventName"), doc.get("ResourceUri"), doc.get("ResourceChangeUtcDate")
    if not isinstance(name, str) or name.lower() not in EVENT_NAMES:
        shown = name[:64] if isinstance(name, str) else type(name).__name__
        raise RejectedCallback(400, "unknown_event", f"EventName {shown!r} is not a referral event")
    if not isinstance(uri, str) or not uri:
        raise RejectedCallback(400, "malformed", "ResourceUri is missing")
    if not isinstance(date, str) or not date or len(date) > 40:
        raise RejectedCallback(400, "malformed", "ResourceChangeUtcDate is missing or too long")
    segment = urlsplit(uri).path.rstrip("/").rpartition("/")[2]
    try:
        referral_id = canonical_id(segment)
    except InvalidIdError as exc:
        raise RejectedCallback(400, "malformed", f"ResourceUri names no referral: {exc}") from None
    return WebhookEvent(name.lower(), referral_id, date, parse_change_date(date))


def parse_change_date(text: str) -> datetime | None:
    """``2026-12-02T01:02:03.1234567Z`` (1-7 fraction digits, Z or offset or none = UTC)."""
    match = _DATE.fullmatch(text.strip())
    if match is None:
        return None
    base, fraction, zone = match.groups()
    micro = (fraction or "").ljust(6, "0")[:6]
    suffix = "+00:00" if zone in (None, "Z") else zone
    try:
        return datetime.fromisoformat(f"{base}.{micro}{suffix}").astimezone(UTC)
    except ValueError:
        return None
