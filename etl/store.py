"""Writing fetched referrals: dialect-aware upserts, eTag skip, history, tombstones, the ledger.

``write_batch`` stores a batch of :class:`etl.results.FetchResult` in ONE transaction: parent rows
upserted, child rows replaced, a new history version for each changed referral, and the ledger
(`sync_state`) updated for every id, so a run killed at any instant leaves every referral either
wholly old or wholly new, never half-written. Unchanged referrals (304, or the same eTag / content
hash) touch only bookkeeping columns. Everything is Core ``executemany``: no per-row ORM objects.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from etl.config import SyncSettings
from etl.errors import LockHeldError
from etl.flatten import FlatReferral, flatten_referral, history_values
from etl.models import CHILD_TABLES, TABLES
from etl.redact import mask
from etl.results import FetchResult, Outcome

log = logging.getLogger(__name__)

referrals = TABLES["referrals"]
history = TABLES["referral_history"]
sync_state = TABLES["sync_state"]
sync_runs = TABLES["sync_runs"]
sync_locks = TABLES["sync_locks"]
sync_cursors = TABLES["sync_cursors"]

_CLOSED = "closed"
_IN_CHUNK = 500  # ids per IN (...) list


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class BatchCounts:
    unchanged: int = 0
    created: int = 0
    updated: int = 0
    not_found: int = 0
    failed: int = 0
    fetched: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: BatchCounts) -> None:
        for name in ("unchanged", "created", "updated", "not_found", "failed", "fetched"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.extend(other.failures)


@dataclass(slots=True)
class _Known:
    etag: str | None = None
    content_hash: str | None = None
    status: str | None = None
    exists: bool = False
    deleted: bool = False
    failures: int = 0


def _chunks(values: Sequence[str], size: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _upsert(
    conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keep: Iterable[str]
) -> None:
    """Insert rows, updating every column except the key and ``keep`` on conflict."""
    if not rows:
        return
    key = [c.name for c in table.primary_key.columns]
    fixed = set(key) | set(keep)
    columns = [name for name in rows[0] if name not in fixed]
    name = conn.dialect.name
    stmt: Any
    if name in {"mysql", "mariadb"}:
        stmt = mysql.insert(table)
        stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in columns})
    else:
        stmt = (postgresql if name == "postgresql" else sqlite).insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=key, set_={c: stmt.excluded[c] for c in columns}
        )
    conn.execute(stmt, rows)


_PLAIN_SQL: dict[tuple[str, str, tuple[str, ...]], tuple[str, tuple[str, ...] | None]] = {}


def _insert_plain(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """``INSERT`` many rows of plain values (text, numbers, booleans) straight to the driver.

    Child rows hold only values every driver binds as they are, so SQLAlchemy's per-value
    processing (most of the CPU of a large executemany) is skipped. The SQL is compiled once
    per dialect and table by SQLAlchemy itself.
    """
    columns = tuple(rows[0])
    key = (conn.dialect.name, table.name, columns)
    cached = _PLAIN_SQL.get(key)
    if cached is None:
        compiled = sa.insert(table).compile(dialect=conn.dialect, column_keys=list(columns))
        order = (
            tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        )
        cached = _PLAIN_SQL[key] = (str(compiled), order)
    sql, order = cached
    if order is not None:
        conn.exec_driver_sql(sql, [tuple(row[name] for name in order) for row in rows])
    else:
        conn.exec_driver_sql(sql, rows)


def _known(conn: Connection, ids: Sequence[str]) -> dict[str, _Known]:
    known: dict[str, _Known] = {i: _Known() for i in ids}
    for chunk in _chunks(ids):
        for row in conn.execute(
            sa.select(
                sync_state.c.referral_id,
                sync_state.c.etag,
                sync_state.c.content_hash,
                sync_state.c.consecutive_failures,
            ).where(sync_state.c.referral_id.in_(chunk))
        ):
            k = known[row.referral_id]
            k.etag, k.content_hash = row.etag, row.content_hash
            k.failures = row.consecutive_failures or 0
        for found in conn.execute(
            sa.select(referrals.c.id, referrals.c.status, referrals.c.deleted_at).where(
                referrals.c.id.in_(chunk)
            )
        ):
            k = known[found.id]
            k.exists, k.status, k.deleted = True, found.status, found.deleted_at is not None
    return known


def _next_after_success(settings: SyncSettings, status: str | None, now: datetime) -> datetime:
    if settings.listing_covers_all:
        # Changes arrive through the listing; a GET by id is only the safety net (and the
        # periodic full listing makes due whatever it no longer shows).
        return now + timedelta(seconds=settings.refresh_listed_after)
    closed = (status or "").lower() == _CLOSED
    return now + timedelta(
        seconds=settings.refresh_closed_after if closed else settings.refresh_open_after
    )


def _next_after_failure(settings: SyncSettings, failures: int, now: datetime) -> datetime:
    base = min(settings.retry_backoff_max, 60.0 * 2 ** min(failures - 1, 30))
    return now + timedelta(seconds=base * random.uniform(0.8, 1.0))


def write_batch(
    engine: Engine,
    results: Sequence[FetchResult],
    settings: SyncSettings,
    *,
    run_id: int | None = None,
    run_totals: dict[str, int] | None = None,
    dry_run: bool = False,
) -> BatchCounts:
    """Store a batch of fetch results in one transaction; returns what happened to each kind.

    Raises SQLAlchemy's errors as they are: the caller (``etl.sync``) decides what a lost
    connection, a value the database refuses, or a broken schema means for the run.
    """
    with engine.connect() as conn, conn.begin() as transaction:
        counts = _write(conn, results, settings)
        if run_id is not None and run_totals is not None and not dry_run:
            conn.execute(sa.update(sync_runs).where(sync_runs.c.id == run_id).values(**run_totals))
        if dry_run:
            transaction.rollback()
    return counts


def _write(conn: Connection, results: Sequence[FetchResult], settings: SyncSettings) -> BatchCounts:
    now = utcnow()
    counts = BatchCounts()
    latest: dict[str, FetchResult] = {r.id: r for r in results}  # one result per id per batch
    known = _known(conn, list(latest))
    changed: list[FlatReferral] = []
    origins: dict[str, str] = {}
    created: set[str] = set()
    checked: list[str] = []
    new_etags: list[dict[str, Any]] = []
    gone: list[str] = []
    ledger: list[dict[str, Any]] = []

    for result in latest.values():
        k = known[result.id]
        state: dict[str, Any] = {
            "referral_id": result.id,
            "source": result.source,
            "added_at": now,
            "etag": k.etag,
            "content_hash": k.content_hash,
            "last_status_code": result.http_status or 0,
            "last_attempt_at": now,
            "last_success_at": now,
            "consecutive_failures": 0,
            "last_error": None,
            "next_attempt_at": None,
        }
        flat: FlatReferral | None = None
        error: str | None = None
        if result.outcome is Outcome.FETCHED and result.document is not None:
            try:
                flat = flatten_referral(result.document, result.etag, result.raw)
            except Exception as exc:  # whatever a document holds fails only that referral
                error = f"the document could not be read into rows ({_one_line(exc)})"
        if flat is not None:
            counts.fetched += 1
            # A version is its content: the same content from a list page (no eTag) or a GET
            # (with one) is the same version. Rows never hashed (none after migration 0004)
            # fall back to the eTag.
            same = (
                flat.content_hash == k.content_hash
                if k.content_hash is not None
                else flat.etag is not None and flat.etag == k.etag
            )
            state["next_attempt_at"] = _next_after_success(settings, flat.referral["status"], now)
            if k.exists and same:
                counts.unchanged += 1
                checked.append(result.id)
                state["content_hash"] = flat.content_hash
                if flat.etag is not None and flat.etag != k.etag:
                    # Same content under a new (or a first) eTag: keep it for If-None-Match.
                    state["etag"] = flat.etag
                    new_etags.append({"rid": result.id, "new_etag": flat.etag})
            else:
                changed.append(flat)
                origins[result.id] = result.origin
                state["etag"], state["content_hash"] = flat.etag, flat.content_hash
                if k.exists:
                    counts.updated += 1
                else:
                    counts.created += 1
                    created.add(result.id)
        elif result.outcome is Outcome.NOT_MODIFIED and k.exists:
            counts.fetched += 1
            counts.unchanged += 1
            checked.append(result.id)
            state["next_attempt_at"] = _next_after_success(settings, k.status, now)
        elif result.outcome is Outcome.NOT_FOUND:
            counts.not_found += 1
            gone.append(result.id)
            state["next_attempt_at"] = now + timedelta(seconds=settings.refresh_not_found_after)
        else:
            error = (
                error
                or result.error
                or (
                    "304 Not Modified for an id that has no stored referral"
                    if result.outcome is Outcome.NOT_MODIFIED
                    else f"unexpected answer (HTTP {result.http_status})"
                )
            )
            counts.failed += 1
            counts.failures.append((result.id, error))
            failures = k.failures + 1
            state.update(
                last_success_at=None,
                consecutive_failures=failures,
                last_error=mask(" ".join(error.split()))[:2000],  # one line, never a secret
                next_attempt_at=_next_after_failure(settings, failures, now),
            )
        ledger.append(state)

    if changed:
        _store_changed(conn, changed, origins, created, now)
    if new_etags:
        conn.execute(
            sa.update(referrals)
            .where(referrals.c.id == sa.bindparam("rid"))
            .values(etag=sa.bindparam("new_etag")),
            new_etags,
        )
        conn.execute(
            sa.update(history)
            .where(history.c.referral_id == sa.bindparam("rid"), history.c.valid_to.is_(None))
            .values(etag=sa.bindparam("new_etag")),
            new_etags,
        )
    if checked:
        for chunk in _chunks(checked):
            conn.execute(
                sa.update(referrals)
                .where(referrals.c.id.in_(chunk))
                .values(last_checked_at=now, deleted_at=None)
            )
    if gone:
        for chunk in _chunks(gone):
            conn.execute(
                sa.update(referrals)
                .where(referrals.c.id.in_(chunk), referrals.c.deleted_at.is_(None))
                .values(deleted_at=now)
            )
    # last_success_at stays as it was for a failure: split the ledger rows by shape.
    succeeded = [s for s in ledger if s["last_success_at"] is not None]
    failed = [
        {k: v for k, v in s.items() if k != "last_success_at"}
        for s in ledger
        if s["last_success_at"] is None
    ]
    _upsert(conn, sync_state, succeeded, keep=("source", "added_at"))
    _upsert(conn, sync_state, failed, keep=("source", "added_at"))
    return counts


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:300]
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def _store_changed(
    conn: Connection,
    changed: list[FlatReferral],
    origins: dict[str, str],
    created: set[str],
    now: datetime,
) -> None:
    ids = [f.id for f in changed]
    parents = []
    for flat in changed:
        row = dict(flat.referral)
        row.update(first_seen_at=now, last_changed_at=now, last_checked_at=now, deleted_at=None)
        parents.append(row)
    _upsert(conn, referrals, parents, keep=("first_seen_at",))
    replaced = [i for i in ids if i not in created]
    for table_name in CHILD_TABLES:
        table = TABLES[table_name]
        for chunk in _chunks(replaced):
            conn.execute(sa.delete(table).where(table.c.referral_id.in_(chunk)))
    children = [flat.children() for flat in changed]
    for table_name in CHILD_TABLES:
        rows = [row for child in children for row in child[table_name]]
        if rows:
            _insert_plain(conn, TABLES[table_name], rows)
    for chunk in _chunks(replaced):
        conn.execute(
            sa.update(history)
            .where(history.c.referral_id.in_(chunk), history.c.valid_to.is_(None))
            .values(valid_to=now)
        )
    versions = []
    for flat in changed:
        version = history_values(flat)
        version.update(valid_from=now, valid_to=None, origin=origins.get(flat.id, "get"))
        versions.append(version)
    conn.execute(sa.insert(history), versions)


def stored_etags(engine: Engine, ids: Sequence[str]) -> dict[str, str | None]:
    """The eTag to send as If-None-Match for each id that has a stored referral."""
    found: dict[str, str | None] = {}
    with engine.connect() as conn:
        for chunk in _chunks(ids):
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
        for chunk in _chunks(values):
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
        for chunk in _chunks([i for i in values if i in existing]):
            conn.execute(
                sa.update(sync_state)
                .where(sync_state.c.referral_id.in_(chunk))
                .values(next_attempt_at=due)
            )
    return len(new)


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


# Cursors ------------------------------------------------------------------------------------


def read_cursor(engine: Engine, name: str) -> datetime | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sync_cursors.c.position).where(sync_cursors.c.name == name)
        ).scalar_one_or_none()


def write_cursor(engine: Engine, name: str, position: datetime) -> None:
    with engine.begin() as conn:
        _upsert(
            conn,
            sync_cursors,
            [{"name": name, "position": position, "updated_at": utcnow()}],
            keep=(),
        )
