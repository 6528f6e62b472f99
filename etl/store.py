"""Writing fetched referrals: dialect-aware upserts, eTag skip, history, tombstones, the ledger.

``write_batch`` stores a batch of :class:`etl.results.FetchResult` in ONE transaction: parent rows
upserted, child rows replaced, a new history version for each changed referral, and the ledger
(`sync_state`) updated for every id, so a run killed at any instant leaves every referral either
wholly old or wholly new, never half-written. Unchanged referrals (304, or the same eTag / content
hash) touch only bookkeeping columns. Everything is Core ``executemany`` (on PostgreSQL the child
rows go by ``COPY``): no per-row ORM objects.
What is due next and discovery's cursors are in :mod:`etl.due`; the run lock and the run rows in
:mod:`etl.leases`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from etl.config import SyncSettings
from etl.flatten import FlatReferral, flatten_referral, history_values
from etl.models import CHILD_TABLES, TABLES
from etl.redact import mask
from etl.results import FetchResult, Outcome

referrals = TABLES["referrals"]
history = TABLES["referral_history"]
sync_state = TABLES["sync_state"]
sync_runs = TABLES["sync_runs"]

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


def chunks(values: Sequence[str], size: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    """``values`` in slices of at most ``size``, one ``IN (...)`` list each."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def upsert(
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


def insert_plain(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """``INSERT`` many rows of plain values (text, numbers, booleans) straight to the driver.

    Child rows hold only values every driver binds as they are, so SQLAlchemy's per-value
    processing (most of the CPU of a large executemany) is skipped. The SQL is compiled once
    per dialect and table by SQLAlchemy itself. On PostgreSQL through psycopg they go by
    ``COPY`` (:func:`copy_rows`).
    """
    columns = tuple(rows[0])
    if by_copy(conn):
        copy_rows(conn, table, columns, rows)
        return
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


# Per table and columns: the COPY statement, and each column's bind processor (None when no
# column of the rows needs one, as for the child rows).
_Processors = tuple[tuple[str, Any], ...] | None
_COPY_SQL: dict[tuple[str, tuple[str, ...]], tuple[str, _Processors]] = {}


def by_copy(conn: Connection) -> bool:
    """Whether rows are written by COPY on this connection (PostgreSQL through psycopg)."""
    return conn.dialect.driver == "psycopg"


def copy_rows(
    conn: Connection, table: sa.Table, columns: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    """PostgreSQL: ``COPY table (columns) FROM STDIN`` in the batch's transaction.

    psycopg's executemany spends ~25 µs of Python a row in its pipeline (and SQLAlchemy's as
    much again for typed rows); ``COPY`` formats each row in psycopg's C code (the child rows
    and the history versions of a first load: about a fifth of the job's CPU, bench/README.md).
    Each value goes through its column type's bind processing, as in an INSERT (UTC instants,
    the JSONB payload). A driver error comes back as SQLAlchemy's, with a lost connection
    invalidated and flagged as SQLAlchemy flags it, so the run's one database policy judges it
    like any statement's.
    """
    key = (table.name, columns)
    cached = _COPY_SQL.get(key)
    if cached is None:
        dialect = conn.dialect
        quote = dialect.identifier_preparer
        names = ", ".join(quote.quote(c) for c in columns)
        found: tuple[tuple[str, Any], ...] = tuple(
            (name, table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in columns
        )
        sql = f"COPY {quote.format_table(table)} ({names}) FROM STDIN"
        typed = any(process for _, process in found)
        cached = _COPY_SQL[key] = (sql, found if typed else None)
    sql, processors = cached
    dbapi = conn.dialect.loaded_dbapi
    proxied = conn.connection
    cursor = proxied.cursor()
    try:
        with cursor.copy(sql) as copy:
            if processors is None:
                for row in rows:
                    copy.write_row([row[name] for name in columns])
            else:
                for row in rows:
                    copy.write_row([p(row[n]) if p else row[n] for n, p in processors])
    except dbapi.Error as exc:
        lost = conn.dialect.is_disconnect(exc, proxied.dbapi_connection, cursor)
        if lost:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            sql, None, exc, dbapi.Error, connection_invalidated=lost, dialect=conn.dialect
        ) from exc
    finally:
        if not cursor.closed:
            cursor.close()


def _known(conn: Connection, ids: Sequence[str]) -> dict[str, _Known]:
    known: dict[str, _Known] = {i: _Known() for i in ids}
    for chunk in chunks(ids):
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

    Raises SQLAlchemy's errors as they are: the caller (``etl.db_policy``) decides what a lost
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
            except Exception as exc:  # noqa: BLE001 - whatever a document holds fails only it
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
        for chunk in chunks(checked):
            conn.execute(
                sa.update(referrals)
                .where(referrals.c.id.in_(chunk))
                .values(last_checked_at=now, deleted_at=None)
            )
    if gone:
        for chunk in chunks(gone):
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
    upsert(conn, sync_state, succeeded, keep=("source", "added_at"))
    upsert(conn, sync_state, failed, keep=("source", "added_at"))
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
    upsert(conn, referrals, parents, keep=("first_seen_at",))
    replaced = [i for i in ids if i not in created]
    for table_name in CHILD_TABLES:
        table = TABLES[table_name]
        for chunk in chunks(replaced):
            conn.execute(sa.delete(table).where(table.c.referral_id.in_(chunk)))
    children = [flat.children() for flat in changed]
    for table_name in CHILD_TABLES:
        rows = [row for child in children for row in child[table_name]]
        if rows:
            insert_plain(conn, TABLES[table_name], rows)
    for chunk in chunks(replaced):
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
    if by_copy(conn):
        copy_rows(conn, history, tuple(versions[0]), versions)
    else:
        conn.execute(sa.insert(history), versions)
