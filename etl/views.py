"""The analyst views: their SQL for each database and a description of every column.

The SQL and the column descriptions live side by side so that they stay in sync: migration
``0002`` created :data:`REFERRAL_OVERVIEW` and :data:`REFERRAL_STATUS_CHANGES`, migration
``0006`` replaced them by :data:`REFERRAL_OVERVIEW_V2` and :data:`REFERRAL_STATUS_CHANGES_V2` and
added :data:`REFERRAL_MILESTONES` and :data:`REFERRAL_PIPELINE` (with ``COMMENT ON`` from the
descriptions where the database has view comments: PostgreSQL), and ``etl.dictionary`` documents
:data:`VIEWS` from the same objects. Migration 0006 holds the SQL rendered here as literal text
(it imports nothing from ``etl``); a test checks the two are the same. The tests also check that
each view's columns are exactly the described ones, in order, and that the answers agree on all
databases.

Views are part of the contract with analysts (docs/data-dictionary.md). Each migration carries
its own copy of the SQL it ran, as literal text, so a revision never changes when this module
does. A definition here is what a migration created: to change a view, add a new :class:`View`
(e.g. ``REFERRAL_OVERVIEW_V3``) and a migration that drops the old view and creates the new one
with its SQL written out, keep the old object (the tests check each migration's text against it),
and point :data:`VIEWS` at the new one.

Portability notes, shared by both views:

* Date arithmetic differs on every database, so it happens here and the views expose plain
  numbers. A span is first computed as exact integer microseconds (``EXTRACT(EPOCH ...)`` on
  PostgreSQL, ``TIMESTAMPDIFF(MICROSECOND ...)`` on MariaDB, the ISO text split into whole
  seconds and microseconds on SQLite, where ``julianday`` would round to milliseconds), then
  shown as seconds with 6 decimals (exact) and as days truncated to 6 decimals, so all three
  databases give the same numbers. ``NUMERIC``/``DECIMAL`` on PostgreSQL and MariaDB, ``REAL`` on
  SQLite.
* "Now" is UTC on every database (``UTC_TIMESTAMP`` on MariaDB, whose ``CURRENT_TIMESTAMP`` is in
  the session's time zone while the stored ``DATETIME(6)`` values are UTC).
* Ordered lists use ``string_agg(... ORDER BY ...)`` on PostgreSQL, ``GROUP_CONCAT(... ORDER BY
  ... SEPARATOR ...)`` on MariaDB, and ``group_concat`` as a window function ordered by position
  on SQLite (whose plain aggregate has no ORDER BY before 3.44).
* Status comparisons are exact (byte for byte) on every database, although MariaDB's default
  collation would call ``won`` and ``Won`` equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

SEPARATOR: Final = ", "
"""Between the items of the list columns of ``referral_overview``."""

POSTGRESQL: Final = "postgresql"
MARIADB: Final = "mysql"  # MariaDB and MySQL: SQLAlchemy calls the family "mysql"
SQLITE: Final = "sqlite"
DIALECTS: Final = (POSTGRESQL, MARIADB, SQLITE)

# How a kind of column looks on each database, for the data dictionary.
TYPES: Final[Mapping[str, Mapping[str, str]]] = {
    "varchar": {POSTGRESQL: "VARCHAR(64)", MARIADB: "VARCHAR(64)", SQLITE: "VARCHAR(64)"},
    "text": {POSTGRESQL: "TEXT", MARIADB: "TEXT", SQLITE: "TEXT"},
    "timestamp": {
        POSTGRESQL: "TIMESTAMP WITH TIME ZONE",
        MARIADB: "DATETIME(6)",
        SQLITE: "DATETIME",
    },
    "money": {POSTGRESQL: "NUMERIC(19, 4)", MARIADB: "NUMERIC(19, 4)", SQLITE: "NUMERIC(19, 4)"},
    "duration": {POSTGRESQL: "NUMERIC(20, 6)", MARIADB: "DECIMAL(20, 6)", SQLITE: "REAL"},
    "integer": {POSTGRESQL: "BIGINT", MARIADB: "BIGINT", SQLITE: "INTEGER"},
    "rate": {POSTGRESQL: "NUMERIC(20, 10)", MARIADB: "NUMERIC(20, 10)", SQLITE: "NUMERIC(20, 10)"},
}


def normalise_dialect(name: str) -> str:
    """``mariadb`` and ``mysql`` are one family here; anything else must be known."""
    family = MARIADB if name in {"mysql", "mariadb"} else name
    if family not in DIALECTS:
        raise ValueError(f"views exist for {', '.join(DIALECTS)}, not for {name!r}")
    return family


@dataclass(frozen=True, slots=True)
class ViewColumn:
    """One column of a view: its name, kind (a key of :data:`TYPES`) and meaning."""

    name: str
    kind: str
    comment: str

    def type_on(self, dialect: str) -> str:
        return TYPES[self.kind][normalise_dialect(dialect)]


@dataclass(frozen=True, slots=True)
class View:
    """A view: name, what one row is, its columns, and its ``SELECT`` for each database."""

    name: str
    comment: str
    columns: tuple[ViewColumn, ...]
    select: Callable[[str], str]

    def select_sql(self, dialect: str) -> str:
        return self.select(normalise_dialect(dialect))

    def create_statements(self, dialect: str) -> list[str]:
        """``CREATE VIEW`` and, where the database has them, the comments on it."""
        family = normalise_dialect(dialect)
        statements = [f"CREATE VIEW {self.name} AS\n{self.select(family)}"]
        if family == POSTGRESQL:
            statements.append(f"COMMENT ON VIEW {self.name} IS {_quote(self.comment)}")
            statements += [
                f"COMMENT ON COLUMN {self.name}.{c.name} IS {_quote(c.comment)}"
                for c in self.columns
            ]
        return statements

    def drop_statement(self) -> str:
        return f"DROP VIEW IF EXISTS {self.name}"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# Date arithmetic, per database --------------------------------------------------------------


def micros_between(dialect: str, start: str, end: str) -> str:
    """Exact integer microseconds from ``start`` to ``end`` (SQL expressions); NULL if either is."""
    if dialect == POSTGRESQL:
        return f"CAST(ROUND(EXTRACT(EPOCH FROM ({end}) - ({start})) * 1000000) AS BIGINT)"
    if dialect == MARIADB:
        return f"TIMESTAMPDIFF(MICROSECOND, {start}, {end})"

    # SQLite keeps UTC as text 'YYYY-MM-DD HH:MM:SS.ffffff': whole seconds + microseconds.
    def whole(ts: str) -> str:
        return f"CAST(strftime('%s', substr({ts}, 1, 19)) AS INTEGER)"

    def micro(ts: str) -> str:
        return f"CAST(substr(substr({ts}, 21) || '000000', 1, 6) AS INTEGER)"

    return f"(({whole(end)} - {whole(start)}) * 1000000 + {micro(end)} - {micro(start)})"


def seconds_from_micros(dialect: str, micros: str) -> str:
    """Seconds with 6 decimals (exact) from integer microseconds."""
    if dialect == POSTGRESQL:
        return f"CAST(CAST({micros} AS NUMERIC(24, 6)) / 1000000 AS NUMERIC(20, 6))"
    if dialect == MARIADB:
        return f"CAST(CAST({micros} AS DECIMAL(24, 6)) / 1000000 AS DECIMAL(20, 6))"
    return f"({micros}) / 1000000.0"


def days_from_micros(dialect: str, micros: str) -> str:
    """Days truncated (toward zero) to 6 decimals, from integer microseconds."""
    if dialect == POSTGRESQL:
        return f"CAST(CAST(({micros}) / 86400 AS NUMERIC(24, 6)) / 1000000 AS NUMERIC(20, 6))"
    if dialect == MARIADB:
        return f"CAST(CAST(({micros}) DIV 86400 AS DECIMAL(24, 6)) / 1000000 AS DECIMAL(20, 6))"
    return f"(({micros}) / 86400) / 1000000.0"


def utc_now(dialect: str) -> str:
    if dialect == POSTGRESQL:
        return "CURRENT_TIMESTAMP"
    if dialect == MARIADB:
        return "UTC_TIMESTAMP(6)"
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


def month_of(dialect: str, ts: str) -> str:
    """'YYYY-MM' of a UTC timestamp."""
    if dialect == POSTGRESQL:
        return f"to_char({ts} AT TIME ZONE 'UTC', 'YYYY-MM')"
    if dialect == MARIADB:  # no DATE_FORMAT: offline (--sql) scripts would double its % signs
        return f"CONCAT(LPAD(YEAR({ts}), 4, '0'), '-', LPAD(MONTH({ts}), 2, '0'))"
    return f"strftime('%Y-%m', {ts})"


def same_text(dialect: str, a: str, b: str) -> str:
    """Null-safe, exact (case- and accent-sensitive) equality of two text expressions."""
    if dialect == POSTGRESQL:
        return f"{a} IS NOT DISTINCT FROM {b}"
    if dialect == MARIADB:
        return f"BINARY {a} <=> BINARY {b}"
    return f"{a} IS {b}"


# referral_overview --------------------------------------------------------------------------

LIST_KINDS: Final = ("industries", "products", "services", "solutions")


def _label(kind_column: str = "kind") -> str:
    """The text an item shows in a list: a solution's name, else its id (ids for the rest)."""
    return (
        f"CASE WHEN {kind_column} = 'solutions' "
        "THEN COALESCE(NULLIF(name, ''), NULLIF(item_id, '')) "
        "ELSE COALESCE(NULLIF(item_id, ''), NULLIF(name, '')) END"
    )


