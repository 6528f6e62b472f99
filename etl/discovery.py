"""Discovery: find new and changed referrals through the list endpoint and make them due.

Pages are read newest first (``updatedDateTime desc``) until the listing passes the previous
run's high-water mark minus ``sync.discover_overlap``; an id is made due when it is new or its
listed eTag differs from the stored one. The first run reads everything.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from etl import store
from etl.client import ReferralsClient
from etl.config import Settings
from etl.errors import InvalidIdError
from etl.flatten import parse_time
from etl.ids import canonical_id

log = logging.getLogger(__name__)

CURSOR = "discovery"


async def discover(
    settings: Settings, engine: Engine, client: ReferralsClient, now: datetime
) -> int:
    """Track and make due every new or changed referral; returns how many were marked."""
    mark = await asyncio.to_thread(store.read_cursor, engine, CURSOR)
    stop_at = mark - timedelta(seconds=settings.sync.discover_overlap) if mark else None
    newest = mark
    marked = 0
    async for page in client.list_referrals("updatedDateTime desc", settings.sync.discover_filter):
        listed: dict[str, str | None] = {}
        passed = False
        for document in page:
            updated = parse_time(document.get("updatedDateTime"))
            if updated is not None and (newest is None or updated > newest):
                newest = updated
            if stop_at is not None and updated is not None and updated < stop_at:
                passed = True
                break
            try:
                referral_id = canonical_id(str(document.get("id", "")))
            except InvalidIdError as exc:
                log.warning("discovery skipped a listed referral: %s", exc)
                continue
            etag = document.get("eTag")
            listed[referral_id] = etag if isinstance(etag, str) else None
        if listed:
            marked += await asyncio.to_thread(_mark_due, engine, listed, now)
        if passed:
            break
    if newest is not None and newest != mark:
        await asyncio.to_thread(store.write_cursor, engine, CURSOR, newest)
    log.info("discovery marked %d new or changed referrals due", marked)
    return marked


def _mark_due(engine: Engine, listed: dict[str, str | None], now: datetime) -> int:
    stored = store.stored_etags(engine, list(listed))
    changed = [
        (referral_id, "discovery")
        for referral_id, etag in listed.items()
        if referral_id not in stored or etag is None or stored[referral_id] != etag
    ]
    store.track_ids(engine, changed, due=now)
    return len(changed)
