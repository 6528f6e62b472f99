"""The worker's ONE call into the run core: fetch and store these ids now.

Everything the receiver knows about the run core is in :func:`fetch_ids`; when the core's
options or result types change, this is the one place to adapt.

The run holds its own lease, :data:`LEASE` (``webhook``), not the scheduled `sync`'s: a
webhook run is a few ids and seconds long, so it neither waits for a long scheduled sync nor
makes one exit 75; two `serve` replicas still never drain at once (the second gets
:class:`~etl.errors.LockHeldError` and tries again shortly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from sqlalchemy.engine import Engine

from etl.config import Settings
from etl.ids import TrackedId
from etl.stopping import StopRequest
from etl.sync import RunOptions, run_backfill
from etl.webhooks.ledger import SOURCE

LEASE = "webhook"
TRIGGER = "webhook"


@dataclass(frozen=True, slots=True)
class FetchSummary:
    """What one webhook run did, as the worker needs it."""

    run_id: int | None
    ids: int
    stored: int  # created, updated, unchanged or not found: the database is current for them
    failed: int
    requests: int
    summary: str


def fetch_ids(
    settings: Settings,
    engine: Engine,
    ids: Sequence[str],
    *,
    transport: httpx.AsyncBaseTransport | None,
    auth: httpx.Auth | None,
    stop: StopRequest,
) -> FetchSummary:
    """Fetch ``ids`` through the run core (one run, trigger ``webhook``) and store them.

    Blocking: call it from a thread. ``stop`` (serve's) ends the run early, recorded as
    interrupted. Raises what a run raises (``LockHeldError`` when another replica's worker
    holds the lease, ``ApiUnavailableError``, ``AuthError``, ``InterruptedRunError`` ...).
    """
    options = RunOptions(
        trigger=TRIGGER, lock_name=LEASE, transport=transport, auth=auth, use_lock=True, stop=stop
    )
    leased = settings.replace(sync={"lock_lease": settings.webhook.lock_lease})
    report = run_backfill(leased, engine, (TrackedId(i, SOURCE) for i in ids), options)
    counts = report.counts
    return FetchSummary(
        run_id=report.run_id,
        ids=report.ids_total,
        stored=counts.fetched + counts.not_found,
        failed=counts.failed,
        requests=report.requests,
        summary=report.summary(),
    )
