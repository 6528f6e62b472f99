"""The worker: drains due ids from ``webhook_events`` (the database, not memory) and fetches them.

Woken at once by the receiver after each accepted event, and every ``webhook.poll_interval``
anyway (events another replica accepted, or that were accepted before a restart). Each round
takes up to ``webhook.batch_size`` ids (each id once, however many events name it), fetches
them in one run through :func:`etl.webhooks.fetch.fetch_ids`, then marks processed the events
received before the round began, except those of referrals that failed (tried again, at most
:data:`WORKER_ATTEMPTS` times in a row). A round that fails leaves its events due and the worker
backs off (1 s doubling to 60 s); errors no later round can cure (authentication, schema, settings)
stop `serve` with their exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from sqlalchemy.engine import Engine

from etl.errors import (
    AuthError,
    ConfigError,
    EtlError,
    InterruptedRunError,
    LockHeldError,
    SchemaNotAtHeadError,
    first_line,
)
from etl.stopping import StopRequest
from etl.store import utcnow
from etl.webhooks import ledger
from etl.webhooks.fetch import FetchSummary
from etl.webhooks.metrics import ServeMetrics

log = logging.getLogger(__name__)

Fetch = Callable[[Sequence[str]], FetchSummary]
_FATAL: tuple[type[EtlError], ...] = (AuthError, ConfigError, SchemaNotAtHeadError)
_BACKOFF_MAX = 60.0
# A referral whose fetch failed is tried again by the worker (after 2 s, 4 s) until it has
# failed this many times in a row; then its event is done and the scheduled sync's backoff
# (sync_state.next_attempt_at) takes over, so one bad referral cannot keep the worker busy.
WORKER_ATTEMPTS = 3


class Worker:
    def __init__(
        self,
        engine: Engine,
        fetch: Fetch,
        stop: StopRequest,
        metrics: ServeMetrics,
        *,
        batch_size: int,
        poll_interval: float,
    ) -> None:
        self.engine = engine
        self.fetch = fetch
        self.stop = stop
        self.metrics = metrics
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.fatal_code: int | None = None
        self._wake = asyncio.Event()
        self._backoff = 0.0

    def wake(self) -> None:
        """An event was recorded: look now (call on the worker's loop)."""
        self._wake.set()

    async def run(self) -> None:
        while not self.stop.is_set():
            self._wake.clear()
            try:
                drained = await self.drain_once()
            except Exception as exc:  # the database: log it, back off, keep serving
                log.error(
                    "webhook worker: %s: %s",
                    exc.__class__.__name__,
                    first_line(exc),
                )
                drained = 0
                self._backoff = min(_BACKOFF_MAX, max(1.0, self._backoff * 2))
            if self.fatal_code is not None:
                self.stop.request("the webhook worker hit an error no retry can cure")
                return
            if self._backoff:
                await self.stop.wait(self._backoff)
            elif not drained:
                await self._idle(self.poll_interval)

    async def _idle(self, seconds: float) -> None:
        waiters = {
            asyncio.create_task(self._wake.wait()),
            asyncio.create_task(self.stop.wait(seconds)),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                task.cancel()
            for task in waiters:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def drain_once(self) -> int:
        """One round; returns how many ids it fetched (0: nothing due, or it failed)."""
        started = utcnow()
        ids = await asyncio.to_thread(ledger.due_ids, self.engine, self.batch_size)
        self.metrics.pending.set(await asyncio.to_thread(ledger.pending_count, self.engine))
        if not ids:
            self._backoff = 0.0
            return 0
        try:
            summary = await asyncio.to_thread(self.fetch, ids)
        except LockHeldError:
            self.metrics.runs.labels("lock_held").inc()
            log.info("webhook worker: another replica's worker is running; trying again shortly")
            self._backoff = 1.0
            return 0
        except InterruptedRunError:
            log.info("webhook worker: stopped mid-run; its events stay due for the next start")
            return 0
        except _FATAL as exc:
            self.metrics.runs.labels("failed").inc()
            log.error("webhook worker stopped (exit %d): %s", exc.exit_code, exc)
            self.fatal_code = exc.exit_code
            return 0
        except EtlError as exc:
            self.metrics.runs.labels("failed").inc()
            self._backoff = min(_BACKOFF_MAX, max(1.0, self._backoff * 2))
            log.error(
                "webhook worker: fetching %d referral(s) failed (exit %d), retrying in %.0fs: %s",
                len(ids),
                exc.exit_code,
                self._backoff,
                exc,
            )
            return 0
        retry: set[str] = set()
        if summary.failed:
            retry = await asyncio.to_thread(
                ledger.failed_again, self.engine, ids, started, WORKER_ATTEMPTS
            )
        self._backoff = min(_BACKOFF_MAX, max(2.0, self._backoff * 2)) if retry else 0.0
        done = [i for i in ids if i not in retry]
        now = utcnow()
        await asyncio.to_thread(ledger.mark_processed, self.engine, done, started, now)
        received = await asyncio.to_thread(ledger.received_times, self.engine, done, now)
        for at in received:
            self.metrics.lag.observe(max(0.0, (now - at).total_seconds()))
        self.metrics.runs.labels("partial" if summary.failed else "succeeded").inc()
        self.metrics.referrals.labels("stored").inc(summary.stored)
        self.metrics.referrals.labels("failed").inc(summary.failed)
        self.metrics.pending.set(await asyncio.to_thread(ledger.pending_count, self.engine))
        log.log(
            logging.WARNING if summary.failed else logging.INFO,
            "webhook run %s: %s",
            summary.run_id,
            summary.summary,
            extra={"run_id": summary.run_id, "outcome": "partial" if summary.failed else "ok"},
        )
        return len(ids)