def _lists_subquery(dialect: str) -> str:
    """One row per referral with a requirement, and a column per list kind."""
    kinds = ", ".join(f"'{k}'" for k in LIST_KINDS)
    sep = _quote(SEPARATOR)
    if dialect == SQLITE:
        pivots = ",\n           ".join(
            f"MAX(CASE WHEN kind = '{k}' THEN items END) AS {k}" for k in LIST_KINDS
        )
        return f"""\
    SELECT referral_id,
           {pivots}
    FROM (
        SELECT referral_id, kind,
               group_concat(label, {sep}) OVER (
                   PARTITION BY referral_id, kind ORDER BY position
                   ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
               ) AS items,
               ROW_NUMBER() OVER (PARTITION BY referral_id, kind ORDER BY position) AS item_no
        FROM (
            SELECT referral_id, kind, position, {_label()} AS label
            FROM referral_requirements
            WHERE kind IN ({kinds})
        ) labelled
    ) listed
    WHERE item_no = 1
    GROUP BY referral_id"""  # noqa: S608 - constants only, no input
    if dialect == POSTGRESQL:
        aggregate = "string_agg(CASE WHEN kind = '{k}' THEN label END, {sep} ORDER BY position)"
    else:
        aggregate = (
            "GROUP_CONCAT(CASE WHEN kind = '{k}' THEN label END ORDER BY position SEPARATOR {sep})"
        )
    pivots = ",\n           ".join(aggregate.format(k=k, sep=sep) + f" AS {k}" for k in LIST_KINDS)
    return f"""\
    SELECT referral_id,
           {pivots}
    FROM (
        SELECT referral_id, kind, position, {_label()} AS label
        FROM referral_requirements
        WHERE kind IN ({kinds})
    ) labelled
    GROUP BY referral_id"""  # noqa: S608 - constants only, no input


