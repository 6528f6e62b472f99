"""Timelines from the documents' own timestamps, empty strings as NULL, and migration 0006.

The acceptance of the analyst issue, seen on SQLite, PostgreSQL and MariaDB: one backfill of
referrals that are already closed gives their whole timeline (the days come from the
documents, not from when the sync saw them); no typed column holds ''; the migration cleans
rows written before it and carries its own SQL.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from conftest import backfill
from oracle import expected_value
from sqlalchemy.engine import Engine

from etl import db
from etl.models import TABLES
from etl.sandbox import Sandbox
from etl.views import DIALECTS, VIEWS, VIEWS_0002

ROOT = Path(__file__).resolve().parents[1]
MIGRATION = ROOT / "etl" / "migrations" / "versions" / "0006_milestones_rates.py"
MICRO = Decimal("0.000001")


def _days(start: datetime, end: datetime) -> Decimal:
    delta = end - start
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    whole = abs(micros) // 86_400
    return Decimal(whole if micros >= 0 else -whole) * MICRO


def _time(document: dict[str, Any], field: str) -> datetime | None:
    value = expected_value("x_at", document.get(field))
    return value if isinstance(value, datetime) else None


def _number(value: Any) -> Any:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return Decimal(repr(value))
    return value


def _as_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def test_one_backfill_of_closed_referrals_gives_their_timeline_from_the_documents(
    engine: Engine,
) -> None:
    """Outcome, close month and days between created, accepted and closed come from the API."""
    box = Sandbox(count=400, seed=15)
    closed = {i: box.document(i) for i in box.ids if box.document(i)["status"] == "Closed"}
    backfill(engine, box, ids=list(closed))
    with engine.connect() as conn:
        result = conn.execute(sa.text("SELECT * FROM referral_milestones ORDER BY referral_id"))
        rows = [dict(r._mapping) for r in result]
        changes = conn.execute(sa.text("SELECT COUNT(*) FROM referral_status_changes")).scalar()
    assert changes == 0  # one version each: the sync saw no change, the documents tell the story
    assert [r["referral_id"] for r in rows] == sorted(closed)
    full = 0
    for row in rows:
        doc = closed[row["referral_id"]]
        created, accepted = _time(doc, "createdDateTime"), _time(doc, "acceptedDateTime")
        closed_at = _time(doc, "updatedDateTime")
        outcome = {"Won": "won", "Lost": "lost", "Declined": "declined", "Expired": "expired"}
        assert row["outcome"] == outcome[doc["substatus"]]
        assert _as_utc(row["closed_at"]) == closed_at
        assert row["closed_month"] == (closed_at.strftime("%Y-%m") if closed_at else None)
        spans = {
            "days_created_to_accepted": (created, accepted),
            "days_accepted_to_closed": (accepted, closed_at),
            "days_created_to_closed": (created, closed_at),
        }
        for column, (start, end) in spans.items():
            want = _days(start, end) if start and end else None
            assert want == _number(row[column]), (row["referral_id"], column)
        if created and accepted and closed_at and created < accepted < closed_at:
            full += 1
            assert row["days_created_to_accepted"] > 0
            assert row["days_accepted_to_closed"] > 0
    # Most won or lost referrals have every timestamp, and their days are far from zero.
    accepted_ones = sum(d["substatus"] in ("Won", "Lost") for d in closed.values())
    assert full >= accepted_ones // 2
    assert accepted_ones // 2 >= 10


def test_status_changes_are_timed_by_the_api_where_both_versions_have_its_timestamp(
    engine: Engine,
) -> None:
    """A status change is dated by the API's timestamp, not by when the sync saw it."""
    seen = datetime(2026, 5, 1, tzinfo=UTC)  # one backfill saw the first two versions at once
    created = datetime(2026, 1, 10, 9, 30, tzinfo=UTC)
    accepted = datetime(2026, 2, 1, 12, 0, 0, 250000, tzinfo=UTC)
    rows = [
        ("r-1", seen, "New", "Pending", created),
        ("r-1", seen + timedelta(microseconds=5), "Active", "Accepted", accepted),
        ("r-1", seen + timedelta(days=3), "Closed", "Won", None),  # no updatedDateTime
    ]
    with engine.begin() as conn:
        conn.execute(
            sa.insert(TABLES["referral_history"]),
            [
                {
                    "referral_id": r,
                    "etag": str(n),
                    "valid_from": v,
                    "status": s,
                    "substatus": u,
                    "updated_at": t,
                    "payload": {},
                }
                for n, (r, v, s, u, t) in enumerate(rows)
            ],
        )
    with engine.connect() as conn:
        result = conn.execute(
            sa.text(
                "SELECT to_status, previous_changed_at, changed_at, seconds_in_previous,"
                " days_in_previous, seen_at, time_source FROM referral_status_changes"
                " ORDER BY seen_at"
            )
        )
        found = [
            (s, _as_utc(a), _as_utc(b), _number(sec), _number(d), _as_utc(w), t)
            for s, a, b, sec, d, w, t in result
        ]
    assert found == [
        (
            "Active",
            created,
            accepted,
            Decimal("1909800.25"),
            Decimal("22.104169"),
            seen + timedelta(microseconds=5),
            "api",
        ),
        (
            "Closed",
            seen + timedelta(microseconds=5),
            seen + timedelta(days=3),
            Decimal("259199.999995"),
            Decimal("2.999999"),
            seen + timedelta(days=3),
            "sync",
        ),
    ]


