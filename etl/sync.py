"""One run, from ids to committed rows, returning a :class:`SyncReport`. Never prints.

The pipeline::

    ids ──> lookup stored eTags (chunks) ──> N fetch workers ──> writer (one transaction a batch)

Fetching and writing overlap: the writer runs in a thread while the workers keep fetching, and
the queues between the stages are bounded, so memory stays flat whatever the number of ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import store
from etl.client import ClientStats, FetchResult, ReferralsClient
from etl.config import Settings
from etl.db import connect_error, require_head
from etl.errors import DatabaseError, EtlError, InterruptedRunError
from etl.ids import TrackedId, in_shard

log = logging.getLogger(__name__)

LOCK_NAME = "sync"
_LOOKUP_CHUNK = 500
_DB_RETRIES = 3
_DONE: Any = object()
T = TypeVar("T")


@dataclass
class SyncReport:
    """What a run did; the CLI turns it into a summary line and an exit code."""

    run_id: int | None = None
    trigger: str = "cli"
    status: str = "running"
    ids_total: int = 0
    counts: store.BatchCounts = field(default_factory=store.BatchCounts)
    requests: int = 0
    throttled: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    message: str | None = None
    bad_lines: int = 0
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


@dataclass
class RunOptions:
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
    stop: asyncio.Event | None = None
    stop_signal: list[int] = field(default_factory=list)
    report: SyncReport | None = None  # set by the run: its report, also when the run raises


StorePage = Callable[[list[store.Outcome]], Awaitable[Any]]
Source = Callable[[ReferralsClient, StorePage], AsyncIterator[TrackedId]]


def run_backfill(
    settings: Settings, engine: Engine, ids: Iterable[TrackedId], options: RunOptions
) -> SyncReport:
    """Fetch every id given, due or not."""
    return asyncio.run(_run(settings, engine, lambda _client, _store: _aiter(ids), options))


def run_sync(
    settings: Settings,
    engine: Engine,
    options: RunOptions,
    shard: tuple[int, int] | None = None,
) -> SyncReport:
    """Discover (when enabled), then fetch every tracked id that is due (in ``shard``)."""
    return asyncio.run(
        _run(
            settings,
            engine,
            lambda client, store_page: _due(settings, engine, client, store_page, options, shard),
            options,
        )
    )


async def _aiter(ids: Iterable[TrackedId]) -> AsyncIterator[TrackedId]:
    for tracked in ids:
        yield tracked


async def _due(
    settings: Settings,
    engine: Engine,
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
            settings, engine, client, store_page, now, stop=options.stop, dry_run=options.dry_run
        )
    # Due as of the run's start: what the listing stored just now is not fetched again.
    pages = store.due_pages(engine, now)
    while (page := await asyncio.to_thread(next, pages, None)) is not None:
        for tracked in in_shard((TrackedId(i, s) for i, s in page), shard):
            yield tracked


async def _run(
    settings: Settings,
    engine: Engine,
    source: Source,
    options: RunOptions,
) -> SyncReport:
    report = SyncReport(trigger=options.trigger)
    options.report = report
    started = time.perf_counter()
    await asyncio.to_thread(_checked_head, engine)
    owner = store.lock_owner()
    if options.use_lock and not options.dry_run:
        try:
            await asyncio.to_thread(
                store.acquire_lock, engine, options.lock_name, owner, settings.sync.lock_lease
            )
        except EtlError:
            await asyncio.to_thread(
                store.start_run, engine, options.trigger, "skipped", "another run holds the lock"
            )
            raise
    try:
        if not options.dry_run:
            report.run_id = await asyncio.to_thread(store.start_run, engine, options.trigger)
        client = ReferralsClient(settings.api, auth=options.auth, transport=options.transport)
        heartbeat = asyncio.create_task(_heartbeat(settings, engine, owner, options))
        try:
            async with client:

                async def store_page(outcomes: list[store.Outcome]) -> None:
                    report.ids_total += len(outcomes)
                    report.listed += len(outcomes)
                    await _store(settings, engine, client, outcomes, report, options)

                await _pipeline(
                    settings, engine, client, source(client, store_page), options, report
                )
            report.status = "partial" if report.counts.failed else "succeeded"
            if options.stop_signal:
                report.status = "interrupted"
        except BaseException as exc:
            report.status = (
                "interrupted"
                if isinstance(exc, InterruptedRunError | asyncio.CancelledError | KeyboardInterrupt)
                else "failed"
            )
            report.message = str(exc) or exc.__class__.__name__
            raise
        finally:
            heartbeat.cancel()
            _collect(report, client.stats)
            report.seconds = time.perf_counter() - started
            log.info(
                "run %s %s: %s",
                report.run_id,
                report.status,
                report.summary(),
                extra={
                    "run_id": report.run_id,
                    "outcome": report.status,
                    "duration": round(report.seconds, 3),
                },
            )
            if report.run_id is not None:
                message = report.message or report.summary()
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    await asyncio.to_thread(
                        store.finish_run,
                        engine,
                        report.run_id,
                        report.status,
                        report.totals(),
                        message,
                    )
    finally:
        if options.use_lock and not options.dry_run:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                await asyncio.to_thread(store.release_lock, engine, options.lock_name, owner)
    if report.status == "interrupted":  # not a stop that came after the run was recorded
        raise InterruptedRunError(
            f"interrupted: {report.summary()}; the run is recorded as interrupted",
            options.stop_signal[0],
        )
    return report


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


async def _heartbeat(settings: Settings, engine: Engine, owner: str, options: RunOptions) -> None:
    if not options.use_lock or options.dry_run:
        return
    lease = settings.sync.lock_lease
    while True:
        await asyncio.sleep(max(1.0, lease / 3))
        try:
            kept = await asyncio.to_thread(
                store.renew_lock, engine, options.lock_name, owner, lease
            )
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not renew the run lock: %s", exc.__class__.__name__)
            continue
        if not kept:
            log.error("the run lock was taken over by another run; stopping")
            if options.stop is not None:
                options.stop.set()
            return


async def _pipeline(
    settings: Settings,
    engine: Engine,
    client: ReferralsClient,
    ids: Any,
    options: RunOptions,
    report: SyncReport,
) -> None:
    concurrency = settings.api.concurrency
    work: asyncio.Queue[Any] = asyncio.Queue(maxsize=concurrency * 4 + _LOOKUP_CHUNK)
    results: asyncio.Queue[Any] = asyncio.Queue(maxsize=settings.sync.batch_size * 4)
    stop = options.stop or asyncio.Event()

    async def feed() -> None:
        chunk: list[TrackedId] = []
        seen = 0
        async for tracked in ids:
            if stop.is_set() or (options.limit is not None and seen >= options.limit):
                break
            seen += 1
            chunk.append(tracked)
            if len(chunk) >= _LOOKUP_CHUNK:
                await _dispatch(chunk)
                chunk = []
        if chunk and not stop.is_set():
            await _dispatch(chunk)
        for _ in range(concurrency):
            await work.put(_DONE)

    async def _dispatch(chunk: list[TrackedId]) -> None:
        etags = await _with_db_retries(engine, store.stored_etags, engine, [t.id for t in chunk])
        report.ids_total += len(chunk)
        for tracked in chunk:
            await work.put((tracked, etags.get(tracked.id)))

    async def fetch() -> None:
        while True:
            item = await work.get()
            if item is _DONE:
                return
            if stop.is_set():
                continue  # drain: in-flight requests finish, queued ids are left for next run
            tracked, etag = item
            result = await client.fetch_referral(tracked.id, etag)
            await results.put((tracked, result))

    async def write() -> None:
        while True:
            first = await results.get()
            if first is _DONE:
                return
            batch = [first]
            finished = False
            while len(batch) < settings.sync.batch_size:
                try:
                    item = results.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is _DONE:
                    finished = True
                    break
                batch.append(item)
            await _write(batch)
            if finished:
                return

    async def _write(batch: list[tuple[TrackedId, FetchResult]]) -> None:
        outcomes = [_outcome(t, r) for t, r in batch]
        await _store(settings, engine, client, outcomes, report, options)

    writer = asyncio.create_task(write())
    workers = [asyncio.create_task(fetch()) for _ in range(concurrency)]
    feeder = asyncio.create_task(feed())
    try:
        await asyncio.gather(feeder, *workers)
    except BaseException:
        for task in (feeder, *workers):
            task.cancel()
        await results.put(_DONE)
        with contextlib.suppress(Exception):
            await writer  # commit what was fetched before the error
        raise
    await results.put(_DONE)
    await writer


async def _store(
    settings: Settings,
    engine: Engine,
    client: ReferralsClient,
    outcomes: list[store.Outcome],
    report: SyncReport,
    options: RunOptions,
) -> None:
    """The one write path: a batch of fetched or listed referrals, in one transaction."""
    _collect(report, client.stats)
    counts = await _write_with_retries(settings, engine, outcomes, report, options)
    report.counts.add(counts)
    for referral_id, error in counts.failures:
        log.warning(
            "referral %s failed: %s",
            referral_id,
            error,
            extra={"run_id": report.run_id, "referral_id": referral_id, "outcome": "failed"},
        )
    if options.progress is not None:
        options.progress(len(outcomes))


async def _with_db_retries(engine: Engine, func: Callable[..., T], *args: Any) -> T:
    """Run a database call in a thread; a lost connection is retried on a fresh one."""
    for attempt in range(1, _DB_RETRIES + 1):
        try:
            return await asyncio.to_thread(func, *args)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            if not _is_disconnect(exc) or attempt == _DB_RETRIES:
                raise connect_error(engine, exc) from exc
            log.warning("database connection lost (attempt %d); retrying", attempt)
            await asyncio.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def _outcome(tracked: TrackedId, result: FetchResult) -> store.Outcome:
    return store.Outcome(
        id=result.id,
        source=tracked.source,
        status=result.status,
        document=result.document,
        raw=result.raw,
        etag_header=result.etag_header,
        error=result.error,
        http_status=result.http_status,
    )


async def _write_with_retries(
    settings: Settings,
    engine: Engine,
    outcomes: list[store.Outcome],
    report: SyncReport,
    options: RunOptions,
) -> store.BatchCounts:
    """Write a batch; on a lost connection retry on a fresh one; isolate a bad referral."""
    for attempt in range(1, _DB_RETRIES + 1):
        totals = report.totals()
        try:
            return await asyncio.to_thread(
                store.write_batch,
                engine,
                outcomes,
                settings.sync,
                run_id=report.run_id,
                run_totals=totals,
                dry_run=options.dry_run,
            )
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            if _is_disconnect(exc):
                log.warning("database connection lost (attempt %d); retrying the batch", attempt)
                await asyncio.sleep(0.5 * attempt)
                continue
            raise connect_error(engine, exc) from exc
        except (sa.exc.IntegrityError, sa.exc.DataError, sa.exc.StatementError) as exc:
            if len(outcomes) == 1:
                return _failed_alone(settings, engine, outcomes[0], exc, options)
            log.warning(
                "a batch failed (%s); writing its referrals one by one", exc.__class__.__name__
            )
            counts = store.BatchCounts()
            for outcome in outcomes:
                counts.add(await _write_with_retries(settings, engine, [outcome], report, options))
            return counts
    raise DatabaseError(
        f"database {engine.url.render_as_string(hide_password=True)}: the connection kept "
        f"failing ({_DB_RETRIES} attempts); every committed referral is whole, rerun later"
    )


def _is_disconnect(exc: sa.exc.DBAPIError) -> bool:
    return bool(exc.connection_invalidated) or "connection" in str(exc.orig).lower()


def _failed_alone(
    settings: Settings, engine: Engine, outcome: store.Outcome, exc: Exception, options: RunOptions
) -> store.BatchCounts:
    reason = str(getattr(exc, "orig", exc)).splitlines()[0][:300]
    failed = store.Outcome(
        id=outcome.id,
        source=outcome.source,
        status=0,
        error=f"could not be stored: {reason}",
        http_status=outcome.http_status,
        origin=outcome.origin,
    )
    return store.write_batch(engine, [failed], settings.sync, dry_run=options.dry_run)
