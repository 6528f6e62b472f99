"""The analyst views: their SQL for each database and a description of every column.

The SQL and the column descriptions live side by side so that they stay in sync: migration
``0002`` creates :data:`REFERRAL_OVERVIEW` and :data:`REFERRAL_STATUS_CHANGES` (with ``COMMENT
ON`` from the descriptions where the database has view comments: PostgreSQL), and
``etl.dictionary`` documents :data:`VIEWS` from the same objects. The tests check that each view's
columns are exactly the described ones, in order, and that the answers agree on all databases.

Views are part of the contract with analysts (docs/data-dictionary.md). These are the current
definitions; each migration carries its own copy of the SQL it ran (a revision never changes when
this module does). To change a view, change it here and add a migration that drops the old view
and creates the new one with the SQL written out (print it with ``View.create_statements``); the
tests compare the migrated database's views with these definitions.

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

VIEWS: Final = (REFERRAL_OVERVIEW, REFERRAL_STATUS_CHANGES)
"""The current analyst views, in creation order."""
