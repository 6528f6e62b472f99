"""List-first sync: what a listing stores, where it stops, and what it never loses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
from conftest import options_for, rows_of, settings_for, sync
from sqlalchemy.engine import Engine

from etl.errors import ApiUnavailableError
from etl.report import SyncReport
from etl.sandbox import Sandbox, ServerThread
from etl.sync import run_sync


def _lists(box: Sandbox) -> list[dict[str, str]]:
    return [
        dict(parse_qsl(q)) for _, p, q, _ in box.requests if p.endswith("/engagements/referrals")
    ]


def _gets(box: Sandbox) -> list[str]:
    return [p.rsplit("/", 1)[-1] for _, p, _, _ in box.requests if "/referrals/" in p]


def _versions(engine: Engine) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows_of(engine, "referral_history"):
        counts[row["referral_id"]] = counts.get(row["referral_id"], 0) + 1
    return counts


def _sync(engine: Engine, box: Sandbox, **sync_keys: object) -> SyncReport:
    box.requests.clear()
    return sync(engine, box, settings=settings_for(engine, sync={"discover": True, **sync_keys}))


def test_pages_are_read_newest_first_a_hundred_at_a_time(sqlite_engine: Engine) -> None:
    """The listing asks for pages of 100, newest change first, following the skip tokens."""
    box = Sandbox(count=250, seed=41)
    report = _sync(sqlite_engine, box)
    queries = _lists(box)
    assert len(queries) == 3 == report.list_requests == report.requests
    assert queries[0] == {"$top": "100", "$orderby": "updatedDateTime desc"}  # no mark: all
    assert all("$skiptoken" in q for q in queries[1:])
    assert report.counts.created == 250
    assert report.requests_per_stored == 0.012


def test_a_referral_changed_while_the_pages_are_read_is_never_lost(sqlite_engine: Engine) -> None:
    """A referral that changes while the pages are read gets its new version on the next run."""
    box = Sandbox(count=500, seed=42)
    _sync(sqlite_engine, box)
    # The next listing reads the changed referrals; while it reads, an old referral (deep in
    # the listing) changes and moves to the front, behind the reader.
    newest_first = sorted(box.ids, key=lambda i: box.document(i)["updatedDateTime"])[::-1]
    changed = box.change(ids=newest_first[300:450])
    mover = newest_first[480]
    box.change_while_listing([mover], after_pages=1)
    second = _sync(sqlite_engine, box)
    third = _sync(sqlite_engine, box)
    versions = _versions(sqlite_engine)
    assert versions[mover] == 2, "the referral changed mid-listing was lost"
    assert all(versions[i] == 2 for i in changed)
    assert sum(versions.values()) == 500 + len(changed) + 1
    assert second.counts.updated + third.counts.updated == len(changed) + 1
    assert _gets(box) == []  # all of it from list pages


@pytest.mark.parametrize("time_filter", ["refused", "off"])
def test_without_the_time_filter_the_listing_stops_after_the_mark(
    sqlite_engine: Engine, time_filter: str
) -> None:
    """When the API refuses the time filter, the listing stops at the first page past the mark."""
    box = Sandbox(count=1000, seed=43)
    _sync(sqlite_engine, box)
    changed = set(box.change(fraction=0.1, seed=5))
    if time_filter == "refused":
        box.faults.time_filter = False  # the API answers 400 to a filter on updatedDateTime
        report = _sync(sqlite_engine, box)
        queries = _lists(box)
        assert "updatedDateTime ge" in queries[0]["$filter"]
        assert report.by_status[400] == 1
        queries = queries[1:]
    else:
        report = _sync(sqlite_engine, box, discover_time_filter=False)
        queries = _lists(box)
    assert all("$filter" not in q for q in queries)
    assert len(queries) == 2  # 100 changes on page one; page two passes the mark: stop
    assert report.counts.updated == len(changed)
    assert report.counts.created == 0
    assert {i for i, n in _versions(sqlite_engine).items() if n == 2} == changed
    assert _gets(box) == []


def test_the_time_filter_asks_only_for_changes_since_the_mark_minus_the_overlap(
    sqlite_engine: Engine,
) -> None:
    """The time filter starts ten minutes (the overlap) before the newest change already seen."""
    box = Sandbox(count=300, seed=44)
    _sync(sqlite_engine, box)
    newest = max(box.document(i)["updatedDateTime"] for i in box.ids)
    changed = set(box.change(fraction=0.05, seed=6))
    report = _sync(sqlite_engine, box, discover_filter="status ne 'Closed'")
    [query] = _lists(box)
    assert query["$filter"].startswith("(status ne 'Closed') and updatedDateTime ge ")
    since = query["$filter"].rsplit(" ", 1)[-1]
    assert since < newest  # ten minutes (the overlap) before the newest change seen
    open_changed = {i for i in changed if box.document(i)["status"] != "Closed"}
    assert report.counts.updated == len(open_changed)


def test_listed_documents_that_look_incomplete_are_fetched_by_id(sqlite_engine: Engine) -> None:
    """A listed document missing fields a full one has is fetched by id, once."""
    box = Sandbox(count=120, seed=45)
    partial = box.ids[3]
    box.faults.partial_listed_ids = {partial}  # listed without status; whole by id
    report = _sync(sqlite_engine, box)
    assert _gets(box) == [partial]
    assert (report.listed, report.get_requests, report.counts.created) == (119, 1, 120)
    [version] = [
        v for v in rows_of(sqlite_engine, "referral_history") if v["referral_id"] == partial
    ]
    assert version["origin"] == "get"
    assert version["status"] == box.document(partial)["status"]


def test_refresh_is_a_safety_net_when_the_listing_covers_everything(sqlite_engine: Engine) -> None:
    """When the listing covers every referral, a referral is refreshed by id only after 30 days."""
    box = Sandbox(count=300, seed=46)
    _sync(sqlite_engine, box)
    for row in rows_of(sqlite_engine, "sync_state"):
        assert row["next_attempt_at"] - row["last_attempt_at"] == timedelta(days=30)
    # Narrowed by a filter, the listing no longer shows every change: by-id refresh by status
    # (tests/test_discovery.py), as with discovery off.
    narrowed = settings_for(sqlite_engine, sync={"discover": True, "discover_filter": "x eq 'y'"})
    assert not narrowed.sync.listing_covers_all


def test_a_full_listing_finds_deleted_referrals_by_what_it_no_longer_shows(
    sqlite_engine: Engine,
) -> None:
    """A full listing asks by id only for referrals it no longer shows, and marks them deleted."""
    box = Sandbox(count=1000, seed=48)
    _sync(sqlite_engine, box)
    gone = box.ids[10:13]
    box.delete(gone)
    changed = set(box.change(fraction=0.02, seed=7))
    quiet = _sync(sqlite_engine, box)  # within full_listing_every: only the changes
    assert (quiet.list_requests, quiet.get_requests) == (1, 0)
    assert quiet.counts.updated == len(changed)
    assert quiet.counts.not_found == 0

    full = _sync(sqlite_engine, box, full_listing_every=1e-6)  # a full listing is due
    assert full.list_requests == 10  # 997 referrals
    assert sorted(_gets(box)) == sorted(gone)  # only what the listing no longer shows
    assert (full.counts.not_found, full.counts.updated, full.counts.created) == (3, 0, 0)
    deleted = {r["id"] for r in rows_of(sqlite_engine, "referrals") if r["deleted_at"]}
    assert deleted == set(gone)
    assert len(rows_of(sqlite_engine, "referral_history")) == 1000 + len(changed)


def test_a_second_full_listing_does_not_ask_again_for_known_deleted_ids(
    sqlite_engine: Engine,
) -> None:
    """Referrals already known deleted are not fetched again by the next full listing."""
    box = Sandbox(count=150, seed=49)
    _sync(sqlite_engine, box)
    box.delete(box.ids[:2])
    assert _sync(sqlite_engine, box, full_listing_every=1e-6).counts.not_found == 2
    again = _sync(sqlite_engine, box, full_listing_every=1e-6)
    assert (again.list_requests, again.get_requests) == (2, 0)


def test_the_cost_of_a_run_is_visible_everywhere(sqlite_engine: Engine, tmp_path: Path) -> None:
    """Summary line, JSON run line, metrics file, sync_runs and `status` all show list pages,
    GETs and requests per referral stored (the CLI as a subprocess, the sandbox over TCP)."""
    box = Sandbox(count=450, seed=50)
    box.faults.accepted_tokens = {"tok-cost"}
    box.faults.partial_listed_ids = {box.ids[7]}  # one GET by id
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_ETL_")}
    with ServerThread(box) as server:
        env.update(
            REFERRALS_ETL_API_BASE_URL=server.base_url,
            REFERRALS_ETL_AUTH_MODE="access_token",
            REFERRALS_ETL_AUTH_ACCESS_TOKEN="tok-cost",
            REFERRALS_ETL_DATABASE_URL=sqlite_engine.url.render_as_string(hide_password=False),
            PYTHONPATH=str(Path(__file__).resolve().parent.parent),
        )

        def etl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "etl", *args],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )

        ran = etl("--log-format", "json", "-v", "sync", "--metrics-file", "m.prom")
        status = etl("status")
    assert ran.returncode == 0, ran.stderr
    assert "6 requests (5 list pages, 1 by id; 0 throttled; 0.013 per referral stored)" in (
        ran.stdout
    )
    [line] = [
        e
        for e in map(json.loads, ran.stderr.splitlines())
        if e.get("outcome") == "succeeded" and "run_id" in e
    ]
    assert (line["requests"], line["list_requests"], line["get_requests"]) == (6, 5, 1)
    assert (line["stored"], line["requests_per_stored"]) == (450, 0.013)
    metrics = (tmp_path / "m.prom").read_text("utf-8")
    assert 'referrals_etl_run_requests_by_endpoint{endpoint="list"} 5.0' in metrics
    assert 'referrals_etl_run_requests_by_endpoint{endpoint="get"} 1.0' in metrics
    assert "referrals_etl_run_requests_per_stored_referral 0.013" in metrics
    [run] = rows_of(sqlite_engine, "sync_runs")
    assert (run["requests"], run["list_requests"], run["get_requests"]) == (6, 5, 1)
    assert status.returncode == 0, status.stderr
    assert "requests 6 (list 5, by id 1, throttled 0; 0.013 per referral stored)" in status.stdout


class _ListFailsAfter(httpx.AsyncBaseTransport):
    """The sandbox, except that list requests after the first ``pages`` answer 503."""

    def __init__(self, inner: httpx.AsyncBaseTransport, pages: int) -> None:
        self.inner, self.pages, self.seen = inner, pages, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/engagements/referrals"):
            self.seen += 1
            if self.seen > self.pages:
                return httpx.Response(503, json={"error": {"code": "ServiceUnavailable"}})
        return await self.inner.handle_async_request(request)


def test_a_listing_that_fails_midway_leaves_the_mark_where_it_was(
    sqlite_engine: Engine,
) -> None:
    """A listing failing at page three keeps the two whole pages read and leaves the mark alone."""
    box = Sandbox(count=500, seed=51)
    settings = settings_for(sqlite_engine, sync={"discover": True}, api={"max_attempts": 2})
    options = options_for(box)
    options.transport = _ListFailsAfter(box.transport(), pages=2)
    with pytest.raises(ApiUnavailableError) as failed:
        run_sync(settings, sqlite_engine, options)
    assert failed.value.exit_code == 4
    assert len(rows_of(sqlite_engine, "referrals")) == 200  # the two pages read, whole
    assert rows_of(sqlite_engine, "sync_cursors") == []  # the mark did not move
    assert rows_of(sqlite_engine, "sync_runs")[0]["status"] == "failed"
    again = _sync(sqlite_engine, box)
    assert (again.counts.created, again.counts.unchanged) == (300, 200)
    assert len(rows_of(sqlite_engine, "referral_history")) == 500
