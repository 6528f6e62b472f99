"""Discovery through the list endpoint, the refresh policy, and webhook events as an id source."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from conftest import backfill, rows_of, settings_for, sync
from sqlalchemy.engine import Engine

from etl import due, store
from etl.ids import read_ids
from etl.sandbox import Sandbox


def _list_requests(box: Sandbox) -> int:
    return sum(1 for _, path, _, _ in box.requests if path.endswith("/engagements/referrals"))


def _gets(box: Sandbox) -> set[str]:
    return {p.rsplit("/", 1)[-1] for _, p, _, _ in box.requests if "/referrals/" in p}


def test_discovery_reads_only_changes_after_the_first_sync(sqlite_engine: Engine) -> None:
    """The first sync stores the listed documents without GETs; the next lists only what changed."""
    box = Sandbox(count=1000, seed=31)
    settings = settings_for(sqlite_engine, sync={"discover": True})
    first = sync(sqlite_engine, box, settings=settings)
    assert (first.counts.created, first.ids_total, first.listed) == (1000, 1000, 1000)
    assert _list_requests(box) == 10 == first.requests == first.list_requests  # pages of 100
    assert _gets(box) == set()
    assert first.get_requests == 0
    state = rows_of(sqlite_engine, "sync_state")
    assert len(state) == 1000
    assert {r["source"] for r in state} == {"discovery"}
    assert {r["origin"] for r in rows_of(sqlite_engine, "referral_history")} == {"list"}

    changed = set(box.change(ids=box.ids[100:120]))
    box.requests.clear()
    second = sync(sqlite_engine, box, settings=settings)
    assert _gets(box) == set()
    assert (second.counts.updated, second.counts.created) == (20, 0)
    assert _list_requests(box) == 1  # the time filter leaves only the changes
    versions = rows_of(sqlite_engine, "referral_history")
    assert {v["referral_id"] for v in versions if v["valid_to"] is not None} == changed


def test_discovery_filter_narrows_the_listing(sqlite_engine: Engine) -> None:
    """A discovery filter stores only the referrals it matches."""
    box = Sandbox(count=300, seed=32)
    settings = settings_for(
        sqlite_engine, sync={"discover": True, "discover_filter": "status eq 'Closed'"}
    )
    report = sync(sqlite_engine, box, settings=settings)
    closed = [i for i in box.ids if box.document(i)["status"] == "Closed"]
    assert 0 < report.counts.created == len(closed) < 300
    assert {r["status"] for r in rows_of(sqlite_engine, "referrals")} == {"Closed"}


def test_the_refresh_wait_follows_the_referral_state(sqlite_engine: Engine) -> None:
    """Closed and not-found referrals wait a week before a refresh, open ones an hour."""
    box = Sandbox(count=60, seed=33)
    gone = box.ids[:1]
    box.delete(gone)
    settings = settings_for(
        sqlite_engine, sync={"refresh_open_after": "1h", "refresh_closed_after": "7d"}
    )
    backfill(sqlite_engine, box, ids=gone + box.ids, settings=settings)
    status = {r["id"]: r["status"] for r in rows_of(sqlite_engine, "referrals")}
    for row in rows_of(sqlite_engine, "sync_state"):
        wait = row["next_attempt_at"] - row["last_attempt_at"]
        if row["referral_id"] in gone:
            assert row["last_status_code"] == 404
            assert wait == timedelta(days=7)
        elif status[row["referral_id"]] == "Closed":
            assert wait == timedelta(days=7)
        else:
            assert wait == timedelta(hours=1)
    # Nothing is due now; once the open ones are due, sync fetches exactly those.
    assert due.count_due(sqlite_engine, store.utcnow()) == 0
    later = store.utcnow() + timedelta(hours=2)
    open_ids = {i for i, s in status.items() if s != "Closed"}
    with sqlite_engine.begin() as conn:
        conn.execute(
            sa.update(store.sync_state)
            .where(store.sync_state.c.next_attempt_at <= later)
            .values(next_attempt_at=store.utcnow())
        )
    box.requests.clear()
    report = sync(sqlite_engine, box, settings=settings)
    assert {p.rsplit("/", 1)[-1] for _, p, _, _ in box.requests} == open_ids
    assert report.counts.unchanged == len(open_ids)


def test_webhook_events_refresh_exactly_the_changed_referrals(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    """Webhook events lead to GETs of exactly the referrals they name."""
    box = Sandbox(count=80, seed=34)
    backfill(sqlite_engine, box)
    mark = box.event_seq
    changed = set(box.change(fraction=0.1, seed=2))
    events = tmp_path / "events.jsonl"
    box.write_events(events, since=mark)
    ids = [t.id for t in read_ids(str(events), lambda bad: None)]
    assert set(ids) == changed
    box.requests.clear()
    report = backfill(sqlite_engine, box, ids=ids)
    assert report.counts.updated == len(changed)
    assert report.counts.unchanged == 0
    assert {p.rsplit("/", 1)[-1] for _, p, _, _ in box.requests} == changed
