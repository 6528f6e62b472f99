"""The pipeline of one run (:class:`Pipeline`), supervised by one ``asyncio.TaskGroup``::

    ids ──> feeder ──work──> N fetchers ──results──> writer (one transaction a batch)
            (each id once; stored eTags looked up in chunks)

A ``sync``'s feeder first runs discovery (:mod:`etl.discovery`), which stores each list page
through the same write path (:meth:`Pipeline.store_listed`).

Fetching and writing overlap: the writer's database work runs in a thread (or, with
``sync.writer_process``, in a second process: :mod:`etl.writer`) while the fetchers
keep fetching, and the queues between the stages are bounded, so memory stays flat whatever the
number of ids. When any stage fails, the task group cancels the others, so no stage ever waits
on one that is gone; when a fetch stage fails, the writer first commits what was already
fetched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from etl import due, store
from etl.client import ReferralsClient
from etl.config import Settings
from etl.db import failure
from etl.db_policy import Database, ValueRefused
from etl.ids import TrackedId
from etl.report import SyncReport, collect_stats
from etl.results import FetchResult, Outcome
from etl.seen import SeenHashes
from etl.stopping import StopRequested

if TYPE_CHECKING:
    from etl.sync import RunOptions

# The name these lines had before the pipeline left etl/sync.py: log filters keep working.
log = logging.getLogger("etl.sync")

_LOOKUP_CHUNK = 500


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
        seen = SeenHashes()  # the ids given so far, as 64-bit hashes in 16-32 bytes each
        chunk: list[TrackedId] = []
        stop, limit = self.options.stop, self.options.limit
        async for tracked in ids:
            if stop.is_set() or (limit is not None and len(seen) >= limit):
                break
            if not seen.add(hash(tracked.id)):
                self.report.duplicates += 1
                continue
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
        collect_stats(report, self.client.stats)
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
