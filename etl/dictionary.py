"""The data dictionary (``docs/data-dictionary.md``), generated from the models and the views.

Every table and column of :mod:`etl.models` (type on each database, nullability, keys, indexes
and the comment that says what it means and where it comes from in the API document), then the
analyst views of :mod:`etl.views` with the description kept next to their SQL. The output is
deterministic (no timestamps, sorted where the source order is not meaningful), so the committed
file can be compared with a fresh rendering: ``referrals-etl db docs`` writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Column, MetaData, Table
from sqlalchemy.dialects.mysql.base import MySQLDialect
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine import Dialect

from etl.models import metadata as models_metadata
from etl.views import MARIADB, POSTGRESQL, SQLITE, VIEWS, View

_DIALECTS: tuple[tuple[str, str, Dialect], ...] = (
    ("PostgreSQL", POSTGRESQL, PGDialect()),  # type: ignore[no-untyped-call]
    ("MariaDB", MARIADB, MySQLDialect()),
    ("SQLite", SQLITE, SQLiteDialect()),
)

_INTRO = """\
# Data dictionary

Generated from the models (`etl/models.py`) and the view definitions (`etl/views/`) by
`referrals-etl db docs`; do not edit by hand (a test fails when this file is out of date).
Querying advice and examples: [querying.md](querying.md) and [queries.sql](queries.sql).

Conventions: names are snake_case and a public interface (they change only through a new
migration that keeps old queries working). Timestamps are UTC: `timestamptz` on PostgreSQL,
`DATETIME(6)` holding UTC on MariaDB, ISO text (`YYYY-MM-DD HH:MM:SS.ffffff`) on SQLite. Ids are
strings; money is `NUMERIC(19, 4)`; enum-like values (status, substatus, ...) are plain text;
booleans are `0`/`1` on MariaDB and SQLite. `payload` is the whole API document as JSON (`JSONB`
on PostgreSQL, `JSON` = `LONGTEXT` on MariaDB, text on SQLite). Text is Unicode throughout
(`utf8mb4` on MariaDB, whose default collation compares text case-insensitively). The meaning
column names the source field of the referral document ([referral-api.md](referral-api.md))
where there is one.

What identifies a version: its content. `sync_state.content_hash` is the SHA-256 of the stored
document's canonical JSON without its transport fields (`eTag` and `@odata.*`), so the same
content read from a list page (which carries no eTag) or from a GET by id (which does) is the
same version: switching between the two never adds a `referral_history` row. A new version (a
new history row, a new `referrals.last_changed_at`) is written only when that hash changes. The
`etag` columns hold the last eTag received for the version (NULL when it came without one) and
serve only to ask the API "changed since?"; `referral_history.origin` says how each version
was read (`list` or `get`).
"""


def render_data_dictionary(
    metadata: MetaData | None = None, views: Sequence[View] | None = None
) -> str:
    """The Markdown data dictionary of ``metadata`` (default: the models) and ``views``."""
    meta = models_metadata if metadata is None else metadata
    shown_views = VIEWS if views is None else views
    tables = list(meta.tables.values())
    parts = [_INTRO, _contents(tables, shown_views), "## Tables"]
    parts += [_table_section(table) for table in tables]
    parts.append("## Views")
    parts += [_view_section(view) for view in shown_views]
    return "\n\n".join(part.strip("\n") for part in parts) + "\n"


def _contents(tables: Iterable[Table], views: Iterable[View]) -> str:
    def links(names: Iterable[str]) -> str:
        return ", ".join(f"[`{name}`](#{name})" for name in names)

    return (
        "## Contents\n\n"
        f"- Tables: {links(t.name for t in tables)}\n"
        f"- Views: {links(v.name for v in views)}\n"
    )


def _cell(text: str | None) -> str:
    """Text safe inside a Markdown table cell."""
    if not text:
        return ""
    return " ".join(text.split()).replace("|", "\\|")


def _types(column: Column[object]) -> list[str]:
    return [_cell(column.type.compile(dialect=dialect)) for _, _, dialect in _DIALECTS]


def _keys(table: Table, column: Column[object]) -> str:
    keys = []
    if column.primary_key:
        keys.append("PK")
    keys.extend(
        f"FK → `{fk.target_fullname}`"
        for fk in sorted(column.foreign_keys, key=lambda f: f.target_fullname)
    )
    if any(column.name in index.columns for index in table.indexes):
        keys.append("indexed")
    return ", ".join(keys)


def _table_section(table: Table) -> str:
    header = " | ".join(["column", *(label for label, _, _ in _DIALECTS), "null", "key", "meaning"])
    lines = [
        f"### `{table.name}`",
        "",
        _cell(table.comment) or "(no comment)",
        "",
        f"| {header} |",
        "|" + "---|" * (len(_DIALECTS) + 4),
    ]
    for column in table.columns:
        cells = [
            f"`{column.name}`",
            *_types(column),
            "yes" if column.nullable else "no",
            _keys(table, column),
            _cell(column.comment),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += _constraints(table)
    return "\n".join(lines) + "\n"


def _constraints(table: Table) -> list[str]:
    def names(columns: Iterable[Column[object]]) -> str:
        return ", ".join(f"`{c.name}`" for c in columns)

    items = []
    if table.primary_key.columns:
        pk = table.primary_key.name or f"pk_{table.name}"
        items.append(f"- Primary key `{pk}`: {names(table.primary_key.columns)}")
    for fk in sorted(table.foreign_key_constraints, key=lambda c: list(c.column_keys)):
        target = fk.referred_table.name
        referred = ", ".join(f"`{e.column.name}`" for e in fk.elements)
        on_delete = f", ON DELETE {fk.ondelete}" if fk.ondelete else ""
        items.append(f"- Foreign key: {names(fk.columns)} → `{target}` ({referred}){on_delete}")
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        unique = "unique index" if index.unique else "Index"
        items.append(f"- {unique.capitalize()} `{index.name}`: {names(index.columns)}")
    return [*items, ""] if items else []


def _view_section(view: View) -> str:
    header = " | ".join(["column", *(label for label, _, _ in _DIALECTS), "meaning"])
    lines = [
        f"### `{view.name}`",
        "",
        _cell(view.comment),
        "",
        f"| {header} |",
        "|" + "---|" * (len(_DIALECTS) + 2),
    ]
    for column in view.columns:
        types = [column.type_on(family) for _, family, _ in _DIALECTS]
        cells = [f"`{column.name}`", *types, _cell(column.comment)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines) + "\n"
