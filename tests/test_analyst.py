"""The analyst layer: views, docs/queries.sql, comments in the catalog and the data dictionary.

Every query in docs/queries.sql and both views run on SQLite, PostgreSQL and MariaDB against a
known load (sandbox referrals, changed in three later passes, two deleted), and their answers are
checked against values computed here in Python from the sandbox documents (through the
independent oracle) and from the pass at which each version was seen, and against each other
across the three databases.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import backfill, make_engine, rows_of
from oracle import dig, expected_rows, expected_value
from sqlalchemy.engine import Connection, Engine

from etl import db
from etl.dictionary import render_data_dictionary
from etl.models import TABLES, metadata
from etl.sandbox import Sandbox
from etl.views import (
    LIST_KINDS,
    REFERRAL_MILESTONES,
    REFERRAL_OVERVIEW,
    REFERRAL_OVERVIEW_V2,
    REFERRAL_PIPELINE,
    REFERRAL_STATUS_CHANGES_V2,
    SEPARATOR,
    VIEWS,
    VIEWS_0002,
    View,
)

ROOT = Path(__file__).resolve().parents[1]
QUERIES_SQL = ROOT / "docs" / "queries.sql"
DICTIONARY_MD = ROOT / "docs" / "data-dictionary.md"

Row = tuple[Any, ...]
MICRO = Decimal("0.000001")
ANCHOR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
# When the sync saw each pass (valid_from, before a per-referral jitter under an hour), and when
# the sandbox made the changes of passes 1..3 (their updatedDateTime, acceptedDateTime, ...).
SEEN = (ANCHOR - timedelta(days=100), *(ANCHOR - timedelta(days=d, hours=-1) for d in (45, 12, 3)))
CHANGED = tuple(ANCHOR - timedelta(days=d) for d in (45, 12, 3))
# Rates to the reporting currency: EUR changes between the passes (so won deals closed 45 and
# 12 days ago convert differently), USD has a rate that is not valid yet, SEK one from the
# start; the other currencies have none. Many digits, so no amount rounds on a tie.
RATES = (
    ("EUR", Decimal("1.0873129871"), datetime(2000, 1, 1, tzinfo=UTC)),
    ("EUR", Decimal("1.1012345677"), ANCHOR - timedelta(days=20)),
    ("USD", Decimal("0.9176543211"), datetime(2000, 1, 1, tzinfo=UTC)),
    ("USD", Decimal("0.5"), ANCHOR + timedelta(days=30)),
    ("SEK", Decimal("0.0912345679"), datetime(2000, 1, 1, tzinfo=UTC)),
)


# docs/queries.sql ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    name: str
    comment: str
    sql: str


def load_queries(path: Path = QUERIES_SQL) -> dict[str, Query]:
    """The statements of queries.sql: each after `-- name: slug` and a one-line `-- ` comment."""
    queries: dict[str, Query] = {}
    blocks = re.split(r"^-- name: *(.*)$", path.read_text("utf-8"), flags=re.MULTILINE)
    for name, body in zip(blocks[1::2], blocks[2::2], strict=True):
        first, _, rest = body.strip("\n").partition("\n")
        assert first.startswith("-- "), f"{name}: no one-line comment"
        assert len(first) > 3, f"{name}: no one-line comment"
        sql = rest.strip()
        assert name.strip() not in queries, f"duplicate query name {name}"
        assert sql.endswith(";"), f"{name}: not exactly one statement"
        assert sql.count(";") == 1, f"{name}: not exactly one statement"
        queries[name.strip()] = Query(name.strip(), first[3:], sql[:-1])
    return queries


def test_queries_file_holds_at_least_ten_named_statements() -> None:
    """docs/queries.sql holds ten or more named, portable statements, one comment line each."""
    queries = load_queries()
    assert len(queries) >= 10
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) for name in queries)
    dialect_only = re.compile(
        r"\b(string_agg|group_concat|julianday|strftime|date_trunc|extract|timestampdiff|"
        r"datediff|date_format|to_char|now|interval|ilike|limit|percentile_cont|median)\b|::",
        re.IGNORECASE,
    )
    for query in queries.values():
        assert not dialect_only.search(query.sql), f"{query.name} uses {dialect_only.pattern}"


# The known load --------------------------------------------------------------------------------


class Clock:
    """The sandbox's clock (100 ns ticks), set by the test before each change."""

    def __init__(self) -> None:
        self.at = SEEN[0]

    def __call__(self) -> int:
        return int(self.at.timestamp()) * 10_000_000


@dataclass
class Version:
    referral_id: str
    seen: datetime
    document: dict[str, Any]
    valid_to: datetime | None = None


@dataclass
class Known:
    """What the database must say, worked out from the sandbox and the passes."""

    live: list[str]
    deleted: list[str]
    documents: dict[str, dict[str, Any]]  # current document of each live referral
    versions: dict[str, list[Version]]  # every referral's versions, oldest first
    history_ids: dict[tuple[str, datetime], int] = field(default_factory=dict)


def _jitter(referral_id: str, number: int) -> timedelta:
    digest = hashlib.sha256(f"{referral_id}:{number}".encode()).digest()
    return timedelta(microseconds=int.from_bytes(digest[:8], "big") % 3_600_000_000)


