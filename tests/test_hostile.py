"""Hostile documents: each one is stored (odd but valid values) or fails alone, on every database.

The bodies are served by the sandbox in place of real ones (the network edge); everything from
the client to the rows goes through the real code and the real databases.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from conftest import backfill, rows_of, settings_for, sync
from hostile_docs import hostile_bodies, install
from sqlalchemy.engine import Engine

from etl.models import TABLES
from etl.sandbox import Sandbox


def _payload(row: dict[str, Any]) -> Any:
    return row["payload"]


def test_odd_documents_are_stored_and_bad_ones_fail_alone(engine: Engine) -> None:
    box = Sandbox(count=120, seed=41)
    bodies = hostile_bodies(box, box.ids[:11])
    install(box, bodies)
    for attempt in (1, 2):  # a second run behaves the same
        report = backfill(engine, box)
        failed = {rid for rid, (_, want) in bodies.items() if want.startswith("failed")}
        assert {rid for rid, _ in report.counts.failures} == failed, attempt
        stored = {r["id"]: r for r in rows_of(engine, "referrals")}
        assert set(stored) == set(box.ids) - failed
    state = {r["referral_id"]: r for r in rows_of(engine, "sync_state")}
    for rid, (_, want) in bodies.items():
        row = stored.get(rid)
        if want.startswith("failed"):
            assert state[rid]["consecutive_failures"] == 2
            assert "nested" in state[rid]["last_error"] and "\n" not in state[rid]["last_error"]
            assert state[rid]["next_attempt_at"] is not None
            continue
        assert row is not None, want
        payload = _payload(row)
        assert payload["id"] == rid
        if want == "stored:years":
            assert row["created_at"] is None and row["updated_at"] is None
            assert payload["createdDateTime"] == "0001-01-01T00:00:00+01:00"
            assert payload["updatedDateTime"] == "9999-12-31T23:30:00-01:00"
        elif want == "stored:fffd":
            assert row["name"] == "half an emoji \ufffd here"
            assert payload["name"] == "half an emoji \ufffd here"
        elif want == "stored:nan":
            assert row["deal_value"] is None
            assert payload["details"]["dealValue"] == "NaN"
            assert payload["score"] == "-Infinity"
        elif want == "stored:fffd-key":
            assert row["notes"] == '{"k\ufffd":"\ufffd","ok":"\U0001f600"}'
            assert payload["details"]["notes"] == {"k\ufffd": "\ufffd", "ok": "\U0001f600"}
    history = rows_of(engine, "referral_history")
    assert len(history) == len(stored)


def test_a_listing_with_hostile_entries_still_stores_the_good_ones(engine: Engine) -> None:
    box = Sandbox(count=150, seed=42)
    bodies = hostile_bodies(box, box.ids[:11])
    del bodies[box.ids[7]]  # a 100,000-deep page cannot be read at all (see the next test)
    del bodies[box.ids[6]]
    del bodies[box.ids[3]]  # a UTF-16 body inside a UTF-8 page is not JSON either
    del bodies[box.ids[4]]  # nor a byte-order mark inside one
    install(box, bodies)
    settings = settings_for(engine, sync={"discover": True})
    report = sync(engine, box, settings=settings)
    failed = {rid for rid, (_, want) in bodies.items() if want.startswith("failed")}
    assert {rid for rid, _ in report.counts.failures} == failed
    stored = {r["id"] for r in rows_of(engine, "referrals")}
    assert stored == set(box.ids) - failed
    with engine.connect() as conn:
        cursor = conn.execute(sa.select(TABLES["sync_cursors"])).one()
    assert cursor.position.year < 9000  # a year-9999 entry is no high-water mark


def test_a_listing_page_that_cannot_be_read_stops_discovery_not_the_run(engine: Engine) -> None:
    box = Sandbox(count=30, seed=43)
    backfill(engine, box, ids=box.ids[:10])
    bad = box.ids[15]
    rec = box.record(bad)
    assert rec is not None
    rec.body = b"[" * 100_000 + b"]" * 100_000
    with engine.begin() as conn:  # make the stored ones due again
        conn.execute(sa.update(TABLES["sync_state"]).values(next_attempt_at=None))
    report = sync(engine, box, settings=settings_for(engine, sync={"discover": True}))
    assert report.counts.failed == 0 and report.counts.unchanged == 10