def _text_columns() -> list[tuple[str, str]]:
    return [
        (table.name, column.name)
        for table in TABLES.values()
        for column in table.columns
        if isinstance(column.type, sa.String)
    ]


def test_no_typed_column_holds_an_empty_string_after_a_backfill(engine: Engine) -> None:
    """The API's "" is stored as NULL, so a pipeline by currency has one unknown row a status."""
    box = Sandbox(count=300, seed=4)
    documents = [box.document(i) for i in box.ids]
    blank_currency = [d for d in documents if (d.get("details") or {}).get("currency") == ""]
    assert blank_currency  # the sandbox does send "" (so the check below means something)
    backfill(engine, box)
    with engine.connect() as conn:
        blanks = {
            (t, c): conn.execute(
                sa.select(sa.func.count())
                .select_from(TABLES[t])
                .where(sa.func.length(TABLES[t].c[c]) == 0)
            ).scalar()
            for t, c in _text_columns()
        }
        rows = conn.execute(
            sa.text(
                "SELECT status, currency FROM referral_overview WHERE status IN ('New', 'Active')"
            )
        ).all()
        pipeline = conn.execute(
            sa.text(
                "SELECT status, currency FROM (SELECT status, currency, COUNT(*) AS n"
                " FROM referral_overview WHERE status IN ('New', 'Active')"
                " GROUP BY status, currency) g"
            )
        ).all()
    assert {k: v for k, v in blanks.items() if v} == {}
    # pipeline by currency: one unknown-currency row per status, not a NULL one and a '' one
    assert any(c is None for _, c in rows)
    unknown = Counter(s for s, c in pipeline if c is None or c == "")
    assert unknown
    assert max(unknown.values()) == 1


def test_migration_0006_turns_existing_empty_strings_into_null(engine: Engine) -> None:
    """Rows stored before 0006 with "" in typed columns read NULL after it; payloads are kept."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    db.downgrade(engine, "0002")
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(TABLES["referrals"]),
                [
                    {
                        "id": "old",
                        "name": "",
                        "currency": "",
                        "notes": "  ",  # blanks are text, not empty: kept
                        "status": "New",
                        "payload": {"details": {"currency": ""}},
                        "first_seen_at": now,
                        "last_changed_at": now,
                        "last_checked_at": now,
                    }
                ],
            )
            conn.execute(
                sa.insert(TABLES["referral_customers"]),
                [{"referral_id": "old", "name": "", "country": "SE"}],
            )
            conn.execute(
                sa.insert(TABLES["referral_history"]),
                [{"referral_id": "old", "valid_from": now, "currency": "", "payload": {}}],
            )
    finally:
        db.upgrade(engine)
    with engine.connect() as conn:
        referral = conn.execute(
            sa.text("SELECT name, currency, notes, status, payload FROM referrals")
        ).one()
        customer = conn.execute(sa.text("SELECT name, country FROM referral_customers")).one()
        history = conn.execute(sa.text("SELECT currency FROM referral_history")).scalar()
    assert tuple(referral[:4]) == (None, None, "  ", "New")
    assert (
        '"currency": ""' in str(referral[4])
        or '"currency":""' in str(referral[4])
        or (isinstance(referral[4], dict) and referral[4]["details"]["currency"] == "")
    )
    assert tuple(customer) == (None, "SE")
    assert history is None


def _migration() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migration_0006", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_0006_imports_nothing_of_etl() -> None:
    """The revision is frozen text: it neither imports from nor imports ``etl``."""
    source = MIGRATION.read_text("utf-8")
    assert "from etl" not in source
    assert "import etl" not in source


def test_migration_0006_carries_the_sql_etl_views_describes() -> None:
    """The views, names and text columns the dictionary and dbt use match the frozen revision."""
    migration = _migration()
    for dialect in DIALECTS:
        current = tuple(s for v in VIEWS for s in v.create_statements(dialect))
        assert migration.VIEWS_SQL[dialect] == current, dialect
        older = tuple(s for v in VIEWS_0002 for s in v.create_statements(dialect))
        assert migration.VIEWS_0002_SQL[dialect] == older, dialect
    assert tuple(v.name for v in VIEWS) == migration.VIEW_NAMES
    text_columns = {(t, c) for t, cols in migration.TEXT_COLUMNS.items() for c in cols}
    api_text = {
        (t, c)
        for t, c in _text_columns()
        if t.startswith("referral") and not TABLES[t].c[c].primary_key and c != "referral_id"
    }
    # Written by the job itself ('list' or 'get', migration 0004), never an API string.
    api_text -= {("referral_history", "origin")}
    assert text_columns == api_text