def load_known(engine: Engine) -> Known:
    """Sandbox(60, seed 21): backfill, then three passes of changes (two ids deleted in pass 1).

    Afterwards each history version's valid_from is set to when its pass was "seen" (days
    apart, plus a per-referral jitter with microseconds), so durations are large and exact.
    """
    clock = Clock()
    box = Sandbox(count=60, seed=21, clock=clock)
    all_ids = list(box.ids)
    versions = {i: [Version(i, SEEN[0], box.document(i))] for i in all_ids}
    backfill(engine, box)
    deleted: list[str] = []
    for number in (1, 2, 3):
        clock.at = CHANGED[number - 1]
        changed = box.change(fraction=0.5, seed=number)
        if number == 1:
            deleted = [i for i in all_ids if i not in changed][:2]
            box.delete(deleted)
        seen = SEEN[number]
        for referral_id in changed:
            if referral_id not in deleted:
                doc = box.document(referral_id)
                versions[referral_id].append(Version(referral_id, seen, doc))
        report = backfill(engine, box, ids=all_ids)
        assert report.counts.failed == 0
    for referral_id, chain in versions.items():
        for number, version in enumerate(chain):
            version.seen = version.seen + _jitter(referral_id, number)
        for older, newer in pairwise(chain):
            older.valid_to = newer.seen
    with engine.begin() as conn:
        conn.execute(
            sa.insert(TABLES["currency_rates"]),
            [{"currency": c, "rate": r, "valid_from": f} for c, r, f in RATES],
        )
    known = Known(
        live=[i for i in all_ids if i not in deleted],
        deleted=deleted,
        documents={i: box.document(i) for i in all_ids if i not in deleted},
        versions=versions,
    )
    _set_history_times(engine, known)
    return known


def _set_history_times(engine: Engine, known: Known) -> None:
    history = TABLES["referral_history"]
    stored: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows_of(engine, "referral_history"):
        stored[row["referral_id"]].append(row)
    assert set(stored) == set(known.versions)
    with engine.begin() as conn:
        for referral_id, chain in known.versions.items():
            rows = sorted(stored[referral_id], key=lambda r: (r["valid_from"], r["id"]))
            assert [r["etag"] for r in rows] == [v.document["eTag"] for v in chain], referral_id
            for row, version in zip(rows, chain, strict=True):
                conn.execute(
                    sa.update(history)
                    .where(history.c.id == row["id"])
                    .values(valid_from=version.seen, valid_to=version.valid_to)
                )
                known.history_ids[(referral_id, version.seen)] = row["id"]


# Python's answers ------------------------------------------------------------------------------


def _micros(start: datetime, end: datetime) -> int:
    delta = end - start
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _days(micros: int) -> Decimal:
    """Days truncated toward zero to 6 decimals, as the views compute them."""
    whole = abs(micros) // 86_400
    return Decimal(whole if micros >= 0 else -whole) * MICRO


def _seconds(micros: int) -> Decimal:
    return Decimal(micros) * MICRO


def _label(kind: str, item: dict[str, Any]) -> str | None:
    first, second = (item["name"], item["item_id"])[:: 1 if kind == "solutions" else -1]
    return first or second or None


def _overview_row(known: Known, referral_id: str, now: datetime) -> dict[str, Any]:
    rows = expected_rows(known.documents[referral_id])
    ref, customer = rows["referrals"][0], rows["referral_customers"][0]
    lists: dict[str, list[str]] = {k: [] for k in LIST_KINDS}
    for item in rows["referral_requirements"]:  # sorted by (kind, position)
        label = _label(item["kind"], item)
        if item["kind"] in lists and label is not None:
            lists[item["kind"]].append(label)
    created, accepted, updated = ref["created_at"], ref["accepted_at"], ref["updated_at"]
    row: dict[str, Any] = {"referral_id": referral_id}
    for column in REFERRAL_OVERVIEW.columns[1:21]:  # the columns straight from referrals
        row[column.name] = ref[column.name]
    row["customer_name"], row["customer_size"] = customer["name"], customer["size"]
    for name in ("address_line1", "address_line2", "city", "state", "region", "postal_code"):
        row[name] = customer[name]
    row["country"] = customer["country"]
    row.update({k: SEPARATOR.join(v) if v else None for k, v in lists.items()})
    row["created_month"] = created.strftime("%Y-%m") if created else None
    both = created is not None and accepted is not None
    row["days_to_accept"] = _days(_micros(created, accepted)) if both else None
    row["days_since_update"] = _days(_micros(updated, now)) if updated else None
    contacts = rows["referral_contacts"]
    first = {
        side: next((c for c in contacts if c["side"] == side and c["position"] == 0), {})
        for side in ("customer", "team")
    }
    row["customer_contact_name"] = _full_name(first["customer"])
    row["customer_contact_email"] = first["customer"].get("email")
    row["customer_contact_phone"] = first["customer"].get("phone_number")
    row["owner_name"] = _full_name(first["team"])
    row["owner_email"] = first["team"].get("email")
    row["deal_value_reporting"] = _reporting(ref["deal_value"], _rate(ref["currency"], now))
    return row


def _full_name(contact: dict[str, Any]) -> str | None:
    joined = f"{contact.get('first_name') or ''} {contact.get('last_name') or ''}".strip(" ")
    return joined or None


def _rate(currency: str | None, at: datetime) -> Decimal | None:
    """The rate of RATES valid at ``at``: the latest valid_from not after it."""
    valid = [(f, r) for c, r, f in RATES if c == currency and f <= at]
    return max(valid)[1] if valid else None


def _reporting(amount: Decimal | None, rate: Decimal | None) -> Decimal | None:
    if amount is None or rate is None:
        return None
    return (amount * rate).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def _updated(document: dict[str, Any]) -> datetime | None:
    value = expected_value("updated_at", document.get("updatedDateTime"))
    return value if isinstance(value, datetime) else None


OUTCOME_OF = {"Won": "won", "Lost": "lost", "Declined": "declined", "Expired": "expired"}


