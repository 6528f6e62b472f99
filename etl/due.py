"""What to fetch next: the ids that are due, tracking new ids, the eTags to send, cursors.

Reads and small writes of the ledger (``sync_state``) around :func:`etl.store.write_batch`: a
sync pages through the ids due at its start (:func:`due_page`), asks each with the eTag stored
for it (:func:`stored_etags`), and discovery and the webhook receiver start tracking ids or make
them due again (:func:`track_ids`, :func:`make_unseen_due`); discovery keeps its high-water marks
in ``sync_cursors`` (:func:`read_cursor`, :func:`write_cursor`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.models import TABLES
from etl.store import chunks, upsert, utcnow

referrals = TABLES["referrals"]
sync_state = TABLES["sync_state"]
sync_cursors = TABLES["sync_cursors"]


def stored_etags(engine: Engine, ids: Sequence[str]) -> dict[str, str | None]:
    """The eTag to send as If-None-Match for each id that has a stored referral."""
    found: dict[str, str | None] = {}
    with engine.connect() as conn:
        for chunk in chunks(ids):
            rows = conn.execute(
                sa.select(sync_state.c.referral_id, sync_state.c.etag)
                .join(referrals, referrals.c.id == sync_state.c.referral_id)
                .where(sync_state.c.referral_id.in_(chunk))
            )
            found.update({row.referral_id: row.etag for row in rows})
    return found


def _is_due(now: datetime) -> sa.ColumnElement[bool]:
    """A tracked id is due at ``now``: its next attempt is not later, or was never set."""
    return sa.or_(sync_state.c.next_attempt_at <= now, sync_state.c.next_attempt_at.is_(None))


def due_page(
    engine: Engine, now: datetime, after: str = "", size: int = 1000
) -> list[tuple[str, str]]:
    """One page of (id, source) of the tracked ids due at ``now``, ids after ``after``."""
    due = _is_due(now)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(sync_state.c.referral_id, sync_state.c.source)
            .where(due, sync_state.c.referral_id > after)
            .order_by(sync_state.c.referral_id)
            .limit(size)
        ).all()
    return [(r.referral_id, r.source) for r in rows]


def due_pages(engine: Engine, now: datetime, page: int = 1000) -> Iterator[list[tuple[str, str]]]:
    """Pages of (id, source) of every tracked id due at ``now`` (keyset by id: flat memory)."""
    last = ""
    while rows := due_page(engine, now, last, page):
        yield rows
        last = rows[-1][0]


def make_unseen_due(engine: Engine, since: datetime, due: datetime) -> int:
    """Make due every id last confirmed before ``since`` (a full listing that began then did not
    show it: deleted, or outside the listing); ids still failing keep their backoff, and ids
    already known deleted their ``refresh_not_found_after``."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.update(sync_state)
                .where(
                    sync_state.c.last_success_at < since,
                    sync_state.c.next_attempt_at > due,
                    sync_state.c.consecutive_failures == 0,
                    # Known deleted: looked at again after refresh_not_found_after instead.
                    sa.or_(
                        sync_state.c.last_status_code.is_(None),
                        sync_state.c.last_status_code != 404,
                    ),
                )
                .values(next_attempt_at=due)
            ).rowcount
        )


def count_due(engine: Engine, now: datetime) -> int:
    with engine.connect() as conn:
        due = _is_due(now)
        return int(conn.execute(sa.select(sa.func.count()).where(due)).scalar_one())


def track_ids(engine: Engine, ids: Sequence[tuple[str, str]], due: datetime) -> int:
    """Start tracking ids (id, source) not tracked yet, and make the tracked ones due."""
    if not ids:
        return 0
    now = utcnow()
    with engine.begin() as conn:
        existing: set[str] = set()
        values = [i for i, _ in ids]
        for chunk in chunks(values):
            existing.update(
                conn.execute(
                    sa.select(sync_state.c.referral_id).where(sync_state.c.referral_id.in_(chunk))
                ).scalars()
            )
        new = [
            {
                "referral_id": i,
                "source": s,
                "added_at": now,
                "next_attempt_at": due,
                "consecutive_failures": 0,
            }
            for i, s in dict(ids).items()
            if i not in existing
        ]
        if new:
            conn.execute(sa.insert(sync_state), new)
        for chunk in chunks([i for i in values if i in existing]):
            conn.execute(
                sa.update(sync_state)
                .where(sync_state.c.referral_id.in_(chunk))
                .values(next_attempt_at=due)
            )
    return len(new)


# Cursors ------------------------------------------------------------------------------------


def read_cursor(engine: Engine, name: str) -> datetime | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sync_cursors.c.position).where(sync_cursors.c.name == name)
        ).scalar_one_or_none()


def write_cursor(engine: Engine, name: str, position: datetime) -> None:
    with engine.begin() as conn:
        upsert(
            conn,
            sync_cursors,
            [{"name": name, "position": position, "updated_at": utcnow()}],
            keep=(),
        )
