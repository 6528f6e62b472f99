"""The one policy for every database call of a run (:class:`Database`).

Every database call of a run goes through :class:`Database`, in a worker thread, under one
policy: a lost connection (SQLAlchemy's own disconnect detection, or a connection that cannot be
opened again) retries the call on a fresh connection for up to ``RECONNECT_FOR`` seconds, and so
does a transaction the server rolled back to break a deadlock (two shards writing at once); a value
the database refuses (an integrity or data error) fails only the referral that carries it; any
other database error (a missing table or column, a denied permission, a read-only or full
database) ends the run: :class:`~etl.errors.DatabaseError`, exit 5, the run recorded `failed`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import store
from etl.config import SyncSettings
from etl.db import connect_error, failure
from etl.errors import DatabaseError
from etl.results import FetchResult
from etl.writer import ProcessWriter

# The name these lines had before the policy left etl/sync.py: log filters keep working.
log = logging.getLogger("etl.sync")

RECONNECT_FOR = 30.0  # seconds a lost database connection is retried before the run fails
T = TypeVar("T")
P = ParamSpec("P")


class ValueRefused(Exception):  # noqa: N818 - a signal to the writer, not an error
    """The database refused a value of the batch (integrity or data error): isolate it."""

    def __init__(self, cause: sa.exc.SQLAlchemyError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def lost_connection(exc: BaseException) -> bool:
    """SQLAlchemy's own verdict that the connection is gone, or that none could be opened."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    # Raised while opening a connection (no statement ran): the server is not answering.
    return exc.statement is None and isinstance(
        exc, sa.exc.OperationalError | sa.exc.InterfaceError
    )


_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_TRANSIENT_MYSQL = frozenset({1205, 1213})  # lock wait timeout, deadlock


def rolled_back(exc: BaseException) -> bool:
    """The server rolled the transaction back to break a deadlock or a serialization
    conflict (two shards writing at once): the same batch, retried, goes through."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in _TRANSIENT_MYSQL


def refused_value(exc: BaseException) -> bool:
    """An error caused by one referral's own values, not by the database or its schema."""
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return True
    # Raised by SQLAlchemy itself while binding a value, before the driver saw the statement.
    return isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError)


class Database:
    """Every database call of a run: in one of its two worker threads (never on the event
    loop), with the one policy for what an error means (see the module docstring); ``close()``
    when the run ends.

    Two threads of its own rather than asyncio's default pool (up to six here, each call on
    whichever is free): a batch write and a feeder's lookup or the lease's heartbeat still run
    side by side, and the C allocator keeps one arena per thread that has allocated, each
    holding its high-water mark: with the default pool a 100,000-id run's memory grew ~10 MB
    more than with two (bench/README.md, scenario g).
    """

    def __init__(
        self,
        engine: Engine,
        reconnect_for: float = RECONNECT_FOR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.reconnect_for = reconnect_for
        self._clock = clock
        self.writer: ProcessWriter | None = None  # set by the run when it writes in a process
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="etl-db")

    async def call(
        self,
        func: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``func(*args)`` in a thread; a lost connection is retried on a fresh one until
        ``reconnect_for`` runs out; refused values raise :class:`ValueRefused`; anything else
        raises :class:`DatabaseError`."""
        loop = asyncio.get_running_loop()
        call = functools.partial(func, *args, **kwargs)
        return await self._policy(lambda: loop.run_in_executor(self._threads, call))

    def close(self) -> None:
        """No more calls: the threads end once their call (if any) returns."""
        self._threads.shutdown(wait=False)

    async def write(
        self,
        batch: list[FetchResult],
        settings: SyncSettings,
        *,
        run_id: int | None = None,
        run_totals: dict[str, int] | None = None,
        dry_run: bool = False,
    ) -> store.BatchCounts:
        """:func:`store.write_batch` under the same policy: in the writer process when the run
        has one, else in a thread."""
        writer = self.writer
        if writer is None:
            return await self.call(
                store.write_batch,
                self.engine,
                batch,
                settings,
                run_id=run_id,
                run_totals=run_totals,
                dry_run=dry_run,
            )
        return await self._policy(
            lambda: writer.write(
                batch, settings, run_id=run_id, run_totals=run_totals, dry_run=dry_run
            )
        )

    async def _policy(self, attempt: Callable[[], Awaitable[T]]) -> T:
        deadline: float | None = None
        tries = 0
        while True:
            try:
                return await attempt()
            except sa.exc.SQLAlchemyError as exc:
                if refused_value(exc):
                    raise ValueRefused(exc) from exc
                if not (lost_connection(exc) or rolled_back(exc)):
                    raise failure(self.engine, exc) from exc
                now = self._clock()
                deadline = now + self.reconnect_for if deadline is None else deadline
                tries += 1
                if now >= deadline:
                    error = connect_error(self.engine, exc)
                    raise DatabaseError(
                        f"{error} (the connection kept failing for {self.reconnect_for:g}s; "
                        "every committed batch is whole, rerun later)"
                    ) from exc
                log.warning(
                    "%s (%s); retrying on a fresh connection (attempt %d)",
                    "transaction rolled back by the server"
                    if rolled_back(exc)
                    else "database connection lost",
                    exc.__class__.__name__,
                    tries,
                )
                await asyncio.sleep(min(0.25 * 2 ** (tries - 1), 5.0, deadline - now))
