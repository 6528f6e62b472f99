"""What every view is made of: the dialects, :class:`View` and the SQL fragments per database."""

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
            statements.append(f"COMMENT ON VIEW {self.name} IS {quote(self.comment)}")
            statements += [
                f"COMMENT ON COLUMN {self.name}.{c.name} IS {quote(c.comment)}"
                for c in self.columns
            ]
        return statements

    def drop_statement(self) -> str:
        return f"DROP VIEW IF EXISTS {self.name}"


def quote(text: str) -> str:
    """``text`` as a SQL string literal."""
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


def is_text(dialect: str, column: str, literal: str) -> str:
    """Exact (case-sensitive) comparison of a text column with a constant."""
    if dialect == MARIADB:
        return f"BINARY {column} = {quote(literal)}"
    return f"{column} = {quote(literal)}"


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
