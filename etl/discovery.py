"""List-first discovery: read the list endpoint and store what it lists, a hundred a request.

Pages are read newest first (``$orderby=updatedDateTime desc``, ``$top=100``). Every listed
document that can be trusted as complete goes through the same flatten-and-store path as a
fetched one (:func:`etl.store.write_batch`, one transaction per page, the same content-hash skip,
history, ledger and counts), marked ``origin = "list"``. A listed document that cannot be trusted
(unreadable id, or missing a field every referral has) is made due for a GET by id instead.

Every ``sync.full_listing_every`` (and on the first run) the whole listing is read instead,
when discovery covers every referral (no ``discover_filter``): each tracked id it did not show
(a deleted referral, or one outside the listing) is made due for a GET by id, which answers 404
for a deleted one. This is the refresh policy of list-first sync: changes arrive through the
listing, and per-id refreshes are the safety net for what a listing cannot show.

Where to stop: the previous listing's high-water mark (the newest ``updatedDateTime`` it saw)
minus ``sync.discover_overlap``. The listing asks the API for only that much with
``$filter=updatedDateTime ge ...`` (when ``sync.discover_time_filter``; a 400 answer falls back to
the plain listing), and stops by itself once it has passed that point. The mark moves only when a
listing ends cleanly (it reached the stop point or its last page), and only to a time the listing
itself saw: a referral updated while the pages are read moves to the front, where this listing no
longer looks; its new ``updatedDateTime`` is later than the mark, so the next run reads it.
The first run (no mark) reads everything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from etl import due
from etl.client import ListQueryRefusedError, ReferralsClient
from etl.config import Settings
from etl.errors import BadDocumentError, InvalidIdError
from etl.flatten import parse_time, too_deep
from etl.ids import canonical_id
from etl.results import FetchResult, Outcome
from etl.stopping import StopRequest

if TYPE_CHECKING:
    from etl.db_policy import Database

log = logging.getLogger(__name__)

CURSOR = "discovery"
_FUTURE = timedelta(days=1)  # clock skew tolerated in a listed updatedDateTime
FULL_CURSOR = "discovery-full"  # when the last complete full listing began
ORDER = "updatedDateTime desc"
SOURCE = "discovery"
# Fields every referral the API serves carries; a listed document without one of them is not
# trusted as complete and is fetched by id instead.
REQUIRED = ("id", "status", "updatedDateTime")

StorePage = Callable[[list[FetchResult]], Coroutine[Any, Any, Any]]


@dataclass
class Listing:
    """What one discovery did."""

    pages: int = 0
    listed: int = 0  # documents stored from the pages (changed or not)
    untrusted: int = 0  # made due for a GET by id
    filtered: bool = False  # whether the API accepted the updatedDateTime filter
    full: bool = False  # a full listing (no stop point)
    unseen: int = 0  # tracked ids a full listing did not show, made due for a GET by id


def listed_result(document: Any) -> FetchResult | str | None:
    """The result the store writes for one listed document; the id alone (a string) when the
    document cannot be trusted as complete and must be fetched by id; None when it has no usable
    id."""
    raw_id = document.get("id") if isinstance(document, dict) else None
    if not isinstance(raw_id, str):
        # One bad entry of a listing never stops discovery of the others.
        log.warning(
            "discovery skipped a listed entry without a string id (%s)",
            type(document).__name__ if not isinstance(document, dict) else type(raw_id).__name__,
        )
        return None
    try:
        referral_id = canonical_id(raw_id)
    except InvalidIdError as exc:
        log.warning("discovery skipped a listed referral: %s", str(exc)[:300])
        return None
    if (
        any(document.get(name) in (None, "") for name in REQUIRED)
        or parse_time(document.get("updatedDateTime")) is None
        # Nested deeper than any database stores (MariaDB's JSON check): read it by id, where
        # it fails alone with its reason instead of failing its page's transaction.
        or too_deep(document)
    ):
        return referral_id
    document["id"] = referral_id
    return FetchResult(
        referral_id,
        Outcome.FETCHED,
        source=SOURCE,
        document=document,
        http_status=200,
        origin="list",
    )


def time_filter(since: datetime, narrowing: str) -> str:
    """The ``$filter`` that asks for referrals updated at or after ``since`` (and ``narrowing``)."""
    literal = f"updatedDateTime ge {since:%Y-%m-%dT%H:%M:%S.%f}Z"
    return f"({narrowing}) and {literal}" if narrowing else literal


async def discover(
    settings: Settings,
    database: Database,
    client: ReferralsClient,
    store_page: StorePage,
    now: datetime,
    stop: StopRequest | None = None,
    dry_run: bool = False,
) -> Listing:
    """Read the listing down to the mark minus the overlap, storing each page with
    ``store_page``; make untrusted documents due; move the mark when the listing ends cleanly."""
    sync = settings.sync
    engine = database.engine
    mark = await database.call(due.read_cursor, engine, CURSOR)
    done = Listing()
    if sync.listing_covers_all and sync.full_listing_every > 0:
        last_full = await database.call(due.read_cursor, engine, FULL_CURSOR)
        done.full = last_full is None or now - last_full >= timedelta(
            seconds=sync.full_listing_every
        )
    stop_at = mark - timedelta(seconds=sync.discover_overlap) if mark and not done.full else None
    newest = mark
    narrowing = sync.discover_filter
    use_filter = stop_at is not None and sync.discover_time_filter
    while True:
        odata_filter = time_filter(stop_at, narrowing) if use_filter and stop_at else narrowing
        try:
            newest, finished = await _read(
                client, odata_filter, stop_at, newest, store_page, database, now, stop, done
            )
        except BadDocumentError as exc:
            # A page that cannot be read stops discovery for this run, never the run: due ids
            # are still fetched. The high-water mark stays, so the next run reads it again.
            log.warning("discovery stopped: %s; due referrals are still fetched", exc)
            return done
        except ListQueryRefusedError as exc:
            if not use_filter or done.pages:
                raise
            log.warning(
                "the list endpoint refused the updatedDateTime filter (%s); listing without it "
                "(set sync.discover_time_filter = false to skip this request)",
                exc,
            )
            use_filter = False
            continue
        break
    done.filtered = use_filter
    if finished and not dry_run:
        if newest is not None and newest != mark:
            await database.call(due.write_cursor, engine, CURSOR, newest)
        if done.full:
            # Whatever the whole listing did not show is checked by id (404: deleted).
            done.unseen = await database.call(due.make_unseen_due, engine, now, now)
            await database.call(due.write_cursor, engine, FULL_CURSOR, now)
    log.info(
        "discovery read %d page(s)%s: %d referrals stored from the listing, %d to fetch by id",
        done.pages,
        " (the whole listing)" if done.full else "",
        done.listed,
        done.untrusted + done.unseen,
    )
    return done


async def _read(
    client: ReferralsClient,
    odata_filter: str,
    stop_at: datetime | None,
    newest: datetime | None,
    store_page: StorePage,
    database: Database,
    now: datetime,
    stop: StopRequest | None,
    done: Listing,
) -> tuple[datetime | None, bool]:
    """Read pages until the stop point or the end; returns the newest time seen and whether the
    listing ended cleanly (False when a stop request cut it short).

    A page is written while the next one is requested (one write at a time, in order, each its
    own transaction): the listing's latency and the database's time overlap.
    """
    writing: asyncio.Task[Any] | None = None
    finished = True
    try:
        async for page in client.list_referrals(ORDER, odata_filter):
            done.pages += 1
            outcomes: dict[str, FetchResult] = {}
            untrusted: dict[str, str] = {}
            passed = False
            for document in page:
                updated = (
                    parse_time(document.get("updatedDateTime"))
                    if isinstance(document, dict)
                    else None
                )
                if updated is not None and updated > now + _FUTURE:
                    # A timestamp from the far future would stop every later discovery early.
                    log.warning(
                        "discovery: a listed referral has updatedDateTime in the future; "
                        "not used as the high-water mark"
                    )
                    updated = None
                if stop_at is not None and updated is not None and updated < stop_at:
                    passed = True
                    break
                if updated is not None and (newest is None or updated > newest):
                    newest = updated
                found = listed_result(document)
                if isinstance(found, FetchResult):
                    outcomes[found.id] = found
                elif found is not None:
                    untrusted[found] = SOURCE
            if writing is not None:
                await writing  # the previous page is committed before this one starts
                writing = None
            if outcomes:
                writing = asyncio.create_task(store_page(list(outcomes.values())))
                done.listed += len(outcomes)
            if untrusted:
                done.untrusted += len(untrusted)
                await database.call(due.track_ids, database.engine, list(untrusted.items()), now)
            if passed:
                break
            if stop is not None and stop.is_set():
                finished = False
                break
        if writing is not None:
            await writing
            writing = None
    finally:
        if writing is not None:  # the listing failed: let the page being written end first
            await _settle(writing)
    return newest, finished


async def _settle(task: asyncio.Task[Any]) -> None:
    """Wait for ``task`` to end without raising its error (the listing's error is the one to
    report); a cancellation of the waiter cancels it too."""
    try:
        await asyncio.wait([task])
    except BaseException:
        task.cancel()
        raise
    if not task.cancelled():
        task.exception()  # retrieved: its transaction rolled back whole, nothing to add
