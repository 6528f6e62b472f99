"""``referral_milestones``: one row per referral, its milestones and outcome (migration 0006)."""

from __future__ import annotations

from typing import Final

from etl.views.sql import (
    View,
    ViewColumn,
    days_from_micros,
    in_reporting_currency,
    is_text,
    micros_between,
    month_of,
    rate_at,
    utc_now,
)

OUTCOMES: Final = ("won", "lost", "declined", "expired", "open")
"""Values of ``referral_milestones.outcome`` (NULL for a Closed referral with another substatus)."""


def _outcome(dialect: str) -> str:
    closed = is_text(dialect, "status", "Closed")
    whens = " ".join(
        f"WHEN {is_text(dialect, 'substatus', s.capitalize())} THEN '{s}'"
        for s in OUTCOMES
        if s != "open"
    )
    return f"CASE WHEN status IS NULL OR NOT ({closed}) THEN 'open' {whens} END"


def _milestones_select(dialect: str) -> str:
    first_closed = is_text(dialect, "status", "Closed")
    live_closed = is_text(dialect, "r.status", "Closed")
    at = f"COALESCE(m.closed_at, {utc_now(dialect)})"
    rate = rate_at(dialect, "m.currency", at)

    def days(start: str, end: str) -> str:
        return days_from_micros(dialect, micros_between(dialect, start, end))

    return f"""\
SELECT m.referral_id, m.status, m.substatus, m.outcome,
       m.created_at, m.accepted_at, m.closed_at, m.expires_at,
       {month_of(dialect, "m.closed_at")} AS closed_month,
       {days("m.created_at", "m.accepted_at")} AS days_created_to_accepted,
       {days("m.accepted_at", "m.closed_at")} AS days_accepted_to_closed,
       {days("m.created_at", "m.closed_at")} AS days_created_to_closed,
       m.currency, m.deal_value,
       {in_reporting_currency(dialect, "m.deal_value", rate)} AS deal_value_reporting
FROM (
    SELECT r.id AS referral_id, r.status, r.substatus,
           {_outcome(dialect)} AS outcome,
           r.created_at, r.accepted_at,
           CASE WHEN {live_closed} THEN fc.updated_at END AS closed_at,
           r.expires_at, r.currency, r.deal_value
    FROM referrals r
    LEFT JOIN (
        SELECT referral_id, updated_at
        FROM (
            SELECT referral_id, updated_at,
                   ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS n
            FROM referral_history
            WHERE {first_closed}
        ) closed_versions
        WHERE n = 1
    ) fc ON fc.referral_id = r.id
    WHERE r.deleted_at IS NULL
) m"""  # noqa: S608 - constants only, no input


REFERRAL_MILESTONES: Final = View(
    name="referral_milestones",
    comment=(
        "One row per live referral: when it was created, accepted, closed and expires, how it "
        "ended, and the days between, from the documents' own timestamps (so a referral first "
        "seen already closed has its timeline too)."
    ),
    columns=(
        ViewColumn("referral_id", "varchar", "referrals.id (id: the referral's GUID)"),
        ViewColumn("status", "varchar", "referrals.status: New, Active, Closed (status)"),
        ViewColumn("substatus", "text", "referrals.substatus (substatus)"),
        ViewColumn(
            "outcome",
            "text",
            "open (status is not Closed), else from substatus: won, lost, declined, expired; "
            "NULL for a Closed referral with any other substatus",
        ),
        ViewColumn("created_at", "timestamp", "referrals.created_at (createdDateTime, UTC)"),
        ViewColumn("accepted_at", "timestamp", "referrals.accepted_at (acceptedDateTime, UTC)"),
        ViewColumn(
            "closed_at",
            "timestamp",
            "for a Closed referral: updatedDateTime of the first version the sync saw Closed "
            "(referral_history), which is the document's own when it was first seen already "
            "closed; NULL while not Closed",
        ),
        ViewColumn("expires_at", "timestamp", "referrals.expires_at (expirationDateTime, UTC)"),
        ViewColumn("closed_month", "text", "'YYYY-MM' of closed_at (UTC)"),
        ViewColumn(
            "days_created_to_accepted",
            "duration",
            "days from created_at to accepted_at (6 decimals, truncated); NULL unless both are set",
        ),
        ViewColumn(
            "days_accepted_to_closed",
            "duration",
            "days from accepted_at to closed_at (6 decimals, truncated); NULL unless both are set",
        ),
        ViewColumn(
            "days_created_to_closed",
            "duration",
            "days from created_at to closed_at (6 decimals, truncated); NULL unless both are set",
        ),
        ViewColumn("currency", "text", "referrals.currency (details.currency)"),
        ViewColumn("deal_value", "money", "referrals.deal_value (details.dealValue)"),
        ViewColumn(
            "deal_value_reporting",
            "money",
            "deal_value times the currency_rates rate of its currency valid at closed_at (now "
            "while open), rounded to 4 decimals; NULL when no rate exists",
        ),
    ),
    select=_milestones_select,
)
