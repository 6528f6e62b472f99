"""The run lock (a lease in ``sync_locks``) and the run rows (``sync_runs``).

A run takes its lease before it starts (:func:`acquire_lock`; an expired lease is taken over and
the runs that held it are recorded failed), renews it while it works (:func:`renew_lock`) and
releases it at the end (:func:`release_lock`). Its ``sync_runs`` row names the lease it holds
(:func:`start_run`), so that a takeover fails that run and no other, and records how it ended
(:func:`finish_run`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.errors import LockHeldError
from etl.models import TABLES
from etl.store import utcnow

# The name these lines had before the lease code left etl/store.py: log filters keep working.
log = logging.getLogger("etl.store")

sync_runs = TABLES["sync_runs"]
sync_locks = TABLES["sync_locks"]

# Runs ---------------------------------------------------------------------------------------

RUN_COUNTERS = (
    "ids_total",
    "fetched",
    "unchanged",
    "created",
    "updated",
    "not_found",
    "failed",
    "requests",
    "throttled",
    "list_requests",
    "get_requests",
)


def start_run(
    engine: Engine,
    trigger: str,
    status: str = "running",
    message: str | None = None,
    *,
    lease: tuple[str, str] | None = None,
) -> int:
    """Record a run; ``lease`` (name, owner) is the lease it holds, so that a takeover of that
    lease fails this run and no other."""
    now = utcnow()
    with engine.begin() as conn:
        values: dict[str, Any] = dict.fromkeys(RUN_COUNTERS, 0)
        values.update(started_at=now, trigger=trigger, status=status, message=message)
        if lease is not None:
            values.update(lease_name=lease[0], lease_owner=lease[1])
        if status != "running":
            values["finished_at"] = now
        result = conn.execute(sa.insert(sync_runs).values(**values))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def finish_run(
    engine: Engine, run_id: int, status: str, totals: dict[str, int], message: str | None
) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(sync_runs)
            .where(sync_runs.c.id == run_id)
            .values(finished_at=utcnow(), status=status, message=(message or None), **totals)
        )


# Lock ---------------------------------------------------------------------------------------


def lock_owner() -> str:
    """This run's name as a lease owner: host, process and a random tag (two runs of one
    process, such as `schedule`'s, are two owners)."""
    return f"{socket.gethostname()[:200]}:{os.getpid()}:{secrets.token_hex(4)}"


def acquire_lock(engine: Engine, name: str, owner: str, lease_seconds: float) -> None:
    """Take the lease ``name`` or raise :class:`LockHeldError`; an expired lease is taken over."""
    now = utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    row = {"name": name, "owner": owner, "acquired_at": now, "expires_at": expires}
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(sync_locks).values(**row))
            return
    except sa.exc.IntegrityError:
        pass
    with engine.begin() as conn:
        expired = conn.execute(
            sa.select(sync_locks.c.owner).where(
                sync_locks.c.name == name, sync_locks.c.expires_at < now
            )
        ).first()
        taken = 0
        if expired is not None:
            taken = conn.execute(
                sa.update(sync_locks)
                .where(
                    sync_locks.c.name == name,
                    sync_locks.c.owner == expired.owner,
                    sync_locks.c.expires_at < now,
                )
                .values(owner=owner, acquired_at=now, expires_at=expires)
            ).rowcount
        if taken == 1:
            assert expired is not None
            log.warning(
                "took over the %s lock from %s, whose lease had expired", name, expired.owner
            )
            # Only the runs that held this lease died with it: other shards' runs live on.
            # Runs recorded before runs named their lease (lease_name NULL) cannot tell, and
            # are failed as before (a live one still records its own end when it finishes).
            held = sa.and_(sync_runs.c.lease_name == name, sync_runs.c.lease_owner == expired.owner)
            conn.execute(
                sa.update(sync_runs)
                .where(
                    sync_runs.c.status == "running",
                    sa.or_(held, sync_runs.c.lease_name.is_(None)),
                    sync_runs.c.started_at < now,
                )
                .values(
                    status="failed",
                    finished_at=now,
                    message=f"the run's process died (its {name} lease expired)",
                )
            )
            return
        holder = conn.execute(
            sa.select(sync_locks.c.owner, sync_locks.c.expires_at).where(sync_locks.c.name == name)
        ).first()
    who = f"{holder.owner}, lease until {holder.expires_at:%Y-%m-%d %H:%M:%S}Z" if holder else "?"
    raise LockHeldError(f"another run holds the {name} lock ({who}); nothing was done")


def renew_lock(engine: Engine, name: str, owner: str, lease_seconds: float) -> bool:
    """Extend our lease; False when it is no longer ours."""
    with engine.begin() as conn:
        return (
            conn.execute(
                sa.update(sync_locks)
                .where(sync_locks.c.name == name, sync_locks.c.owner == owner)
                .values(expires_at=utcnow() + timedelta(seconds=lease_seconds))
            ).rowcount
            == 1
        )


def release_lock(engine: Engine, name: str, owner: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.delete(sync_locks).where(sync_locks.c.name == name, sync_locks.c.owner == owner)
        )
