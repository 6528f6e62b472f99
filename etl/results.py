"""What one fetch of a referral ended with: the one result type from the client to the store.

:class:`FetchResult` is built by :meth:`etl.client.ReferralsClient.fetch_referral` (or by anyone
who has a referral document from elsewhere, such as a list page or a webhook) and handed as it is
to :func:`etl.store.write_batch`. It imports nothing heavy, so the store and the CLI can use it
without loading the HTTP stack.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Outcome(enum.Enum):
    """How the API answered for one id."""

    FETCHED = "fetched"  # 200 with a usable referral document
    NOT_MODIFIED = "not_modified"  # 304: the stored version (its eTag) is current
    NOT_FOUND = "not_found"  # 404 or 410: the referral is gone
    FAILED = "failed"  # no usable answer; ``error`` says why


@dataclass(slots=True)
class FetchResult:
    """One id's answer: what the API said, the document and its eTag, or the error."""

    id: str
    outcome: Outcome
    source: str = "manual"  # how the id became tracked (file, discovery, webhook, manual)
    document: dict[str, Any] | None = None  # FETCHED: the parsed referral
    raw: str | None = None  # FETCHED: the body's JSON text, as received (stored as the payload)
    etag: str | None = None  # the ETag response header, when one came
    error: str | None = None  # FAILED: one line for the operator
    http_status: int | None = None  # the last HTTP status; None when no answer came
    origin: str = "get"  # where the document was read: "get" (by id) or "list" (a list page)