def _overview_select(dialect: str) -> str:
    to_accept = micros_between(dialect, "r.created_at", "r.accepted_at")
    since_update = micros_between(dialect, "r.updated_at", utc_now(dialect))
    return f"""\
SELECT r.id AS referral_id,
       r.engagement_id,
       r.name,
       r.organization_id,
       r.organization_name,
       r.external_reference_id,
       r.status,
       r.substatus,
       r.status_reason,
       r.qualification,
       r.type,
       r.direction,
       r.created_at,
       r.updated_at,
       r.expires_at,
       r.accepted_at,
       r.closing_at,
       r.deal_value,
       r.currency,
       r.invited_by_organization_id,
       r.invited_by_organization_name,
       c.name AS customer_name,
       c.size AS customer_size,
       c.address_line1,
       c.address_line2,
       c.city,
       c.state,
       c.region,
       c.postal_code,
       c.country,
       q.industries,
       q.products,
       q.services,
       q.solutions,
       {month_of(dialect, "r.created_at")} AS created_month,
       {days_from_micros(dialect, to_accept)} AS days_to_accept,
       {days_from_micros(dialect, since_update)} AS days_since_update
FROM referrals r
LEFT JOIN referral_customers c ON c.referral_id = r.id
LEFT JOIN (
{_lists_subquery(dialect)}
) q ON q.referral_id = r.id
WHERE r.deleted_at IS NULL"""  # noqa: S608 - constants only, no input


def _list_comment(kind: str, what: str) -> str:
    return (
        f"{what}, comma-separated ('{SEPARATOR}') in array order "
        f"(details.requirements.{kind}); NULL when there are none"
    )