def expected_milestones(known: Known, now: datetime) -> list[dict[str, Any]]:
    out = []
    for referral_id in sorted(known.live):
        ref = expected_rows(known.documents[referral_id])["referrals"][0]
        closed = ref["status"] == "Closed"
        closed_at = None
        if closed:
            first = next(
                v for v in known.versions[referral_id] if v.document.get("status") == "Closed"
            )
            closed_at = _updated(first.document)
        created, accepted = ref["created_at"], ref["accepted_at"]

        def days(start: datetime | None, end: datetime | None) -> Decimal | None:
            return None if start is None or end is None else _days(_micros(start, end))

        out.append(
            {
                "referral_id": referral_id,
                "status": ref["status"],
                "substatus": ref["substatus"],
                "outcome": OUTCOME_OF.get(ref["substatus"]) if closed else "open",
                "created_at": created,
                "accepted_at": accepted,
                "closed_at": closed_at,
                "expires_at": ref["expires_at"],
                "closed_month": closed_at.strftime("%Y-%m") if closed_at else None,
                "days_created_to_accepted": days(created, accepted),
                "days_accepted_to_closed": days(accepted, closed_at),
                "days_created_to_closed": days(created, closed_at),
                "currency": ref["currency"],
                "deal_value": ref["deal_value"],
                "deal_value_reporting": _reporting(
                    ref["deal_value"], _rate(ref["currency"], closed_at or now)
                ),
            }
        )
    return out


