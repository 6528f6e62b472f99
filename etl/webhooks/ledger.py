"""``webhook_events`` in the database: what the receiver accepted and what the worker still owes.

:func:`record_event` is the receiver's one write, made BEFORE it answers 200: the event (a
repeated delivery inserts nothing) and its id made due in ``sync_state``, in one transaction,
so an acknowledged event survives a crash: the worker after a restart (or the next scheduled
`sync`) fetches it. The worker reads :func:`due_ids` and, once they are stored, calls
:func:`mark_processed` for the events received before it read them (an event that arrived
during the fetch stays due: the referral may have changed again).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from etl.models import TABLES
from etl.webhooks.events import WebhookEvent

webhook_events = TABLES["webhook_events"]
sync_state = TABLES["sync_state"]
SOURCE = "webhook"
_IN_CHUNK = 500


def record_event(engine: Engine, event: WebhookEvent, now: datetime) -> bool:
    """Record ``event`` (once) and make its referral due now; True when it was new."""
    row = {
        "event_name": event.name,
        "referral_id": event.referral_id,
        "resource_change_utc_date": event.change_date,
        "changed_at": event.changed_at,
        "received_at": now,
        "processed_at": None,
    }
    with engine.begin() as conn:
        if not _insert_new(conn, row):
            return False
        _make_due(conn, event.referral_id, now)
    return True


def _insert_new(conn: Connection, row: dict[str, Any]) -> bool:
    """INSERT unless the same event is there (the unique key); True when a row was inserted.

    PostgreSQL and SQLite say so with RETURNING (SQLAlchemy adds RETURNING to PostgreSQL
    inserts itself, which leaves no row count); MariaDB's INSERT IGNORE with its row count.
    """
    if conn.dialect.name in {"mysql", "mariadb"}:
        ignored = mysql.insert(webhook_events).prefix_with("IGNORE")
        return bool(conn.execute(ignored, row).rowcount == 1)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(webhook_events).on_conflict_do_nothing().returning(webhook_events.c.id)
    return conn.execute(stmt, row).first() is not None


def _make_due(conn: Connection, referral_id: str, now: datetime) -> None:
    """Track the id (source ``webhook``) if new, and make it due now either way."""
    row = {
        "referral_id": referral_id,
        "source": SOURCE,
        "added_at": now,
        "next_attempt_at": now,
        "consecutive_failures": 0,
    }
    name = conn.dialect.name
    stmt: Any
    if name in {"mysql", "mariadb"}:
        stmt = mysql.insert(sync_state)
        stmt = stmt.on_duplicate_key_update(next_attempt_at=stmt.inserted.next_attempt_at)
    else:
        stmt = (postgresql if name == "postgresql" else sqlite).insert(sync_state)
        stmt = stmt.on_conflict_do_update(
            index_elements=["referral_id"], set_={"next_attempt_at": stmt.excluded.next_attempt_at}
        )
    conn.execute(stmt, row)


def due_ids(engine: Engine, limit: int) -> list[str]:
    """Ids with an unprocessed event, the longest waiting first (each id once)."""
    first = sa.func.min(webhook_events.c.received_at)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(webhook_events.c.referral_id, first)
            .where(webhook_events.c.processed_at.is_(None))
            .group_by(webhook_events.c.referral_id)
            .order_by(first, webhook_events.c.referral_id)
            .limit(limit)
        ).all()
    return [r[0] for r in rows]


def mark_processed(
    engine: Engine, ids: Sequence[str], received_before: datetime, now: datetime
) -> int:
    """Events of ``ids`` received before ``received_before`` are done; returns how many."""
    done = 0
    with engine.begin() as conn:
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = list(ids[start : start + _IN_CHUNK])
            done += conn.execute(
                sa.update(webhook_events)
                .where(
                    webhook_events.c.referral_id.in_(chunk),
                    webhook_events.c.processed_at.is_(None),
                    webhook_events.c.received_at <= received_before,
                )
                .values(processed_at=now)
            ).rowcount
    return done


def failed_again(engine: Engine, ids: Sequence[str], since: datetime, below: int) -> set[str]:
    """Of ``ids``, those whose attempt since ``since`` failed, fewer than ``below`` times in a
    row (the worker tries them again; after that the scheduled sync's backoff takes over)."""
    found: set[str] = set()
    with engine.connect() as conn:
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = list(ids[start : start + _IN_CHUNK])
            found.update(
                conn.execute(
                    sa.select(sync_state.c.referral_id).where(
                        sync_state.c.referral_id.in_(chunk),
                        sync_state.c.last_attempt_at >= since,
                        sync_state.c.consecutive_failures >= 1,
                        sync_state.c.consecutive_failures < below,
                    )
                ).scalars()
            )
    return found


def received_times(engine: Engine, ids: Sequence[str], processed_at: datetime) -> list[datetime]:
    """When the events just marked processed at ``processed_at`` were received (for the lag)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(webhook_events.c.received_at).where(
                    webhook_events.c.referral_id.in_(list(ids)[:_IN_CHUNK]),
                    webhook_events.c.processed_at == processed_at,
                )
            ).scalars()
        )


def pending_count(engine: Engine) -> int:
    """Events accepted and not processed yet."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(webhook_events.c.processed_at.is_(None))
            ).scalar_one()
        )


def ping(engine: Engine) -> None:
    """One round trip to the database (for ``/healthz``); raises when it cannot be reached."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
