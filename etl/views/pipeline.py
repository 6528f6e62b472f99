"""``referral_pipeline``: one row per live open referral (migration 0006)."""

from __future__ import annotations

from typing import Final

from etl.views.sql import (
    View,
    ViewColumn,
    in_reporting_currency,
    is_text,
    rate_at,
    utc_now,
)


def _pipeline_select(dialect: str) -> str:
    rate = rate_at(dialect, "r.currency", utc_now(dialect))
    new, active = is_text(dialect, "r.status", "New"), is_text(dialect, "r.status", "Active")
    value = in_reporting_currency(dialect, "p.deal_value", "p.reporting_rate")
    return f"""\
SELECT p.*, {value} AS deal_value_reporting
FROM (
    SELECT r.id AS referral_id, r.name, r.status, r.substatus, r.created_at, r.closing_at,
           r.currency, r.deal_value,
           {rate} AS reporting_rate
    FROM referrals r
    WHERE r.deleted_at IS NULL AND ({new} OR {active})
) p"""  # noqa: S608 - constants only, no input


REFERRAL_PIPELINE: Final = View(
    name="referral_pipeline",
    comment=(
        "One row per live open referral (status New or Active) with its deal value in its own "
        "currency and in the reporting currency."
    ),
    columns=(
        ViewColumn("referral_id", "varchar", "referrals.id (id: the referral's GUID)"),
        ViewColumn("name", "text", "referrals.name (name)"),
        ViewColumn("status", "varchar", "referrals.status: New or Active (status)"),
        ViewColumn("substatus", "text", "referrals.substatus (substatus)"),
        ViewColumn("created_at", "timestamp", "referrals.created_at (createdDateTime, UTC)"),
        ViewColumn(
            "closing_at", "timestamp", "referrals.closing_at (details.closingDateTime, UTC)"
        ),
        ViewColumn("currency", "text", "referrals.currency (details.currency); NULL if unknown"),
        ViewColumn("deal_value", "money", "referrals.deal_value (details.dealValue)"),
        ViewColumn(
            "reporting_rate",
            "rate",
            "currency_rates.rate of the currency valid now (the latest valid_from not in the "
            "future); NULL when there is none",
        ),
        ViewColumn(
            "deal_value_reporting",
            "money",
            "deal_value times reporting_rate, rounded to 4 decimals; NULL when either is",
        ),
    ),
    select=_pipeline_select,
)