def expected_pipeline(overview: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    out = []
    for row in overview:
        if row["status"] in ("New", "Active"):
            rate = _rate(row["currency"], now)
            names = [c.name for c in REFERRAL_PIPELINE.columns[:8]]
            out.append(
                {n: row[n] for n in names}
                | {
                    "reporting_rate": rate,
                    "deal_value_reporting": _reporting(row["deal_value"], rate),
                }
            )
    return out


def expected_overview(known: Known, now: datetime) -> list[dict[str, Any]]:
    return [_overview_row(known, i, now) for i in sorted(known.live)]


def expected_changes(known: Known) -> list[dict[str, Any]]:
    """Status changes from the versions: consecutive versions with the same status are one spell.

    Each change is timed by the updatedDateTime of the two versions that began the statuses
    when both have one (time_source api), else by when the sync saw them (sync)."""
    out = []
    for referral_id in sorted(known.versions):
        spell: tuple[Any, Any, datetime, datetime | None] | None = None
        for version in known.versions[referral_id]:
            status = (version.document.get("status"), version.document.get("substatus"))
            if spell is not None and status == spell[:2]:
                continue
            updated = _updated(version.document)
            if spell is not None:
                api = spell[3] is not None and updated is not None
                start = spell[3] if api else spell[2]
                end = updated if api else version.seen
                assert start is not None
                assert end is not None
                micros = _micros(start, end)
                out.append(
                    {
                        "referral_id": referral_id,
                        "history_id": known.history_ids[(referral_id, version.seen)],
                        "from_status": spell[0],
                        "from_substatus": spell[1],
                        "to_status": status[0],
                        "to_substatus": status[1],
                        "previous_changed_at": start,
                        "changed_at": end,
                        "seconds_in_previous": _seconds(micros),
                        "days_in_previous": _days(micros),
                        "seen_at": version.seen,
                        "time_source": "api" if api else "sync",
                    }
                )
            spell = (*status, version.seen, updated)
    return out


def _median(values: list[Decimal]) -> Decimal | None:
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _sum(values: list[Decimal | None]) -> Decimal:
    return sum((v for v in values if v is not None), Decimal(0))


def _none_last(value: Any) -> tuple[bool, Any]:
    return (value is None, value if value is not None else "")


def _won(row: dict[str, Any]) -> bool:
    return bool(row["status"] == "Closed" and row["substatus"] == "Won")


@dataclass
class Answer:
    """What one query must return: its columns and its rows, in order."""

    columns: list[str]
    rows: list[Row]


class Expectations:
    """Python's answer to every query of docs/queries.sql, from the known load."""

    def __init__(self, known: Known, now: datetime) -> None:
        self.known = known
        self.overview = expected_overview(known, now)
        self.changes = expected_changes(known)
        self.milestones = expected_milestones(known, now)
        self.pipeline = expected_pipeline(self.overview, now)
        self.requirements = [
            r
            for i in known.live
            for r in expected_rows(known.documents[i])["referral_requirements"]
        ]
        self.contacts = [
            r for i in known.live for r in expected_rows(known.documents[i])["referral_contacts"]
        ]
        self.history_of = max(known.live, key=lambda i: (len(known.versions[i]), i))

    def answers(self) -> dict[str, Callable[[], Answer]]:
        return {
            "open-pipeline-by-status-and-currency": self.open_pipeline,
            "win-rate-by-product": lambda: self.win_rate("products", "product"),
            "win-rate-by-industry": lambda: self.win_rate("industries", "industry"),
            "median-days-created-to-accepted": self.median_to_accept,
            "median-days-accepted-to-closed": self.median_to_close,
            "referrals-by-country-and-size": self.by_country_and_size,
            "stale-open-referrals": self.stale,
            "status-funnel": self.funnel,
            "deals-by-solution": self.deals_by_solution,
            "referrals-per-engagement": self.per_engagement,
            "contacts-per-referral": self.contacts_per_referral,
            "referral-history": self.history,
            "time-in-status": self.time_in_status,
            "referrals-per-month": self.per_month,
            "open-pipeline-in-reporting-currency": self.pipeline_reporting,
            "won-deals-by-closing-month": self.won_by_month,
            "median-days-created-to-accepted-by-solution": lambda: self.median_by_solution(
                "days_created_to_accepted"
            ),
            "median-days-accepted-to-closed-by-solution": lambda: self.median_by_solution(
                "days_accepted_to_closed"
            ),
        }

    def params(self, name: str) -> dict[str, Any]:
        return {"referral_id": self.history_of} if name == "referral-history" else {}

    def open_pipeline(self) -> Answer:
        groups: dict[tuple[Any, Any], list[Decimal | None]] = defaultdict(list)
        for row in self.overview:
            if row["status"] in ("New", "Active"):
                groups[(row["status"], row["currency"])].append(row["deal_value"])
        rows = [
            (s, c, len(v), sum(x is not None for x in v), _sum(v)) for (s, c), v in groups.items()
        ]
        rows.sort(key=lambda r: (r[0], -r[4], _none_last(r[1])))
        columns = ["status", "currency", "referrals", "with_deal_value", "pipeline_value"]
        return Answer(columns, rows)

    def win_rate(self, kind: str, label: str) -> Answer:
        by_id = {r["referral_id"]: r for r in self.overview}
        closed: dict[str, set[str]] = defaultdict(set)
        for item in self.requirements:
            ref = by_id[item["referral_id"]]
            if item["kind"] == kind and item["item_id"] is not None and ref["status"] == "Closed":
                closed[item["item_id"]].add(ref["referral_id"])
        rows = []
        for item_id, ids in closed.items():
            won = sum(by_id[i]["substatus"] == "Won" for i in ids)
            rows.append((item_id, len(ids), won, Fraction(won, len(ids))))
        rows.sort(key=lambda r: (-r[3], -r[1], r[0]))
        as_decimal = [(*r[:3], Decimal(r[3].numerator) / r[3].denominator) for r in rows]
        return Answer([label, "closed_referrals", "won", "win_rate"], as_decimal)

    def _median_answer(self, values: list[Decimal]) -> Answer:
        count = len(values) if values else None
        return Answer(["referrals", "median_days"], [(count, _median(values))])

    def median_to_accept(self) -> Answer:
        values = [r["days_to_accept"] for r in self.overview if r["days_to_accept"] is not None]
        assert len(values) >= 10  # the load has enough accepted referrals to mean something
        return self._median_answer(values)

    def median_to_close(self) -> Answer:
        values = [
            m["days_accepted_to_closed"]
            for m in self.milestones
            if m["days_accepted_to_closed"] is not None
        ]
        assert len(values) >= 3
        return self._median_answer(values)

    def _solutions(self) -> dict[str, set[str]]:
        members: dict[str, set[str]] = defaultdict(set)
        for item in self.requirements:
            if item["kind"] == "solutions":
                label = item["name"] or item["item_id"] or None
                if label is not None:
                    members[label].add(item["referral_id"])
        return members

    def median_by_solution(self, column: str) -> Answer:
        by_id = {m["referral_id"]: m for m in self.milestones}
        rows = []
        for label, ids in self._solutions().items():
            values = [by_id[i][column] for i in ids if by_id[i][column] is not None]
            if values:
                rows.append((label, len(values), _median(values)))
        assert rows
        rows.sort(key=lambda r: (-r[1], r[2], r[0]))
        return Answer(["solution", "referrals", "median_days"], rows)

    def pipeline_reporting(self) -> Answer:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in self.pipeline:
            groups[row["status"]].append(row)
        rows = []
        for status, refs in sorted(groups.items()):
            converted = [r["deal_value_reporting"] for r in refs]
            rows.append(
                (
                    status,
                    len(refs),
                    sum(v is not None for v in converted),
                    sum(
                        r["deal_value"] is not None and r["deal_value_reporting"] is None
                        for r in refs
                    ),
                    _sum(converted),
                )
            )
        assert all(r[2] > 0 for r in rows)  # some rates apply: the sums are not all zero
        columns = ["status", "referrals", "with_rate", "without_rate", "pipeline_value_reporting"]
        return Answer(columns, rows)

    def won_by_month(self) -> Answer:
        groups: dict[str, list[Decimal | None]] = defaultdict(list)
        for m in self.milestones:
            if m["outcome"] == "won" and m["closed_month"] is not None:
                groups[m["closed_month"]].append(m["deal_value_reporting"])
        rows = [
            (k, len(v), sum(x is not None for x in v), _sum(v)) for k, v in sorted(groups.items())
        ]
        assert sum(r[2] for r in rows) >= 2
        return Answer(["closed_month", "won", "with_rate", "won_value_reporting"], rows)

    def by_country_and_size(self) -> Answer:
        groups: dict[tuple[Any, Any], list[Decimal | None]] = defaultdict(list)
        for row in self.overview:
            groups[(row["country"], row["customer_size"])].append(row["deal_value"])
        rows = [(c, s, len(v), _sum(v)) for (c, s), v in groups.items()]
        rows.sort(key=lambda r: (-r[2], _none_last(r[0]), _none_last(r[1])))
        return Answer(["country", "customer_size", "referrals", "deal_value"], rows)

    def stale(self) -> Answer:
        rows = [
            (
                r["referral_id"],
                r["name"],
                r["status"],
                r["substatus"],
                r["updated_at"],
                r["days_since_update"],
            )
            for r in self.overview
            if r["status"] in ("New", "Active")
            and r["days_since_update"] is not None
            and r["days_since_update"] > 30
        ]
        rows.sort(key=lambda r: (-r[5], r[0]))
        assert 0 < len(rows) < sum(r["status"] in ("New", "Active") for r in self.overview)
        columns = ["referral_id", "name", "status", "substatus", "updated_at", "days_since_update"]
        return Answer(columns, rows)

    def funnel(self) -> Answer:
        rows = self.milestones
        outcomes = Counter(r["outcome"] for r in rows)
        accepted = [r for r in rows if r["status"] == "Active" or r["outcome"] in ("won", "lost")]
        counts = [len(rows), len(accepted), *(outcomes[o] for o in OUTCOME_OF.values())]
        assert outcomes["won"] + outcomes["lost"] <= len(accepted)
        assert outcomes["declined"]
        stages = ["received", "accepted", *OUTCOME_OF.values()]
        return Answer(
            ["step", "stage", "referrals"],
            [(n + 1, s, c) for n, (s, c) in enumerate(zip(stages, counts, strict=True))],
        )

    def deals_by_solution(self) -> Answer:
        by_id = {r["referral_id"]: r for r in self.overview}
        rows = []
        for label, ids in self._solutions().items():
            refs = [by_id[i] for i in ids]
            won = [r for r in refs if _won(r)]
            deal = _sum([r["deal_value"] for r in refs])
            rows.append((label, len(refs), len(won), deal, _sum([r["deal_value"] for r in won])))
        rows.sort(key=lambda r: (-r[3], -r[1], r[0]))
        return Answer(["solution", "referrals", "won", "deal_value", "won_value"], rows)

    def per_engagement(self) -> Answer:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in self.overview:
            if row["engagement_id"] is not None:
                groups[row["engagement_id"]].append(row)
        rows = [
            (
                e,
                len(refs),
                sum(r["status"] in ("New", "Active") for r in refs),
                sum(map(_won, refs)),
                _sum([r["deal_value"] for r in refs]),
            )
            for e, refs in groups.items()
            if len(refs) > 1
        ]
        assert rows  # the sandbox makes co-sell pairs; the load must have some
        rows.sort(key=lambda r: (-r[1], r[0]))
        columns = ["engagement_id", "referrals", "open_referrals", "won", "deal_value"]
        return Answer(columns, rows)

    def contacts_per_referral(self) -> Answer:
        counts: dict[str, Counter[str]] = {i: Counter() for i in self.known.live}
        for contact in self.contacts:
            counter = counts[contact["referral_id"]]
            counter[contact["side"]] += 1
            if contact["side"] == "customer" and contact["email"]:
                counter["email"] += 1
        rows = [(i, c["customer"], c["team"], c["email"]) for i, c in counts.items()]
        rows.sort(key=lambda r: (-(r[1] + r[2]), r[0]))
        columns = ["referral_id", "customer_contacts", "team_members", "customer_emails"]
        return Answer(columns, rows)

    def history(self) -> Answer:
        chain = self.known.versions[self.history_of]
        assert len(chain) >= 3
        rows = [
            (
                v.seen,
                v.valid_to,
                v.document.get("status"),
                v.document.get("substatus"),
                expected_value("deal_value", dig(v.document, "details.dealValue")),
                expected_value("currency", dig(v.document, "details.currency")),
            )
            for v in chain
        ]
        columns = ["valid_from", "valid_to", "status", "substatus", "deal_value", "currency"]
        return Answer(columns, rows)

    def time_in_status(self) -> Answer:
        groups: dict[tuple[Any, Any], list[Decimal]] = defaultdict(list)
        for change in self.changes:
            key = (change["from_status"], change["from_substatus"])
            groups[key].append(change["days_in_previous"])
        rows = [(s, u, len(v), sum(v) / len(v), max(v)) for (s, u), v in groups.items()]
        rows.sort(key=lambda r: (-r[2], _none_last(r[0]), _none_last(r[1])))
        columns = ["from_status", "from_substatus", "changes", "average_days", "longest_days"]
        return Answer(columns, rows)

    def per_month(self) -> Answer:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in self.overview:
            if row["created_month"] is not None:
                groups[row["created_month"]].append(row)
        rows = sorted((m, len(refs), sum(map(_won, refs))) for m, refs in groups.items())
        return Answer(["created_month", "referrals", "won"], rows)


# Running and comparing -------------------------------------------------------------------------


def _normal(column: str, value: Any) -> Any:
    """A database value in comparable form: UTC datetimes, Decimal numbers."""
    if isinstance(value, str) and (column.endswith("_at") or column in ("valid_from", "valid_to")):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return value


# Columns that are not exact on every database: ratios and averages (SQLite divides in floating
# point, MariaDB to a fixed scale), to a relative 1e-9; and days since an update, which moves with
# "now" while the test runs, to 0.01 day. Every other value must be equal, numbers included
# (durations are exact to the microsecond everywhere).
RELATIVE = {"win_rate", "median_days", "average_days"}
ABSOLUTE = {"days_since_update": Decimal("0.01")}
# Amounts in the reporting currency: SQLite multiplies (and adds) in floating point.
ABSOLUTE |= {
    name: Decimal("0.0002")
    for name in ("deal_value_reporting", "pipeline_value_reporting", "won_value_reporting")
}


def _same(column: str, got: Any, want: Any) -> bool:
    if isinstance(got, Decimal) and isinstance(want, Decimal):
        if column in RELATIVE:
            return abs(got - want) <= Decimal("1e-9") * max(abs(got), abs(want), Decimal(1))
        if column in ABSOLUTE:
            return abs(got - want) <= ABSOLUTE[column]
    return bool(got == want)


def assert_rows(actual: tuple[list[str], list[Row]], expected: Answer, where: str) -> None:
    """Same columns, same number of rows, and row by row (in order) the same values."""
    columns, rows = actual
    assert columns == expected.columns, where
    want = [tuple(_normal(c, v) for c, v in zip(columns, r, strict=True)) for r in expected.rows]
    assert len(rows) == len(want), f"{where}: {len(rows)} rows, expected {len(want)}"
    for n, (got_row, want_row) in enumerate(zip(rows, want, strict=True)):
        differ = [
            c for c, g, w in zip(columns, got_row, want_row, strict=True) if not _same(c, g, w)
        ]
        assert not differ, f"{where}: row {n} differs in {differ}:\n got {got_row}\nwant {want_row}"


@contextmanager
def session(engine: Engine) -> Iterator[Connection]:
    """A connection whose session time zone is not UTC: the answers must not depend on it."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SET TIME ZONE 'America/New_York'"))
        elif engine.dialect.name in ("mysql", "mariadb"):
            conn.execute(sa.text("SET time_zone = '+05:00'"))
        yield conn


def run(
    conn: Connection, sql: str, params: dict[str, Any] | None = None
) -> tuple[list[str], list[Row]]:
    result = conn.execute(sa.text(sql), params or {})
    columns = list(result.keys())
    return columns, [tuple(_normal(c, v) for c, v in zip(columns, r, strict=True)) for r in result]


VIEW_SQL = {
    REFERRAL_OVERVIEW_V2.name: "SELECT * FROM referral_overview ORDER BY referral_id",
    REFERRAL_STATUS_CHANGES_V2.name: (
        "SELECT * FROM referral_status_changes ORDER BY referral_id, seen_at"
    ),
    REFERRAL_MILESTONES.name: "SELECT * FROM referral_milestones ORDER BY referral_id",
    REFERRAL_PIPELINE.name: "SELECT * FROM referral_pipeline ORDER BY referral_id",
}


def run_all(engine: Engine, expectations: Expectations) -> dict[str, tuple[list[str], list[Row]]]:
    """Every query of docs/queries.sql and both views, by name."""
    results = {}
    with session(engine) as conn:
        for query in load_queries().values():
            results[query.name] = run(conn, query.sql, expectations.params(query.name))
        for name, sql in VIEW_SQL.items():
            results[name] = run(conn, sql)
    return results


def _view_answer(view: View, rows: list[dict[str, Any]]) -> Answer:
    columns = [c.name for c in view.columns]
    return Answer(columns, [tuple(r[c] for c in columns) for r in rows])


# The views and queries on each database --------------------------------------------------------


def test_every_query_answers_what_the_documents_say(
    engine: Engine,
) -> None:
    """Each query and view gives the rows worked out independently from the sandbox documents."""
    known = load_known(engine)
    expectations = Expectations(known, datetime.now(UTC))
    results = run_all(engine, expectations)
    answers = expectations.answers()
    assert set(answers) == set(load_queries())  # every query has an answer worked out here
    where = engine.dialect.name
    for name, answer in answers.items():
        assert_rows(results[name], answer(), f"{where}: {name}")
    overview = _view_answer(REFERRAL_OVERVIEW_V2, expectations.overview)
    assert_rows(results[REFERRAL_OVERVIEW_V2.name], overview, f"{where}: referral_overview")
    assert len(overview.rows) == 58
    assert not set(known.deleted) & {r[0] for r in overview.rows}
    changes = _view_answer(REFERRAL_STATUS_CHANGES_V2, expectations.changes)
    assert_rows(results[REFERRAL_STATUS_CHANGES_V2.name], changes, f"{where}: status changes")
    assert {c["time_source"] for c in expectations.changes} == {"api"}  # the sandbox sends them
    milestones = _view_answer(REFERRAL_MILESTONES, expectations.milestones)
    assert_rows(results[REFERRAL_MILESTONES.name], milestones, f"{where}: milestones")
    pipeline = _view_answer(REFERRAL_PIPELINE, expectations.pipeline)
    assert_rows(results[REFERRAL_PIPELINE.name], pipeline, f"{where}: pipeline")
    paths = Counter(len(c) for c in _status_paths(expectations.changes).values())
    assert paths[2] >= 1  # some referral went through two changes (e.g. New -> Active -> Closed)


def _status_paths(changes: list[dict[str, Any]]) -> dict[str, list[tuple[Any, Any]]]:
    paths: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
    for change in changes:
        paths[change["referral_id"]].append((change["from_status"], change["to_status"]))
    return paths


@pytest.mark.postgres
@pytest.mark.mariadb
def test_every_query_gives_the_same_answer_on_all_three_databases(
    database_urls: dict[str, str | Exception], tmp_path: Path
) -> None:
    """PostgreSQL and MariaDB return the same columns and rows as SQLite for each query."""
    results = {}
    for dialect in ("sqlite", "postgres", "mariadb"):
        engine = make_engine(dialect, database_urls, tmp_path)
        try:
            known = load_known(engine)
            results[dialect] = run_all(engine, Expectations(known, datetime.now(UTC)))
        finally:
            engine.dispose()
    for name, (columns, rows) in results["sqlite"].items():
        keep = [n for n, c in enumerate(columns) if c != "history_id"]  # a surrogate key
        kept = [columns[n] for n in keep]
        expected = Answer(kept, [tuple(r[n] for n in keep) for r in rows])
        assert rows, f"{name} gives no rows: nothing to compare"
        for dialect in ("postgres", "mariadb"):
            other_columns, other_rows = results[dialect][name]
            assert other_columns == columns, f"{dialect}: {name}"
            other = [tuple(r[n] for n in keep) for r in other_rows]
            assert_rows((kept, other), expected, f"{dialect} vs sqlite: {name}")


def _insert_history(
    conn: Connection, rows: list[tuple[str, datetime, str | None, str | None]]
) -> None:
    conn.execute(
        sa.insert(TABLES["referral_history"]),
        [
            {
                "referral_id": referral_id,
                "etag": f'"{n}"',
                "valid_from": at,
                "status": status,
                "substatus": substatus,
                "deal_value": Decimal(100 * n),
                "payload": {"id": referral_id},
            }
            for n, (referral_id, at, status, substatus) in enumerate(rows)
        ],
    )


_T0 = datetime(2026, 1, 5, 8, 0, 0, 123456, tzinfo=UTC)
_ACTIVE_AT = _T0 + timedelta(days=5, microseconds=1)
_CLOSED_AT = _T0 + timedelta(days=40, seconds=0.5)
_NO_API_TIMES: list[dict[str, Any]] = [
    {
        "referral_id": "r-case",
        "from_status": "Closed",
        "from_substatus": "won",
        "to_status": "Closed",
        "to_substatus": "Won",
        "previous_changed_at": _T0,
        "changed_at": _T0 + timedelta(seconds=1),
        "seconds_in_previous": Decimal(1),
        "days_in_previous": Decimal("0.000011"),
    },
    {
        "referral_id": "r-nac",
        "from_status": "New",
        "from_substatus": "Pending",
        "to_status": "Active",
        "to_substatus": "Accepted",
        "previous_changed_at": _T0,
        "changed_at": _ACTIVE_AT,
        "seconds_in_previous": Decimal("432000.000001"),
        "days_in_previous": Decimal(5),
    },
    {
        "referral_id": "r-nac",
        "from_status": "Active",
        "from_substatus": "Accepted",
        "to_status": "Closed",
        "to_substatus": "Won",
        "previous_changed_at": _ACTIVE_AT,
        "changed_at": _CLOSED_AT,
        "seconds_in_previous": Decimal("3024000.499999"),
        "days_in_previous": Decimal("35.000005"),
    },
    {
        "referral_id": "r-null",
        "from_status": None,
        "from_substatus": None,
        "to_status": "New",
        "to_substatus": None,
        "previous_changed_at": _T0,
        "changed_at": _T0 + timedelta(minutes=1),
        "seconds_in_previous": Decimal(60),
        "days_in_previous": Decimal("0.000694"),
    },
    {
        "referral_id": "r-sub",
        "from_status": "New",
        "from_substatus": "Pending",
        "to_status": "New",
        "to_substatus": "Received",
        "previous_changed_at": _T0,
        "changed_at": _T0 + timedelta(hours=1),
        "seconds_in_previous": Decimal(3600),
        "days_in_previous": Decimal("0.041666"),
    },
]


def test_new_active_closed_gives_two_changes_with_exact_durations(engine: Engine) -> None:
    """Versions that keep the status (only the deal value changed) are not changes, and the
    time in a status runs from when the status began, to the microsecond, on every database."""
    t0 = datetime(2026, 1, 5, 8, 0, 0, 123456, tzinfo=UTC)
    active_at = t0 + timedelta(days=5, microseconds=1)
    closed_at = t0 + timedelta(days=40, seconds=0.5)
    with engine.begin() as conn:
        _insert_history(  # out of time order: the view orders by valid_from, not by id
            conn,
            [
                ("r-nac", closed_at, "Closed", "Won"),
                ("r-nac", t0 + timedelta(days=2, hours=3), "New", "Pending"),
                ("r-nac", t0, "New", "Pending"),
                ("r-nac", active_at + timedelta(days=1), "Active", "Accepted"),
                ("r-nac", active_at, "Active", "Accepted"),
                ("r-one", t0, "New", "Pending"),
                ("r-sub", t0, "New", "Pending"),
                ("r-sub", t0 + timedelta(hours=1), "New", "Received"),
                ("r-case", t0, "Closed", "won"),
                ("r-case", t0 + timedelta(seconds=1), "Closed", "Won"),
                ("r-null", t0, None, None),
                ("r-null", t0 + timedelta(minutes=1), "New", None),
            ],
        )
    with session(engine) as conn:
        columns, rows = run(conn, VIEW_SQL[REFERRAL_STATUS_CHANGES_V2.name])
    found = [dict(zip(columns, r, strict=True)) for r in rows]
    # No version has an updatedDateTime here: every change is timed by the sync (valid_from).
    assert [{k: v for k, v in r.items() if k != "history_id"} for r in found] == [
        {**change, "seen_at": change["changed_at"], "time_source": "sync"}
        for change in _NO_API_TIMES
    ]
    ids = {r["history_id"] for r in found}
    with engine.connect() as conn:
        history = TABLES["referral_history"]
        closing: int = conn.execute(
            sa.select(history.c.id).where(
                history.c.referral_id == "r-nac", history.c.valid_from == closed_at
            )
        ).scalar_one()
    assert closing in ids


def test_overview_lists_keep_position_order_without_deleted_referrals(engine: Engine) -> None:
    """The overview's lists follow each item's position and never show a deleted referral."""
    now = datetime(2026, 3, 1, tzinfo=UTC)
    base = {"payload": {}, "first_seen_at": now, "last_changed_at": now, "last_checked_at": now}
    requirement = TABLES["referral_requirements"]
    with engine.begin() as conn:
        conn.execute(
            sa.insert(TABLES["referrals"]),
            [
                {**base, "id": "live", "status": "New", "created_at": now, "deleted_at": None},
                {**base, "id": "gone", "status": "New", "created_at": now, "deleted_at": now},
                {**base, "id": "bare", "status": "New", "created_at": None, "deleted_at": None},
            ],
        )
        conn.execute(
            sa.insert(TABLES["referral_customers"]),
            [{"referral_id": "live", "name": "Åsa Öberg AB 🚀", "country": "SE"}],
        )
        items = [  # inserted out of order: lists follow position
            ("live", "products", 2, "Teams", None),
            ("live", "products", 0, "Azure", None),
            ("live", "products", 1, "GitHub", None),
            ("live", "industries", 0, "Retail", None),
            ("live", "solutions", 1, "SOL-2", ""),
            ("live", "solutions", 0, "SOL-1", "Microsoft 365"),
            ("live", "solutions", 2, "SOL-3", None),
            ("live", "offers", 0, "OFFER-1", "Not a list column"),
            ("gone", "products", 0, "Azure", None),
        ]
        conn.execute(
            sa.insert(requirement),
            [
                {"referral_id": r, "kind": k, "position": p, "item_id": i, "name": n}
                for r, k, p, i, n in items
            ],
        )
    with session(engine) as conn:
        _, rows = run(
            conn,
            "SELECT referral_id, customer_name, country, industries, products, services,"
            " solutions, created_month FROM referral_overview ORDER BY referral_id",
        )
    assert rows == [
        ("bare", None, None, None, None, None, None, None),
        (
            "live",
            "Åsa Öberg AB 🚀",
            "SE",
            "Retail",
            "Azure, GitHub, Teams",
            None,
            "Microsoft 365, SOL-2, SOL-3",
            "2026-03",
        ),
    ]


# Schema: views, comments, migrations, alembic check ---------------------------------------------

_KIND_TYPES: dict[str, type[sa.types.TypeEngine[Any]]] = {
    "varchar": sa.String,
    "text": sa.String,
    "timestamp": sa.DateTime,
    "money": sa.Numeric,
    "duration": sa.Numeric,
    "integer": sa.Integer,
    "rate": sa.Numeric,
}


def test_views_have_exactly_the_described_columns(engine: Engine) -> None:
    """Each view has exactly the columns its description lists, with the described types."""
    inspector = sa.inspect(engine)
    assert set(inspector.get_view_names()) >= {v.name for v in VIEWS}
    for view in VIEWS:
        with engine.connect() as conn:
            keys = list(conn.execute(sa.text(f"SELECT * FROM {view.name} WHERE 1 = 0")).keys())
        assert keys == [c.name for c in view.columns], view.name
        if engine.dialect.name == "sqlite":
            continue  # SQLite gives computed view columns no type
        reflected = {c["name"]: c["type"] for c in inspector.get_columns(view.name)}
        for column in view.columns:
            kind = reflected[column.name]
            assert isinstance(kind, _KIND_TYPES[column.kind]), (view.name, column.name, kind)
            if column.kind in ("money", "duration", "rate"):
                scale = {"money": 4, "duration": 6, "rate": 10}[column.kind]
                assert isinstance(kind, sa.Numeric), (view.name, column.name, kind)
                assert kind.scale == scale, (view.name, column.name, kind)


@pytest.mark.parametrize(
    "dialect",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_every_model_comment_is_in_the_catalog(
    dialect: str, database_urls: dict[str, str | Exception], tmp_path: Path
) -> None:
    """The database catalog carries each table's, view's and column's comment from the models."""
    engine = make_engine(dialect, database_urls, tmp_path)
    try:
        inspector = sa.inspect(engine)
        for table in TABLES.values():
            assert table.comment
            assert inspector.get_table_comment(table.name)["text"] == table.comment
            reflected = {c["name"]: c.get("comment") for c in inspector.get_columns(table.name)}
            assert reflected == {c.name: c.comment for c in table.columns}, table.name
            assert all(reflected.values()), table.name
        if dialect == "postgres":  # MariaDB and SQLite have no comments on views
            for view in VIEWS:
                assert inspector.get_table_comment(view.name)["text"] == view.comment
                reflected = {c["name"]: c.get("comment") for c in inspector.get_columns(view.name)}
                assert reflected == {c.name: c.comment for c in view.columns}, view.name
    finally:
        engine.dispose()


def test_models_match_the_migrated_database(engine: Engine) -> None:
    """`alembic check` passes: the views are not mistaken for tables the models lack."""
    db.check_models_match(engine)


def test_a_migration_round_trip_recreates_the_views(engine: Engine) -> None:
    """Down to 0001 and back up to head leaves every view in place and queryable."""
    names = {v.name for v in VIEWS}
    assert db.current_revision(engine) == db.head_revision()
    try:
        db.downgrade(engine, "0002")  # 0006 restores the views of 0002 and drops currency_rates
        inspector = sa.inspect(engine)
        assert set(inspector.get_view_names()) >= {v.name for v in VIEWS_0002}
        assert not names - {v.name for v in VIEWS_0002} & set(inspector.get_view_names())
        assert "currency_rates" not in inspector.get_table_names()
        for view in VIEWS_0002:
            with engine.connect() as conn:
                keys = conn.execute(sa.text(f"SELECT * FROM {view.name} WHERE 1 = 0")).keys()
            assert list(keys) == [c.name for c in view.columns], view.name
        db.downgrade(engine, "0001")
        assert db.current_revision(engine) == "0001"
        inspector = sa.inspect(engine)
        assert not names & set(inspector.get_view_names())
        # The tables of revision 0001 stay (later revisions add tables of their own).
        assert set(TABLES) - {"currency_rates", "webhook_events"} <= set(
            inspector.get_table_names()
        )
    finally:
        db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()
    assert names <= set(sa.inspect(engine).get_view_names())
    with engine.connect() as conn:
        for name in names:
            assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {name}")).scalar_one() == 0
    db.check_models_match(engine)


# The data dictionary ---------------------------------------------------------------------------


def test_committed_data_dictionary_is_up_to_date() -> None:
    """docs/data-dictionary.md is exactly what the models render today."""
    committed = DICTIONARY_MD.read_text("utf-8") if DICTIONARY_MD.exists() else ""
    assert committed == render_data_dictionary(), (
        "docs/data-dictionary.md is out of date: run `referrals-etl db docs`"
    )


def test_data_dictionary_changes_when_the_models_change() -> None:
    """The staleness check can fail: a new column in (a copy of) the metadata shows up."""
    copy = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(copy)
    copy.tables["referrals"].append_column(
        sa.Column("win_probability", sa.Numeric(5, 4), comment="details.winProbability")
    )
    changed = render_data_dictionary(copy)
    assert changed != render_data_dictionary()
    row = "| `win_probability` | NUMERIC(5, 4) | NUMERIC(5, 4) | NUMERIC(5, 4) | yes |  |"
    assert f"{row} details.winProbability |" in changed


def test_data_dictionary_describes_every_column() -> None:
    """The data dictionary gives every table, view and column its comment."""
    text = render_data_dictionary()
    sections = dict(re.findall(r"^### `(\w+)`\n(.*?)(?=^### |\Z)", text, re.MULTILINE | re.DOTALL))
    assert list(sections) == [*TABLES, *(v.name for v in VIEWS)]
    for table in TABLES.values():
        assert str(table.comment) in sections[table.name]
        for column in table.columns:
            line = next(
                x for x in sections[table.name].splitlines() if x.startswith(f"| `{column.name}` |")
            )
            assert line.endswith(f" {column.comment} |"), line
    for view in VIEWS:
        for view_column in view.columns:
            assert f"| `{view_column.name}` |" in sections[view.name]
            assert view_column.comment in sections[view.name]


def test_querying_guide_examples_are_statements_of_queries_sql() -> None:
    """Each SQL example in the querying guide is the same statement as in docs/queries.sql."""
    guide = (ROOT / "docs" / "querying.md").read_text("utf-8")
    examples = re.findall(r"```sql\n(.*?)```", guide, re.DOTALL)
    assert len(examples) >= 2
    queries = load_queries()
    for example in examples:
        name = re.match(r"-- name: (\S+)\n-- (.*)\n", example)
        assert name is not None, example
        query = queries[name[1]]
        assert (name[2], example[name.end() :].strip()) == (query.comment, query.sql + ";")