REFERRAL_OVERVIEW: Final = View(
    name="referral_overview",
    comment=(
        "One row per live referral (referrals.deleted_at IS NULL) with its customer, address and "
        "the lists of its industries, products, services and solutions."
    ),
    columns=(
        ViewColumn("referral_id", "varchar", "referrals.id (id: the referral's GUID)"),
        ViewColumn("engagement_id", "varchar", "referrals.engagement_id (engagementId)"),
        ViewColumn("name", "text", "referrals.name (name)"),
        ViewColumn("organization_id", "text", "referrals.organization_id (organizationId)"),
        ViewColumn("organization_name", "text", "referrals.organization_name (organizationName)"),
        ViewColumn(
            "external_reference_id",
            "text",
            "referrals.external_reference_id (externalReferenceId)",
        ),
        ViewColumn("status", "varchar", "referrals.status: New, Active, Closed (status)"),
        ViewColumn("substatus", "text", "referrals.substatus (substatus)"),
        ViewColumn("status_reason", "text", "referrals.status_reason (statusReason)"),
        ViewColumn("qualification", "text", "referrals.qualification (qualification)"),
        ViewColumn("type", "text", "referrals.type: Independent or Shared (type)"),
        ViewColumn("direction", "text", "referrals.direction: Incoming or Outgoing (direction)"),
        ViewColumn("created_at", "timestamp", "referrals.created_at (createdDateTime, UTC)"),
        ViewColumn("updated_at", "timestamp", "referrals.updated_at (updatedDateTime, UTC)"),
        ViewColumn("expires_at", "timestamp", "referrals.expires_at (expirationDateTime, UTC)"),
        ViewColumn("accepted_at", "timestamp", "referrals.accepted_at (acceptedDateTime, UTC)"),
        ViewColumn(
            "closing_at", "timestamp", "referrals.closing_at (details.closingDateTime, UTC)"
        ),
        ViewColumn("deal_value", "money", "referrals.deal_value (details.dealValue)"),
        ViewColumn("currency", "text", "referrals.currency (details.currency)"),
        ViewColumn(
            "invited_by_organization_id",
            "text",
            "referrals.invited_by_organization_id (inviteContext.invitedBy.organizationId)",
        ),
        ViewColumn(
            "invited_by_organization_name",
            "text",
            "referrals.invited_by_organization_name (inviteContext.invitedBy.organizationName)",
        ),
        ViewColumn("customer_name", "text", "referral_customers.name (customerProfile.name)"),
        ViewColumn("customer_size", "text", "referral_customers.size (customerProfile.size)"),
        ViewColumn(
            "address_line1",
            "text",
            "referral_customers.address_line1 (customerProfile.address.addressLine1)",
        ),
        ViewColumn(
            "address_line2",
            "text",
            "referral_customers.address_line2 (customerProfile.address.addressLine2)",
        ),
        ViewColumn("city", "text", "referral_customers.city (customerProfile.address.city)"),
        ViewColumn("state", "text", "referral_customers.state (customerProfile.address.state)"),
        ViewColumn("region", "text", "referral_customers.region (customerProfile.address.region)"),
        ViewColumn(
            "postal_code",
            "text",
            "referral_customers.postal_code (customerProfile.address.postalCode)",
        ),
        ViewColumn(
            "country",
            "text",
            "referral_customers.country (customerProfile.address.country, ISO 3166 alpha-2)",
        ),
        ViewColumn("industries", "text", _list_comment("industries", "Industry ids")),
        ViewColumn("products", "text", _list_comment("products", "Product ids")),
        ViewColumn("services", "text", _list_comment("services", "Service ids")),
        ViewColumn(
            "solutions", "text", _list_comment("solutions", "Solution names (the id when unnamed)")
        ),
        ViewColumn("created_month", "text", "'YYYY-MM' of created_at (UTC)"),
        ViewColumn(
            "days_to_accept",
            "duration",
            "Days from created_at to accepted_at (6 decimals, truncated); NULL unless both are set",
        ),
        ViewColumn(
            "days_since_update",
            "duration",
            "Days from updated_at to now (UTC; 6 decimals, truncated)",
        ),
    ),
    select=_overview_select,
)


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


# Revision 0006 ---------------------------------------------------------------------------------
# referral_overview and referral_status_changes are replaced (columns appended, so old queries
# keep working); referral_milestones and referral_pipeline are new. Migration 0006 carries the
# SQL these functions render as literal text (tests/test_analyst.py checks the two agree).

OUTCOMES: Final = ("won", "lost", "declined", "expired", "open")
"""Values of ``referral_milestones.outcome`` (NULL for a Closed referral with another substatus)."""

TIME_SOURCES: Final = ("api", "sync")
"""Values of ``referral_status_changes.time_source``."""


