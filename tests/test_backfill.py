"""The core path on SQLite, PostgreSQL and MariaDB: documents in, rows out, eTags respected."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from conftest import backfill, count_rows, rows_of, settings_for
from oracle import expected_rows, normalise
from sqlalchemy.engine import Engine

from etl.auth import BearerAuth, StaticTokenProvider
from etl.flatten import content_hash
from etl.ids import TrackedId
from etl.models import CHILD_TABLES, TABLES
from etl.sandbox import Sandbox
from etl.sync import RunOptions, run_backfill

SEED = json.loads((Path(__file__).parent / "data" / "seed_referral.json").read_text("utf-8"))
REFERRAL_DATA = ("referrals", *CHILD_TABLES, "referral_history")


def _db_rows(engine: Engine, ids: set[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Rows of every referral table, per referral id (bookkeeping columns left out)."""
    skip = {"payload", "first_seen_at", "last_changed_at", "last_checked_at", "deleted_at"}
    out: dict[str, dict[str, list[dict[str, Any]]]] = {i: {} for i in ids}
    for table in ("referrals", *CHILD_TABLES):
        for row in rows_of(engine, table):
            key = row.get("referral_id", row.get("id"))
            clean = normalise({k: v for k, v in row.items() if k not in skip})
            out[key].setdefault(table, []).append(clean)
    return out


