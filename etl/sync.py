"""One run, from ids to committed rows, returning a :class:`~etl.report.SyncReport`. Never prints.

The run checks the schema, takes its lease, records its ``sync_runs`` row, feeds the ids through
the pipeline (:class:`etl.pipeline.Pipeline`: feeder, fetchers, writer under one task group)
while a heartbeat renews the lease, and ends with its ``sync_runs`` row recorded and its lease
released. Every database call goes through :class:`etl.db_policy.Database` and its one policy
for what an error means.

A ``sync`` is list-first: its feeder first runs discovery (:mod:`etl.discovery`), which stores
each list page through the same write path (:meth:`etl.pipeline.Pipeline.store_listed`), and
then feeds only the ids that are due. A ``backfill`` feeds the ids it is given.

Public seams: :func:`run_backfill` / :func:`run_sync` take :class:`RunOptions` (inputs only) and
return the :class:`~etl.report.SyncReport`; an error that ends a run carries it as
``error.report``. A stop is asked through ``RunOptions.stop`` (:class:`~etl.stopping.StopRequest`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import due, leases, store
from etl.client import ReferralsClient
from etl.config import Settings
from etl.db import connect_error, failure, require_head
from etl.db_policy import Database, ValueRefused
from etl.errors import DatabaseError, EtlError, InterruptedRunError, LockHeldError, first_line
from etl.ids import TrackedId, in_shard
from etl.pipeline import Pipeline
from etl.report import SyncReport, collect_stats
from etl.results import FetchResult
from etl.stopping import StopRequest, StopRequested
from etl.writer import ProcessWriter, usable

log = logging.getLogger(__name__)

LOCK_NAME = "sync"
_LEASE_LOST = "the run's lease was taken over by another run"


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


# The run -----------------------------------------------------------------------------------


async def _run(
    settings: Settings,
    engine: Engine,
    source: Callable[[ReferralsClient, Database, StorePage], AsyncIterator[TrackedId]],
    options: RunOptions,
) -> SyncReport:
    database = Database(engine)
    try:
        return await _run_on(database, settings, engine, source, options)
    finally:
        database.close()


async def _run_on(
    database: Database,
    settings: Settings,
    engine: Engine,
    source: Callable[[ReferralsClient, Database, StorePage], AsyncIterator[TrackedId]],
    options: RunOptions,
) -> SyncReport:
    report = SyncReport(trigger=options.trigger)
    started = time.perf_counter()
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
                collect_stats(report, client.stats)
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
