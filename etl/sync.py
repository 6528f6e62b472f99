"""One run, from ids to committed rows, returning a :class:`SyncReport`. Never prints.

The pipeline (:class:`Pipeline`), supervised by one ``asyncio.TaskGroup``::

    ids ──> feeder ──work──> N fetchers ──results──> writer (one transaction a batch)
            (each id once; stored eTags looked up in chunks)

A ``sync`` is list-first: its feeder first runs discovery (:mod:`etl.discovery`), which stores
each list page through the same write path (:meth:`Pipeline.store_listed`), and then feeds only
the ids that are due. A ``backfill`` feeds the ids it is given.

Fetching and writing overlap: the writer's database work runs in a thread (or, with
``sync.writer_process``, in a second process: :mod:`etl.writer`) while the fetchers
keep fetching, and the queues between the stages are bounded, so memory stays flat whatever the
number of ids. When any stage fails, the task group cancels the others, so no stage ever waits
on one that is gone; when a fetch stage fails, the writer first commits what was already
fetched. The run ends with its ``sync_runs`` row recorded and its lease released.

Every database call of a run goes through :class:`Database`, in a worker thread, under one
policy: a lost connection (SQLAlchemy's own disconnect detection, or a connection that cannot be
opened again) retries the call on a fresh connection for up to ``RECONNECT_FOR`` seconds, and so
does a transaction the server rolled back to break a deadlock (two shards writing at once); a value
the database refuses (an integrity or data error) fails only the referral that carries it; any
other database error (a missing table or column, a denied permission, a read-only or full
database) ends the run: :class:`~etl.errors.DatabaseError`, exit 5, the run recorded `failed`.

Public seams: :func:`run_backfill` / :func:`run_sync` take :class:`RunOptions` (inputs only) and
return the :class:`SyncReport`; an error that ends a run carries it as ``error.report``. A stop is
asked through ``RunOptions.stop`` (:class:`~etl.stopping.StopRequest`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import due, leases, store
from etl.client import ReferralsClient
from etl.config import Settings, SyncSettings
from etl.db import connect_error, failure, require_head
from etl.errors import DatabaseError, EtlError, InterruptedRunError, LockHeldError, first_line
from etl.ids import TrackedId, in_shard
from etl.results import FetchResult, Outcome
from etl.stopping import StopRequest, StopRequested
from etl.throttle import ClientStats
from etl.writer import ProcessWriter, usable

log = logging.getLogger(__name__)

LOCK_NAME = "sync"
RECONNECT_FOR = 30.0  # seconds a lost database connection is retried before the run fails
_LOOKUP_CHUNK = 500
_LEASE_LOST = "the run's lease was taken over by another run"
T = TypeVar("T")
P = ParamSpec("P")


@dataclass
class SyncReport:
    """What a run did; the CLI turns it into a summary line and an exit code."""

    run_id: int | None = None
    trigger: str = "cli"
    status: str = "running"
    ids_total: int = 0  # distinct ids: an id given twice is fetched and counted once
    counts: store.BatchCounts = field(default_factory=store.BatchCounts)
    requests: int = 0
    throttled: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    message: str | None = None
    bad_lines: int = 0
    duplicates: int = 0  # ids given again after their first time (skipped)
    listed: int = 0  # referrals stored from list pages (changed or not)
    list_requests: int = 0
    get_requests: int = 0

    @property
    def stored(self) -> int:
        """Referrals whose new content was stored (created or updated)."""
        return self.counts.created + self.counts.updated

    @property
    def requests_per_stored(self) -> float | None:
        """API requests per referral stored: the run's cost; None when nothing was stored."""
        return round(self.requests / self.stored, 3) if self.stored else None

    @property
    def exit_code(self) -> int:
        return 1 if self.counts.failed else 0

    def totals(self) -> dict[str, int]:
        c = self.counts
        return {
            "ids_total": self.ids_total,
            "fetched": c.fetched,
            "unchanged": c.unchanged,
            "created": c.created,
            "updated": c.updated,
            "not_found": c.not_found,
            "failed": c.failed,
            "requests": self.requests,
            "throttled": self.throttled,
            "list_requests": self.list_requests,
            "get_requests": self.get_requests,
        }

    def summary(self) -> str:
        c = self.counts
        return (
            f"{self.ids_total} ids: {c.created} created, {c.updated} updated, "
            f"{c.unchanged} unchanged, {c.not_found} not found, {c.failed} failed; "
            f"{self.requests} requests ({self.list_requests} list pages, {self.get_requests} "
            f"by id; {self.throttled} throttled; {_per(self.requests_per_stored)} per referral "
            f"stored) in {self.seconds:.1f}s"
        )