def test_seed_document_lands_field_by_field(engine: Engine) -> None:
    """The seed page's example document, through a MockTransport, in every column."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v1.0/engagements/referrals/{SEED['id']}"
        return httpx.Response(200, json=SEED, headers={"Request-ID": "r-1"})

    report = run_backfill(
        settings_for(engine),
        engine,
        [TrackedId(SEED["id"], "file")],
        RunOptions(
            transport=httpx.MockTransport(handler), auth=BearerAuth(StaticTokenProvider("t"))
        ),
    )
    assert report.counts.created == 1 and report.exit_code == 0
    [referral] = rows_of(engine, "referrals")
    payload = referral.pop("payload")
    payload = json.loads(payload) if isinstance(payload, str) else payload
    assert payload == SEED
    first_seen = referral.pop("first_seen_at")
    assert referral.pop("last_changed_at") == first_seen == referral.pop("last_checked_at")
    assert normalise(referral) == normalise(
        {
            "id": "c5fbb3b6-be74-4795-9fb5-4324c73fed37",
            "engagement_id": "65edc0b5-3485-41b7-a17e-dfa9ef4706e2",
            "name": None,
            "organization_id": "7d23e5ca-19dc-4eaa-aac8-5e6b559f0d1d",
            "organization_name": "Contoso Company",
            "external_reference_id": None,
            "status": "New",
            "substatus": "Pending",
            "status_reason": None,
            "qualification": "Direct",
            "type": "Independent",
            "direction": "Incoming",
            "created_at": _utc("2020-10-30T21:03:00"),
            "updated_at": _utc("2020-10-30T21:03:00"),
            "expires_at": None,
            "accepted_at": None,
            "deal_value": Decimal("10000"),
            "currency": "USD",
            "closing_at": _utc("2020-12-01T00:00:00"),
            "notes": "We are interested in deploying Microsoft 365 and are looking forsupport "
            "in training our employees. Can you help?",
            "consent_to_contact": None,
            "consent_to_share_info": None,
            "invite_notes": None,
            "invited_by_organization_id": None,
            "invited_by_organization_name": None,
            "etag": '"2500ec5a-0000-0000-0000-5bf4967d0000"',
            "deleted_at": None,
        }
    )
    assert rows_of(engine, "referral_customers") == [
        {
            "referral_id": SEED["id"],
            "name": "Fabrikam Customer Inc",
            "size": None,
            "address_line1": "One Microsoft Way",
            "address_line2": None,  # "" in the document: NULL in typed columns
            "city": "Redmond",
            "state": "WA",
            "region": None,
            "postal_code": "98052",
            "country": "US",
        }
    ]
    requirements = [
        (r["kind"], r["position"], r["item_id"], r["name"], r["item_type"])
        for r in rows_of(engine, "referral_requirements")
    ]
    assert sorted(requirements) == [
        ("industries", 0, "Education", None, None),
        ("products", 0, "Microsoft365", None, None),
        ("services", 0, "LearningAndCertification", None, None),
        ("solutions", 0, "SOL-Microsoft365", "Microsoft365", None),
    ]
    assert rows_of(engine, "referral_contacts") == []
    assert rows_of(engine, "referral_customer_ids") == []
    assert rows_of(engine, "referral_targets") == []
    [version] = rows_of(engine, "referral_history")
    assert (version["referral_id"], version["etag"], version["status"], version["valid_to"]) == (
        SEED["id"],
        SEED["eTag"],
        "New",
        None,
    )
    [state] = rows_of(engine, "sync_state")
    assert (state["etag"], state["last_status_code"], state["consecutive_failures"]) == (
        SEED["eTag"],
        200,
        0,
    )
    assert state["content_hash"] == content_hash(SEED)  # the hash identifies the version


def _utc(text: str) -> Any:
    from datetime import UTC, datetime

    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_backfill_stores_every_field_of_every_document(engine: Engine) -> None:
    """A few hundred generated referrals: the database equals what the documents say."""
    box = Sandbox(count=300, seed=11)
    report = backfill(engine, box)
    assert (report.counts.created, report.counts.failed) == (300, 0)
    stored = _db_rows(engine, set(box.ids))
    for referral_id in box.ids:
        document = box.document(referral_id)
        expected = expected_rows(document)
        for table, rows in expected.items():
            assert stored[referral_id].get(table, []) == [normalise(r) for r in rows], (
                f"{table} of {referral_id}"
            )
    with engine.connect() as conn:
        payloads = dict(
            conn.execute(sa.select(TABLES["referrals"].c.id, TABLES["referrals"].c.payload)).all()
        )
    for referral_id in box.ids:
        payload = payloads[referral_id]
        payload = json.loads(payload) if isinstance(payload, str) else payload
        assert payload == box.document(referral_id)


def _snapshot(engine: Engine) -> tuple[dict[str, int], dict[str, Any]]:
    changed = {r["id"]: r["last_changed_at"] for r in rows_of(engine, "referrals")}
    counts = {t: n for t, n in count_rows(engine).items() if t in REFERRAL_DATA}
    return counts, changed


def test_unchanged_second_backfill_writes_nothing(engine: Engine) -> None:
    box = Sandbox(count=120, seed=5)
    backfill(engine, box)
    before = _snapshot(engine)
    history_before = rows_of(engine, "referral_history")
    etags = {r["referral_id"]: r["etag"] for r in rows_of(engine, "sync_state")}

    for send_304 in (True, False):
        box.faults.send_304 = send_304
        box.requests.clear()
        report = backfill(engine, box)
        assert (report.counts.unchanged, report.counts.created, report.counts.updated) == (
            120,
            0,
            0,
        )
        sent = {
            path.rsplit("/", 1)[-1]: headers.get("if-none-match")
            for _, path, _, headers in box.requests
        }
        assert sent == etags  # If-None-Match with the stored eTag for every id
        assert _snapshot(engine) == before
        assert rows_of(engine, "referral_history") == history_before
    checked = [r["last_checked_at"] for r in rows_of(engine, "referrals")]
    assert all(
        c > before[1][r["id"]] for c, r in zip(checked, rows_of(engine, "referrals"), strict=True)
    )


def test_changed_referrals_are_updated_with_one_history_version_each(engine: Engine) -> None:
    box = Sandbox(count=200, seed=8)
    backfill(engine, box)
    before = {r["id"]: r for r in rows_of(engine, "referrals")}
    children_before = {t: rows_of(engine, t) for t in CHILD_TABLES}
    changed = set(box.change(fraction=0.1, seed=3))
    assert len(changed) == 20

    report = backfill(engine, box)
    assert (report.counts.updated, report.counts.unchanged, report.counts.created) == (20, 180, 0)
    after = {r["id"]: r for r in rows_of(engine, "referrals")}
    moved = {i for i in after if after[i]["last_changed_at"] != before[i]["last_changed_at"]}
    assert moved == changed
    history = rows_of(engine, "referral_history")
    versions: dict[str, list[dict[str, Any]]] = {}
    for row in history:
        versions.setdefault(row["referral_id"], []).append(row)
    assert {i for i, v in versions.items() if len(v) == 2} == changed
    assert all(len(v) == 1 for i, v in versions.items() if i not in changed)
    for referral_id in changed:
        old, new = sorted(versions[referral_id], key=lambda r: r["id"])
        assert old["valid_to"] is not None and new["valid_to"] is None
        assert new["etag"] == box.etag(referral_id)
    # Child rows: exactly the new document's, for changed ones; untouched for the rest.
    stored = _db_rows(engine, set(box.ids))
    for referral_id in box.ids:
        expected = expected_rows(box.document(referral_id))
        for table in CHILD_TABLES:
            assert stored[referral_id].get(table, []) == [normalise(r) for r in expected[table]]
    for table in CHILD_TABLES:
        unchanged_before = [r for r in children_before[table] if r["referral_id"] not in changed]
        unchanged_after = [r for r in rows_of(engine, table) if r["referral_id"] not in changed]
        assert unchanged_after == unchanged_before


def test_not_found_marks_deleted_and_a_later_200_clears_it(engine: Engine) -> None:
    box = Sandbox(count=10, seed=2)
    backfill(engine, box)
    gone = box.ids[:2]
    box.delete(gone)
    report = backfill(engine, box, ids=[*gone, *box.ids])
    assert report.counts.not_found == 2
    deleted = {r["id"] for r in rows_of(engine, "referrals") if r["deleted_at"] is not None}
    assert deleted == set(gone)
    assert count_rows(engine)["referrals"] == 10  # rows stay
    box.restore(gone)
    backfill(engine, box, ids=gone)
    assert all(r["deleted_at"] is None for r in rows_of(engine, "referrals"))


def test_invalid_json_fails_that_id_only(engine: Engine) -> None:
    box = Sandbox(count=30, seed=4)
    bad = box.ids[7]
    box.faults.invalid_json_ids = {bad}
    report = backfill(engine, box)
    assert (report.counts.failed, report.counts.created, report.exit_code) == (1, 29, 1)
    state = {r["referral_id"]: r for r in rows_of(engine, "sync_state")}
    assert state[bad]["consecutive_failures"] == 1
    assert "not valid JSON" in state[bad]["last_error"]
    assert state[bad]["next_attempt_at"] is not None
    assert {r["id"] for r in rows_of(engine, "referrals")} == set(box.ids) - {bad}


def test_runs_are_recorded(sqlite_engine: Engine) -> None:
    box = Sandbox(count=12, seed=6)
    backfill(sqlite_engine, box)
    box.change(ids=box.ids[:3])
    backfill(sqlite_engine, box)
    runs = rows_of(sqlite_engine, "sync_runs")
    assert [
        (r["trigger"], r["status"], r["ids_total"], r["created"], r["updated"], r["unchanged"])
        for r in runs
    ] == [
        ("backfill", "succeeded", 12, 12, 0, 0),
        ("backfill", "succeeded", 12, 0, 3, 9),
    ]
    assert all(r["finished_at"] >= r["started_at"] and r["requests"] == 12 for r in runs)
    assert rows_of(sqlite_engine, "sync_locks") == []  # the lock is released


def test_sandbox_data_and_unicode_round_trip(engine: Engine) -> None:
    """Emoji, CJK and Swedish letters survive every database."""
    box = Sandbox(count=5, seed=1)
    doc = box.document(box.ids[0])
    text = "Åsa Öberg 🚀 株式会社 ✓"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={**doc, "name": text, "eTag": '"u1"'})

    run_backfill(
        settings_for(engine),
        engine,
        [TrackedId(doc["id"], "file")],
        RunOptions(
            transport=httpx.MockTransport(handler), auth=BearerAuth(StaticTokenProvider("t"))
        ),
    )
    [row] = rows_of(engine, "referrals")
    assert row["name"] == text


def test_without_etags_the_content_hash_decides(engine: Engine) -> None:
    """An API that sends no eTag at all: unchanged content writes nothing, changed content does."""
    doc = {k: v for k, v in SEED.items() if k != "eTag"}
    current = {"doc": doc}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=current["doc"])

    def run() -> Any:
        return run_backfill(
            settings_for(engine),
            engine,
            [TrackedId(SEED["id"], "file")],
            RunOptions(
                transport=httpx.MockTransport(handler), auth=BearerAuth(StaticTokenProvider("t"))
            ),
        )

    assert run().counts.created == 1
    [state] = rows_of(engine, "sync_state")
    assert state["etag"] is None and len(state["content_hash"]) == 64
    assert run().counts.unchanged == 1
    assert len(rows_of(engine, "referral_history")) == 1
    current["doc"] = {**doc, "status": "Active", "substatus": "Accepted"}
    assert run().counts.updated == 1
    assert [r["status"] for r in rows_of(engine, "referral_history", order_by="id")] == [
        "New",
        "Active",
    ]


def test_a_value_the_database_refuses_fails_only_that_referral(engine: Engine) -> None:
    """PostgreSQL refuses NUL characters in text: that referral fails alone, its batch is kept."""
    box = Sandbox(count=20, seed=15)
    poisoned = box.ids[6]

    def handler(request: httpx.Request) -> httpx.Response:
        referral_id = request.url.path.rsplit("/", 1)[-1]
        doc = box.document(referral_id)
        if referral_id == poisoned:
            doc["name"] = "nul\u0000byte"
        return httpx.Response(200, json=doc)

    report = run_backfill(
        settings_for(engine),
        engine,
        [TrackedId(i, "file") for i in box.ids],
        RunOptions(
            transport=httpx.MockTransport(handler), auth=BearerAuth(StaticTokenProvider("t"))
        ),
    )
    stored = {r["id"] for r in rows_of(engine, "referrals")}
    if engine.dialect.name == "postgresql":
        assert (report.counts.failed, report.counts.created) == (1, 19)
        assert stored == set(box.ids) - {poisoned}
        [state] = [r for r in rows_of(engine, "sync_state") if r["referral_id"] == poisoned]
        assert state["last_error"].startswith("could not be stored:")
    else:
        assert (report.counts.failed, report.counts.created) == (0, 20)
        assert stored == set(box.ids)


def test_dry_run_fetches_and_reports_but_writes_nothing(sqlite_engine: Engine) -> None:
    box = Sandbox(count=15, seed=16)
    backfill(sqlite_engine, box, ids=box.ids[:5])
    before = count_rows(sqlite_engine)
    box.change(ids=box.ids[:2])
    report = backfill(sqlite_engine, box, dry_run=True)
    assert (report.counts.created, report.counts.updated, report.counts.unchanged) == (10, 2, 3)
    assert report.requests == 15
    assert count_rows(sqlite_engine) == before
