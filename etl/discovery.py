"""Discovery: find new and changed referrals through the list endpoint and make them due.

Pages are read newest first (``updatedDateTime desc``) until the listing passes the previous
run's high-water mark minus ``sync.discover_overlap``; an id is made due when it is new or its
listed eTag differs from the stored one. The first run reads everything.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from etl import store
from etl.client import ReferralsClient
from etl.config import Settings
from etl.errors import BadDocumentError, InvalidIdError
from etl.flatten import parse_time
from etl.ids import canonical_id

log = logging.getLogger(__name__)

CURSOR = "discovery"
_FUTURE = timedelta(days=1)  # clock skew tolerated in a listed updatedDateTime


async def discover(
    settings: Settings, engine: Engine, client: ReferralsClient, now: datetime
) -> int:
    """Track and make due every new or changed referral; returns how many were marked."""
    mark = await asyncio.to_thread(store.read_cursor, engine, CURSOR)
    stop_at = mark - timedelta(seconds=settings.sync.discover_overlap) if mark else None
    newest = mark
    marked = 0
    pages = client.list_referrals("updatedDateTime desc", settings.sync.discover_filter)
    while True:
        try:
            page = await anext(pages)
        except StopAsyncIteration:
            break
        except BadDocumentError as exc:
            # A page that cannot be read stops discovery for this run, never the run: due ids
            # are still fetched. The high-water mark stays, so the next run reads it again.
            log.warning("discovery stopped: %s; due referrals are still fetched", exc)
            return marked
        listed: dict[str, str | None] = {}
        passed = False
        for document in page:
            try:
                referral_id, etag, updated = _entry(document)
            except (InvalidIdError, ValueError, TypeError) as exc:
                # One bad entry of a listing never stops discovery of the others.
                log.warning("discovery skipped a listed referral: %s", str(exc)[:300])
                continue
            if updated is not None and updated > now + _FUTURE:
                # A timestamp from the far future would stop every later discovery early.
                log.warning(
                    "discovery: listed referral %s has updatedDateTime in the future; "
                    "not used as the high-water mark",
                    referral_id,
                )
                updated = None
            if updated is not None and (newest is None or updated > newest):
                newest = updated
            if stop_at is not None and updated is not None and updated < stop_at:
                passed = True
                break
            listed[referral_id] = etag
        if listed:
            marked += await asyncio.to_thread(_mark_due, engine, listed, now)
        if passed:
            break
    if newest is not None and newest != mark:
        await asyncio.to_thread(store.write_cursor, engine, CURSOR, newest)
    log.info("discovery marked %d new or changed referrals due", marked)
    return marked


def _entry(document: dict[str, Any]) -> tuple[str, str | None, datetime | None]:
    """The id, eTag and update time of one listed referral; raises for an unusable entry."""
    raw_id = document.get("id")
    if not isinstance(raw_id, str):
        raise InvalidIdError(f"listed entry without a string id ({type(raw_id).__name__})")
    etag = document.get("eTag")
    return (
        canonical_id(raw_id),
        etag if isinstance(etag, str) else None,
        parse_time(document.get("updatedDateTime")),
    )


def _mark_due(engine: Engine, listed: dict[str, str | None], now: datetime) -> int:
    stored = store.stored_etags(engine, list(listed))
    changed = [
        (referral_id, "discovery")
        for referral_id, etag in listed.items()
        if referral_id not in stored or etag is None or stored[referral_id] != etag
    ]
    store.track_ids(engine, changed, due=now)
    return len(changed)
