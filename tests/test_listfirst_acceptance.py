"""The list-first acceptance runs: the sandbox over TCP, 2,000 referrals, each database.

First sync (discovery on) stores every field of every referral in at most 25 requests; after
10% change, the next sync stores exactly those in at most 7 requests, with two history versions
for each changed referral and one for every other; the same when listed documents carry no
eTag; a backfill by id of the same referrals afterwards adds no version and counts them
unchanged; a referral changed while the pages are read is stored in that run or the next.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import rows_of, settings_for
from oracle import expected_rows, normalise
from sqlalchemy.engine import Engine

from etl.auth import BearerAuth, StaticTokenProvider
from etl.ids import TrackedId
from etl.models import CHILD_TABLES, TABLES
from etl.report import SyncReport
from etl.sandbox import Sandbox, ServerThread
from etl.sync import RunOptions, run_backfill, run_sync

COUNT = 2000
TOKEN = "acceptance-token"
SKIP = {"payload", "first_seen_at", "last_changed_at", "last_checked_at", "deleted_at"}


def _stored(engine: Engine) -> dict[str, dict[str, list[dict[str, Any]]]]:
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for table in ("referrals", *CHILD_TABLES):
        for row in rows_of(engine, table):
            key = str(row.get("referral_id", row.get("id")))
            clean = normalise({k: v for k, v in row.items() if k not in SKIP})
            out.setdefault(key, {}).setdefault(table, []).append(clean)
    return out


def _versions(engine: Engine) -> Counter[str]:
    return Counter(r["referral_id"] for r in rows_of(engine, "referral_history"))


def _payloads(engine: Engine) -> dict[str, Any]:
    referrals = TABLES["referrals"]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(referrals.c.id, referrals.c.payload)).all()
    return {str(i): json.loads(p) if isinstance(p, str) else p for i, p in rows}


@pytest.mark.parametrize("listed_etag", [True, False], ids=["listed-etag", "no-listed-etag"])
def test_list_first_syncs_cost_only_list_requests(engine: Engine, listed_etag: bool) -> None:
    """Thousands of referrals are loaded, changed and re-read from list pages alone, none lost."""
    box = Sandbox(count=COUNT, seed=60)
    box.faults.accepted_tokens = {TOKEN}
    box.faults.list_etag = listed_etag
    with ServerThread(box) as server:
        settings = settings_for(engine, api={"base_url": server.base_url}, sync={"discover": True})

        def options(trigger: str = "cli") -> RunOptions:
            box.stats.reset()
            return RunOptions(trigger=trigger, auth=BearerAuth(StaticTokenProvider(TOKEN)))

        def sync() -> SyncReport:
            return run_sync(settings, engine, options())

        # First sync: every field of every referral, at most 25 requests.
        first = sync()
        assert (first.counts.created, first.counts.failed) == (COUNT, 0)
        assert first.requests == box.stats.total <= 25
        assert first.get_requests == 0
        assert first.list_requests == first.requests
        stored = _stored(engine)
        payloads = _payloads(engine)
        for referral_id in box.ids:
            document = box.document(referral_id)
            for table, rows in expected_rows(document).items():
                want = [normalise(r) for r in rows]
                if table == "referrals" and not listed_etag:
                    want[0]["etag"] = None  # the listing sent none
                assert want == stored[referral_id].get(table, []), f"{table} of {referral_id}"
            listed = (
                document
                if listed_etag
                else {k: v for k, v in document.items() if k not in ("eTag", "@odata.context")}
            )
            assert payloads[referral_id] == listed

        # 10% change: the next sync stores exactly those, in at most 7 requests.
        changed = set(box.change(fraction=0.1, seed=61))
        assert len(changed) == COUNT // 10
        second = sync()
        assert second.requests == box.stats.total <= 7
        assert second.get_requests == 0
        assert (second.counts.updated, second.counts.created, second.counts.failed) == (
            len(changed),
            0,
            0,
        )
        versions = _versions(engine)
        assert {i for i, n in versions.items() if n == 2} == changed
        assert {i for i, n in versions.items() if n == 1} == set(box.ids) - changed
        stored = _stored(engine)
        for referral_id in changed:
            assert (
                stored[referral_id]["referrals"][0]["status"]
                == (box.document(referral_id)["status"])
            )

        # A backfill by id of the same referrals: no new version, all unchanged.
        again = run_backfill(
            settings, engine, (TrackedId(i, "file") for i in box.ids), options("backfill")
        )
        assert (again.counts.unchanged, again.counts.updated, again.counts.created) == (
            COUNT,
            0,
            0,
        )
        assert _versions(engine) == versions

        # A referral changed while the pages are read: stored in that run or the next.
        batch = [i for i in box.ids if i not in changed][:150]
        oldest = min(
            (i for i in box.ids if i not in changed and i not in batch),
            key=lambda i: box.document(i)["updatedDateTime"],
        )
        box.change(ids=batch)  # two pages of changes to read
        box.change_while_listing([oldest], after_pages=1)
        during = sync()
        after = sync()
        assert _versions(engine)[oldest] == 2, "the referral changed mid-listing was lost"
        assert during.counts.updated + after.counts.updated == 151