def is_text(dialect: str, column: str, literal: str) -> str:
    """Exact (case-sensitive) comparison of a text column with a constant."""
    if dialect == MARIADB:
        return f"BINARY {column} = {_quote(literal)}"
    return f"{column} = {_quote(literal)}"


def rate_at(dialect: str, currency: str, at: str) -> str:
    """The rate of ``currency`` to the reporting currency valid at ``at``: the currency_rates
    row with the latest valid_from not after it; NULL when there is none."""
    same = (
        f"BINARY cr.currency = BINARY {currency}"
        if dialect == MARIADB
        else f"cr.currency = {currency}"
    )
    return (
        "(SELECT cr.rate FROM currency_rates cr "  # noqa: S608 - constants only, no input
        f"WHERE {same} AND cr.valid_from <= {at} "
        "ORDER BY cr.valid_from DESC LIMIT 1)"
    )


def in_reporting_currency(dialect: str, amount: str, rate: str) -> str:
    """``amount * rate`` rounded to 4 decimals (half away from zero); NULL if either is."""
    if dialect == POSTGRESQL:
        return f"CAST(ROUND({amount} * {rate}, 4) AS NUMERIC(19, 4))"
    if dialect == MARIADB:
        return f"CAST(ROUND({amount} * {rate}, 4) AS DECIMAL(19, 4))"
    return f"ROUND({amount} * {rate}, 4)"


def full_name(dialect: str, first: str, last: str) -> str:
    """'first last' without stray spaces; NULL when both are missing."""
    if dialect == MARIADB:
        joined = f"CONCAT(COALESCE({first}, ''), ' ', COALESCE({last}, ''))"
    else:
        joined = f"COALESCE({first}, '') || ' ' || COALESCE({last}, '')"
    return f"NULLIF(TRIM({joined}), '')"


def _overview_v2_select(dialect: str) -> str:
    rate = rate_at(dialect, "o.currency", utc_now(dialect))
    return f"""\
SELECT o.*,
       {full_name(dialect, "cc.first_name", "cc.last_name")} AS customer_contact_name,
       cc.email AS customer_contact_email,
       cc.phone_number AS customer_contact_phone,
       {full_name(dialect, "tm.first_name", "tm.last_name")} AS owner_name,
       tm.email AS owner_email,
       {in_reporting_currency(dialect, "o.deal_value", rate)} AS deal_value_reporting
FROM (
{_overview_select(dialect)}
) o
LEFT JOIN referral_contacts cc
       ON cc.referral_id = o.referral_id AND cc.side = 'customer' AND cc.position = 0
LEFT JOIN referral_contacts tm
       ON tm.referral_id = o.referral_id AND tm.side = 'team' AND tm.position = 0"""  # noqa: S608


REFERRAL_OVERVIEW_V2: Final = View(
    name="referral_overview",
    comment=REFERRAL_OVERVIEW.comment[:-1]
    + ", the first customer contact, the partner-side owner, and the deal value in the "
    "reporting currency.",
    columns=(
        *REFERRAL_OVERVIEW.columns,
        ViewColumn(
            "customer_contact_name",
            "text",
            "the contact to call: first and last name of the first member of "
            "customerProfile.team (referral_contacts side customer, position 0)",
        ),
        ViewColumn(
            "customer_contact_email", "text", "email of that contact (customerProfile.team)"
        ),
        ViewColumn(
            "customer_contact_phone",
            "text",
            "phoneNumber of that customer contact (customerProfile.team)",
        ),
        ViewColumn(
            "owner_name",
            "text",
            "the partner-side owner: first and last name of the first member of the top-level "
            "team (referral_contacts side team, position 0)",
        ),
        ViewColumn("owner_email", "text", "email of that owner (team)"),
        ViewColumn(
            "deal_value_reporting",
            "money",
            "deal_value times the currency_rates rate of its currency valid now (the latest "
            "valid_from not in the future), rounded to 4 decimals; NULL when no rate exists",
        ),
    ),
    select=_overview_v2_select,
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

VIEWS_0002: Final = (REFERRAL_OVERVIEW, REFERRAL_STATUS_CHANGES)
"""The views as migration 0002 created them."""

VIEWS: Final = (
    REFERRAL_OVERVIEW_V2,
    REFERRAL_STATUS_CHANGES_V2,
    REFERRAL_MILESTONES,
    REFERRAL_PIPELINE,
)
"""The current analyst views (migration 0006), in creation order."""