def _per(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


Progress = Callable[[int], None]
StorePage = Callable[[list[FetchResult]], Coroutine[Any, Any, None]]


@dataclass
class RunOptions:
    """What a run is asked to do. Inputs only: the outcome is the returned report."""

    trigger: str = "cli"
    dry_run: bool = False
    limit: int | None = None
    use_lock: bool = True
    # The lease a run holds. Shards of one backfill hold one each, so they run side by side
    # (their ids are disjoint) while two runs of the same shard, or two syncs, never do.
    lock_name: str = LOCK_NAME
    progress: Progress | None = None
    transport: httpx.AsyncBaseTransport | None = None
    auth: httpx.Auth | None = None
    # Asked from a signal handler, the scheduler or a lost lease: no new ids are started,
    # in-flight work is committed, the run is recorded as interrupted.
    stop: StopRequest = field(default_factory=StopRequest)


def run_backfill(
    settings: Settings, engine: Engine, ids: Iterable[TrackedId], options: RunOptions
) -> SyncReport:
    """Fetch every id given (each once), due or not."""
    return asyncio.run(_run(settings, engine, lambda _client, _db, _store: _aiter(ids), options))


def run_sync(
    settings: Settings,
    engine: Engine,
    options: RunOptions,
    shard: tuple[int, int] | None = None,
) -> SyncReport:
    """List-first: store what the listing shows (when ``sync.discover``), then fetch every
    tracked id that is due (in ``shard``)."""
    return asyncio.run(
        _run(
            settings,
            engine,
            lambda client, database, store_page: _due(
                settings, database, client, store_page, options, shard
            ),
            options,
        )
    )


async def _aiter(ids: Iterable[TrackedId]) -> AsyncIterator[TrackedId]:
    for tracked in ids:
        yield tracked


async def _due(
    settings: Settings,
    database: Database,
    client: ReferralsClient,
    store_page: StorePage,
    options: RunOptions,
    shard: tuple[int, int] | None,
) -> AsyncIterator[TrackedId]:
    """List-first: store what the listing shows (discovery on), then fetch by id only the ids
    that are due (refreshes, failures to retry, listed documents not trusted as complete)."""
    now = store.utcnow()
    if settings.sync.discover:
        from etl.discovery import discover

        await discover(
            settings, database, client, store_page, now, stop=options.stop, dry_run=options.dry_run
        )
    # Due as of the run's start: what the listing stored just now is not fetched again.
    last = ""
    while page := await database.call(due.due_page, database.engine, now, last):
        last = page[-1][0]
        for tracked in in_shard((TrackedId(i, s) for i, s in page), shard):
            yield tracked


# The database policy -----------------------------------------------------------------------


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
    """Every database call of a run: in a worker thread (never on the event loop), with the
    one policy for what an error means (see the module docstring)."""

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

    async def call(
        self,
        func: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``func(*args)`` in a thread; a lost connection is retried on a fresh one until
        ``reconnect_for`` runs out; refused values raise :class:`ValueRefused`; anything else
        raises :class:`DatabaseError`."""
        return await self._policy(lambda: asyncio.to_thread(func, *args, **kwargs))

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


# The pipeline ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Work:
    """One id for a fetcher, with the eTag of its stored version."""

    tracked: TrackedId
    etag: str | None


class Pipeline:
    """feeder -> ``work`` -> fetchers -> ``results`` -> writer, under one task group.

    ``None`` on a queue means "no more". A stage that fails makes the task group cancel the
    others, so a ``put``/``get`` never waits on a stage that is gone.
    """

    def __init__(
        self,
        settings: Settings,
        database: Database,
        client: ReferralsClient,
        options: RunOptions,
        report: SyncReport,
    ) -> None:
        self.settings = settings
        self.database = database
        self.client = client
        self.options = options
        self.report = report
        self.fetchers = settings.api.concurrency
        self.batch_size = settings.sync.batch_size
        self.work: asyncio.Queue[_Work | None] = asyncio.Queue(
            maxsize=self.fetchers * 4 + _LOOKUP_CHUNK
        )
        self.results: asyncio.Queue[FetchResult | None] = asyncio.Queue(maxsize=self.batch_size * 4)

    async def run(self, ids: AsyncIterator[TrackedId]) -> None:
        """Feed ``ids`` through (a sync's source also stores list pages through
        :meth:`store_listed` as the feeder reads it)."""
        fetch_failure: Exception | None = None
        async with asyncio.TaskGroup() as group:
            group.create_task(self.write(), name="writer")
            try:
                async with asyncio.TaskGroup() as fetching:
                    fetching.create_task(self.feed(ids), name="feeder")
                    for n in range(self.fetchers):
                        fetching.create_task(self.fetch(), name=f"fetcher-{n}")
            except Exception as exc:  # noqa: BLE001 - fetch side failed: commit what it fetched, raise
                fetch_failure = exc
            await self.results.put(None)  # the writer is alive (else this task is cancelled)
        if fetch_failure is not None:
            raise fetch_failure

    async def feed(self, ids: AsyncIterator[TrackedId]) -> None:
        """Each id once (however often it is given), in chunks whose stored eTags are looked
        up together; stops taking ids on a stop request or at the limit."""
        seen: set[int] = set()  # 64-bit hashes of the ids given so far: flat enough in memory
        chunk: list[TrackedId] = []
        stop, limit = self.options.stop, self.options.limit
        async for tracked in ids:
            if stop.is_set() or (limit is not None and len(seen) >= limit):
                break
            key = hash(tracked.id)
            if key in seen:
                self.report.duplicates += 1
                continue
            seen.add(key)
            chunk.append(tracked)
            if len(chunk) >= _LOOKUP_CHUNK:
                await self._dispatch(chunk)
                chunk = []
        if chunk and not stop.is_set():
            await self._dispatch(chunk)
        for _ in range(self.fetchers):
            await self.work.put(None)

    async def _dispatch(self, chunk: list[TrackedId]) -> None:
        ids = [t.id for t in chunk]
        etags = await self.database.call(due.stored_etags, self.database.engine, ids)
        self.report.ids_total += len(chunk)
        for tracked in chunk:
            await self.work.put(_Work(tracked, etags.get(tracked.id)))

    async def fetch(self) -> None:
        stop = self.options.stop
        while (item := await self.work.get()) is not None:
            if stop.is_set():
                continue  # drain: queued ids are left for the next run
            try:
                result = await self.client.fetch_referral(
                    item.tracked.id, item.etag, source=item.tracked.source
                )
            except StopRequested:
                continue  # stopped while waiting (backoff, pacing): not fetched, still due
            await self.results.put(result)

    async def write(self) -> None:
        while (first := await self.results.get()) is not None:
            batch = [first]
            finished = False
            while len(batch) < self.batch_size:
                try:
                    item = self.results.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    finished = True
                    break
                batch.append(item)
            await self._store(batch)
            if finished:
                return

    async def store_listed(self, batch: list[FetchResult]) -> None:
        """A list page's referrals, through the same write path as fetched ones."""
        self.report.ids_total += len(batch)
        self.report.listed += len(batch)
        await self._store(batch)

    async def _store(self, batch: list[FetchResult]) -> None:
        report = self.report
        _collect(report, self.client.stats)
        counts = await self._write(batch)
        report.counts.add(counts)
        for referral_id, error in counts.failures:
            log.warning(
                "referral %s failed: %s",
                referral_id,
                error,
                extra={"run_id": report.run_id, "referral_id": referral_id, "outcome": "failed"},
            )
        if self.options.progress is not None:
            self.options.progress(len(batch))

    async def _write(self, batch: list[FetchResult]) -> store.BatchCounts:
        """One transaction; a refused value splits the batch until only its referral fails."""
        try:
            return await self.database.write(
                batch,
                self.settings.sync,
                run_id=self.report.run_id,
                run_totals=self.report.totals(),
                dry_run=self.options.dry_run,
            )
        except ValueRefused as refused:
            if len(batch) > 1:
                log.warning(
                    "the database refused a value in a batch (%s); writing its referrals one "
                    "by one",
                    refused.cause.__class__.__name__,
                )
                counts = store.BatchCounts()
                for result in batch:
                    counts.add(await self._write([result]))
                return counts
            return await self._failed_alone(batch[0], refused.cause)

    async def _failed_alone(
        self, result: FetchResult, exc: sa.exc.SQLAlchemyError
    ) -> store.BatchCounts:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()
        first = reason[0][:300] if reason else exc.__class__.__name__
        failed = FetchResult(
            result.id,
            Outcome.FAILED,
            result.source,
            error=f"could not be stored: {first}",
            http_status=result.http_status,
            origin=result.origin,
        )
        try:
            return await self.database.write(
                [failed], self.settings.sync, dry_run=self.options.dry_run
            )
        except ValueRefused as again:  # even the failure's bookkeeping is refused: the DB's fault
            raise failure(self.database.engine, again.cause) from again.cause


# The run -----------------------------------------------------------------------------------


async def _run(
    settings: Settings,
    engine: Engine,
    source: Callable[[ReferralsClient, Database, StorePage], AsyncIterator[TrackedId]],
    options: RunOptions,
) -> SyncReport:
    report = SyncReport(trigger=options.trigger)
    started = time.perf_counter()
    database = Database(engine)
    try:
        await asyncio.to_thread(_checked_head, engine)
    except EtlError as exc:
        exc.report = report
        raise
    locking = options.use_lock and not options.dry_run
    owner = leases.lock_owner()
    lease = (options.lock_name, owner) if locking else None
    if locking:
        try:
            await database.call(
                leases.acquire_lock, engine, options.lock_name, owner, settings.sync.lock_lease
            )
        except LockHeldError as exc:
            report.status = "skipped"
            held = "another run holds the lock"
            await _quietly(
                database.call(leases.start_run, engine, options.trigger, "skipped", held)
            )
            exc.report = report
            raise
        except ValueRefused as exc:
            refused = failure(engine, exc.cause)
            refused.report = report
            raise refused from exc.cause
        except EtlError as exc:
            exc.report = report
            raise
    error: BaseException | None = None
    if settings.sync.writer_process and usable(engine):
        database.writer = ProcessWriter(engine)  # starts now, while the run row is written
    try:
        if not options.dry_run:
            report.run_id = await database.call(
                leases.start_run, engine, options.trigger, lease=lease
            )
        client = ReferralsClient(
            settings.api, auth=options.auth, transport=options.transport, stop=options.stop
        )
        async with client:
            try:
                async with asyncio.TaskGroup() as group:
                    beat = group.create_task(
                        _heartbeat(settings, database, lease, options.stop), name="heartbeat"
                    )
                    try:
                        pipeline = Pipeline(settings, database, client, options, report)
                        await pipeline.run(source(client, database, pipeline.store_listed))
                    finally:
                        beat.cancel()
            finally:
                _collect(report, client.stats)
    except BaseException as exc:  # noqa: BLE001 - every ending is recorded; _ending picks what to raise
        error = _unwrap(exc)
    finally:
        if database.writer is not None:  # what it is writing commits (or it is ended)
            writer, database.writer = database.writer, None
            await asyncio.shield(asyncio.to_thread(writer.close))
    report.seconds = time.perf_counter() - started
    report.status, raised = _ending(engine, report, error, options.stop)
    if report.duplicates:
        log.info("%d repeated id(s) were fetched once", report.duplicates)
    log.info(
        "run %s %s: %s",
        report.run_id,
        report.status,
        report.summary(),
        extra={
            "run_id": report.run_id,
            "outcome": report.status,
            "duration": round(report.seconds, 3),
            "requests": report.requests,
            "list_requests": report.list_requests,
            "get_requests": report.get_requests,
            "stored": report.stored,
            "requests_per_stored": report.requests_per_stored,
        },
    )
    if report.run_id is not None:
        await _quietly(
            database.call(
                leases.finish_run,
                engine,
                report.run_id,
                report.status,
                report.totals(),
                report.message or report.summary(),
            )
        )
    if lease is not None:
        await _quietly(database.call(leases.release_lock, engine, *lease))
    if raised is not None:
        if isinstance(raised, EtlError):
            raised.report = report
        raise raised
    return report


def _ending(
    engine: Engine, report: SyncReport, error: BaseException | None, stop: StopRequest
) -> tuple[str, BaseException | None]:
    """The run's status and what to raise (None: return the report)."""
    if isinstance(error, ValueRefused):  # refused outside a batch write: the database's fault
        error = failure(engine, error.cause)
    elif isinstance(error, sa.exc.SQLAlchemyError):  # a call made outside ``Database`` (discovery)
        error = failure(engine, error)
    if error is None or isinstance(error, StopRequested):
        if stop.reason == _LEASE_LOST:
            report.message = f"{_LEASE_LOST}; stopped after committing in-flight work"
            return "interrupted", LockHeldError(f"{report.message}: {report.summary()}")
        if stop.is_set():
            signum = stop.signum or 15
            rerun = (
                "; ids after those were not fetched: run the same backfill again to finish "
                "(what is stored already comes back unchanged)"
                if report.trigger == "backfill"
                else "; the ids not reached stay due for the next sync"
            )
            return "interrupted", InterruptedRunError(
                f"interrupted: {report.summary()}; the run is recorded as interrupted{rerun}",
                signum,
            )
        if error is not None:  # a stop asked without a signal
            return "interrupted", InterruptedRunError(f"stopped: {error}", 15)
        return ("partial" if report.counts.failed else "succeeded"), None
    report.message = _first_line(error)
    if isinstance(error, KeyboardInterrupt | asyncio.CancelledError):
        return "interrupted", error
    if isinstance(error, EtlError):
        return "failed", error
    if isinstance(error, Exception):
        log.error("the run failed unexpectedly", exc_info=error)
        wrapped = EtlError(f"the run failed unexpectedly: {report.message}")
        wrapped.__cause__ = error
        return "failed", wrapped
    return "failed", error


def _unwrap(exc: BaseException) -> BaseException:
    """The error that ended the run, out of the task groups' exception groups: a cancellation
    or stop only when nothing else happened, a job error before an unexpected one."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(exc)

    def rank(e: BaseException) -> int:
        if isinstance(e, KeyboardInterrupt):
            return 0
        if isinstance(e, EtlError):
            return 1
        if isinstance(e, ValueRefused):
            return 2
        if isinstance(e, StopRequested | asyncio.CancelledError):
            return 4
        return 3

    return min(leaves, key=rank) if leaves else exc


async def _quietly(call: Any) -> None:
    """Bookkeeping at the end of a run: retried like any call, logged (not raised) if the
    database stays away: the run's own error, if any, is the one to report."""
    try:
        await call
    except (DatabaseError, ValueRefused) as exc:
        log.error("could not record the end of the run: %s", _first_line(exc))


def _first_line(exc: BaseException) -> str:
    return first_line(exc, 500) or exc.__class__.__name__


def _checked_head(engine: Engine) -> None:
    try:
        require_head(engine)
    except sa.exc.SQLAlchemyError as exc:
        raise connect_error(engine, exc) from exc


def _collect(report: SyncReport, stats: ClientStats) -> None:
    report.requests = stats.requests
    report.throttled = stats.throttled
    report.list_requests = stats.list_requests
    report.get_requests = stats.get_requests
    report.by_status = dict(stats.by_status)


async def _heartbeat(
    settings: Settings, database: Database, lease: tuple[str, str] | None, stop: StopRequest
) -> None:
    """Renew the lease every third of its length; a lease taken over stops the run."""
    if lease is None:
        return
    seconds = settings.sync.lock_lease
    while True:
        await asyncio.sleep(max(1.0, seconds / 3))
        try:
            kept = await database.call(leases.renew_lock, database.engine, *lease, seconds)
        except (DatabaseError, ValueRefused) as exc:
            log.warning("could not renew the run's lease: %s", _first_line(exc))
            continue
        if not kept:
            log.error("%s; stopping", _LEASE_LOST)
            stop.request(_LEASE_LOST)
            return
