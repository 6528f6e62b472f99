"""Fault switches, request counters and the throttling token bucket of the sandbox."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Any

_ID_SETS = (
    "invalid_json_ids",
    "truncated_ids",
    "non_object_ids",
    "wrong_content_type_ids",
    "oversized_ids",
    "mismatched_id_ids",
    "echo_auth_ids",
)
_LIST_ID_SETS = ("partial_listed_ids",)


@dataclass
class Faults:
    """Switches that make the API misbehave; change them at any time, even while serving."""

    latency_seconds: float = 0.0
    send_304: bool = True
    send_etag_header: bool = True
    # False: listed documents carry no eTag and no @odata.context, as in Microsoft's list sample.
    list_etag: bool = True
    # False: a $filter on updatedDateTime/createdDateTime is answered 400, as by an API that
    # does not accept it.
    time_filter: bool = True
    # Ids whose listed document lacks its status (a GET by id still serves it whole).
    partial_listed_ids: set[str] = field(default_factory=set)
    throttle_rps: float = 0.0
    error_rate_503: float = 0.0
    fail_next: int = 0
    down: bool = False
    forbidden: bool = False
    accepted_tokens: set[str] | None = None
    invalid_json_ids: set[str] = field(default_factory=set)
    truncated_ids: set[str] = field(default_factory=set)
    non_object_ids: set[str] = field(default_factory=set)
    wrong_content_type_ids: set[str] = field(default_factory=set)
    oversized_ids: set[str] = field(default_factory=set)
    mismatched_id_ids: set[str] = field(default_factory=set)
    echo_auth_ids: set[str] = field(default_factory=set)  # 400 whose body echoes the token

    def update(self, changes: dict[str, Any]) -> None:
        """Set fields from JSON-like values (lists become sets); unknown names raise ValueError."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault switch(es) {unknown}; known: {sorted(known)}")
        for name, value in changes.items():
            if name in _ID_SETS or name in _LIST_ID_SETS or name == "accepted_tokens":
                value = None if value is None and name == "accepted_tokens" else set(value or ())
            elif name in ("latency_seconds", "throttle_rps", "error_rate_503"):
                value = float(value)
            elif name == "fail_next":
                value = int(value)
            else:
                value = bool(value)
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (sets as sorted lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = sorted(value) if isinstance(value, set) else value
        return out

    def has_id_fault(self, referral_id: str) -> bool:
        """Whether any per-id fault names ``referral_id``."""
        return any(referral_id in getattr(self, name) for name in _ID_SETS)


@dataclass
class Stats:
    """Request counters; ``stats["total"]`` works as well as ``stats.total``."""

    total: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    not_modified: int = 0
    throttled: int = 0

    def count(self, kind: str, status: int) -> None:
        """Count one answered request."""
        self.total += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if status == 304:
            self.not_modified += 1
        elif status == 429:
            self.throttled += 1

    def reset(self) -> None:
        """Zero every counter."""
        self.total = self.not_modified = self.throttled = 0
        self.by_status = {}
        self.by_kind = {}

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (status codes as string keys)."""
        return {
            "total": self.total,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "by_kind": dict(sorted(self.by_kind.items())),
            "not_modified": self.not_modified,
            "throttled": self.throttled,
        }


class TokenBucket:
    """Token bucket: ``rate`` tokens a second, burst ``max(1, rate)``; rebuilt when rate changes."""

    def __init__(self) -> None:
        self.rate = 0.0
        self.tokens = 0.0
        self.stamp = 0.0

    def take(self, rate: float) -> int:
        """Take a token; 0 when allowed, else the whole seconds to wait (at least 1)."""
        now = time.monotonic()
        burst = max(1.0, rate)
        if rate != self.rate:
            self.rate, self.tokens, self.stamp = rate, burst, now
        self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0
        return max(1, math.ceil((1.0 - self.tokens) / rate))
