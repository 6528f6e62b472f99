"""``referral_status_changes``: one row per change of status (migration 0002, replaced by 0006)."""

from __future__ import annotations

from typing import Final

from etl.views.sql import (
    View,
    ViewColumn,
    days_from_micros,
    micros_between,
    same_text,
    seconds_from_micros,
)

TIME_SOURCES: Final = ("api", "sync")
"""Values of ``referral_status_changes.time_source``."""


# referral_status_changes ----------------------------------------------------------------------


def _status_changes_select(dialect: str) -> str:
    order = "PARTITION BY referral_id ORDER BY valid_from, id"
    same_status = same_text(dialect, "status", "previous_status")
    same_substatus = same_text(dialect, "substatus", "previous_substatus")
    micros = micros_between(dialect, "previous_changed_at", "changed_at")
    return f"""\
WITH versions AS (
    SELECT id, referral_id, status, substatus, valid_from,
           ROW_NUMBER() OVER ({order}) AS version_no,
           LAG(status) OVER ({order}) AS previous_status,
           LAG(substatus) OVER ({order}) AS previous_substatus
    FROM referral_history
),
spells AS (
    SELECT id, referral_id, status, substatus, valid_from,
           ROW_NUMBER() OVER ({order}) AS spell_no,
           LAG(status) OVER ({order}) AS from_status,
           LAG(substatus) OVER ({order}) AS from_substatus,
           LAG(valid_from) OVER ({order}) AS from_valid_from
    FROM versions
    WHERE version_no = 1
       OR CASE WHEN ({same_status}) AND ({same_substatus}) THEN 0 ELSE 1 END = 1
),
changes AS (
    SELECT referral_id, id AS history_id, from_status, from_substatus,
           status AS to_status, substatus AS to_substatus,
           from_valid_from AS previous_changed_at, valid_from AS changed_at
    FROM spells
    WHERE spell_no > 1
)
SELECT referral_id, history_id, from_status, from_substatus, to_status, to_substatus,
       previous_changed_at, changed_at,
       {seconds_from_micros(dialect, micros)} AS seconds_in_previous,
       {days_from_micros(dialect, micros)} AS days_in_previous
FROM changes"""  # noqa: S608 - constants only, no input


REFERRAL_STATUS_CHANGES: Final = View(
    name="referral_status_changes",
    comment=(
        "One row per change of status or substatus of a referral, from referral_history (versions "
        "ordered by valid_from, id; versions that keep the status are not changes), with the "
        "time spent in the previous status as the sync saw it."
    ),
    columns=(
        ViewColumn("referral_id", "varchar", "referral_history.referral_id (referrals.id)"),
        ViewColumn(
            "history_id",
            "integer",
            "referral_history.id of the version that brought the new status",
        ),
        ViewColumn("from_status", "varchar", "status before the change"),
        ViewColumn("from_substatus", "text", "substatus before the change"),
        ViewColumn("to_status", "varchar", "status after the change"),
        ViewColumn("to_substatus", "text", "substatus after the change"),
        ViewColumn(
            "previous_changed_at",
            "timestamp",
            "when the referral entered from_status/from_substatus (valid_from of the first "
            "version with it)",
        ),
        ViewColumn(
            "changed_at", "timestamp", "when the sync first saw the new status (valid_from, UTC)"
        ),
        ViewColumn(
            "seconds_in_previous",
            "duration",
            "seconds from previous_changed_at to changed_at (6 decimals, exact)",
        ),
        ViewColumn(
            "days_in_previous",
            "duration",
            "the same span in days (6 decimals, truncated)",
        ),
    ),
    select=_status_changes_select,
)


def _status_changes_v2_select(dialect: str) -> str:
    order = "PARTITION BY referral_id ORDER BY valid_from, id"
    same_status = same_text(dialect, "status", "previous_status")
    same_substatus = same_text(dialect, "substatus", "previous_substatus")
    both = "from_updated_at IS NOT NULL AND updated_at IS NOT NULL"
    start = f"CASE WHEN {both} THEN from_updated_at ELSE from_valid_from END"
    end = f"CASE WHEN {both} THEN updated_at ELSE valid_from END"
    micros = micros_between(dialect, "previous_changed_at", "changed_at")
    return f"""\
WITH versions AS (
    SELECT id, referral_id, status, substatus, valid_from, updated_at,
           ROW_NUMBER() OVER ({order}) AS version_no,
           LAG(status) OVER ({order}) AS previous_status,
           LAG(substatus) OVER ({order}) AS previous_substatus
    FROM referral_history
),
spells AS (
    SELECT id, referral_id, status, substatus, valid_from, updated_at,
           ROW_NUMBER() OVER ({order}) AS spell_no,
           LAG(status) OVER ({order}) AS from_status,
           LAG(substatus) OVER ({order}) AS from_substatus,
           LAG(valid_from) OVER ({order}) AS from_valid_from,
           LAG(updated_at) OVER ({order}) AS from_updated_at
    FROM versions
    WHERE version_no = 1
       OR CASE WHEN ({same_status}) AND ({same_substatus}) THEN 0 ELSE 1 END = 1
),
changes AS (
    SELECT referral_id, id AS history_id, from_status, from_substatus,
           status AS to_status, substatus AS to_substatus,
           {start} AS previous_changed_at,
           {end} AS changed_at,
           valid_from AS seen_at,
           CASE WHEN {both} THEN 'api' ELSE 'sync' END AS time_source
    FROM spells
    WHERE spell_no > 1
)
SELECT referral_id, history_id, from_status, from_substatus, to_status, to_substatus,
       previous_changed_at, changed_at,
       {seconds_from_micros(dialect, micros)} AS seconds_in_previous,
       {days_from_micros(dialect, micros)} AS days_in_previous,
       seen_at, time_source
FROM changes"""  # noqa: S608 - constants only, no input


REFERRAL_STATUS_CHANGES_V2: Final = View(
    name="referral_status_changes",
    comment=(
        "One row per change of status or substatus of a referral, from referral_history (versions "
        "ordered by valid_from, id; versions that keep the status are not changes), with the "
        "time spent in the previous status: from the API's updatedDateTime of the versions that "
        "began each status where both exist (time_source api), else from when the sync saw them "
        "(time_source sync)."
    ),
    columns=(
        *REFERRAL_STATUS_CHANGES.columns[:6],
        ViewColumn(
            "previous_changed_at",
            "timestamp",
            "when the referral entered from_status/from_substatus: updatedDateTime of the first "
            "version with it (time_source api), else that version's valid_from (sync)",
        ),
        ViewColumn(
            "changed_at",
            "timestamp",
            "when the new status began: updatedDateTime of the version that brought it "
            "(time_source api), else when the sync first saw it (valid_from; sync)",
        ),
        *REFERRAL_STATUS_CHANGES.columns[8:],
        ViewColumn(
            "seen_at", "timestamp", "when the sync first saw the new status (valid_from, UTC)"
        ),
        ViewColumn(
            "time_source",
            "varchar",
            "api: both ends are the API's updatedDateTime; sync: one version had none, so both "
            "ends are when the sync saw the versions (valid_from), which after a first backfill "
            "is about the same instant",
        ),
    ),
    select=_status_changes_v2_select,
)
