"""The naive loader the issue compares against: the script a user would write by hand.

Sequential synchronous ``httpx.Client`` GETs, ``response.json()``, ORM objects of the project's
own models (``etl.models``) for every row, and one ``session.commit()`` per referral. It writes
the same rows as the job (the referral, its child rows, a history version and its ledger row),
using the project's ``flatten_referral`` for the mapping so that both write identical data and
only the way of loading differs. No If-None-Match, no concurrency, no batching.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session

from etl.flatten import flatten_referral, history_values
from etl.models import CHILD_TABLES, TABLES


class _Base(DeclarativeBase):
    """ORM classes mapped onto the project's tables, as a user's script would declare them."""


_CLASSES: dict[str, Any] = {
    name: type(f"_{name.title().replace('_', '')}", (_Base,), {"__table__": table})
    for name, table in TABLES.items()
}
Referral, ReferralHistory, SyncState = (
    _CLASSES[name] for name in ("referrals", "referral_history", "sync_state")
)


class SyncTransport(httpx.BaseTransport):
    """Lets a synchronous ``httpx.Client`` use an async transport, e.g. the sandbox's in-process
    ``box.transport()`` (one private loop)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self._loop = asyncio.new_event_loop()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def call() -> httpx.Response:
            response = await self._inner.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        return self._loop.run_until_complete(call())

    def close(self) -> None:
        self._loop.close()


def run_naive(
    engine: Engine,
    base_url: str,
    ids: Iterable[str],
    token: str,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, int]:
    """Load ``ids`` one by one; returns counts of referrals stored and requests sent."""
    counts = {"created": 0, "updated": 0, "not_found": 0, "failed": 0, "requests": 0}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    with (
        httpx.Client(base_url=base_url, headers=headers, transport=transport, timeout=30) as http,
        Session(engine) as session,
    ):
        for referral_id in ids:
            response = http.get(f"/engagements/referrals/{referral_id}")
            counts["requests"] += 1
            if response.status_code == 404:
                counts["not_found"] += 1
                continue
            if response.status_code != 200:
                counts["failed"] += 1
                continue
            document = response.json()
            created = _store(session, document, response.headers.get("etag"))
            session.commit()
            counts["created" if created else "updated"] += 1
    return counts


def _store(session: Session, document: dict[str, Any], etag: str | None) -> bool:
    now = datetime.now(UTC)
    flat = flatten_referral(document, etag)
    referral = session.get(Referral, flat.id)
    created = referral is None
    if referral is None:
        referral = Referral(first_seen_at=now)
        session.add(referral)
    for name, value in flat.referral.items():
        setattr(referral, name, value)
    referral.last_changed_at = referral.last_checked_at = now
    referral.deleted_at = None
    if not created:
        for table_name in CHILD_TABLES:
            cls = _CLASSES[table_name]
            session.execute(sa.delete(cls).where(cls.referral_id == flat.id))
        session.execute(
            sa.update(ReferralHistory)
            .where(ReferralHistory.referral_id == flat.id, ReferralHistory.valid_to.is_(None))
            .values(valid_to=now)
        )
    session.flush()  # the parent row before its children (foreign keys)
    for table_name, rows in flat.children().items():
        cls = _CLASSES[table_name]
        session.add_all(cls(**row) for row in rows)
    session.add(ReferralHistory(**history_values(flat), valid_from=now, valid_to=None))
    state = session.get(SyncState, flat.id)
    if state is None:
        state = SyncState(referral_id=flat.id, source="file", added_at=now)
        session.add(state)
    state.etag, state.content_hash = flat.etag, flat.content_hash
    state.last_status_code = 200
    state.last_attempt_at = state.last_success_at = now
    state.consecutive_failures = 0
    state.last_error = None
    return created
