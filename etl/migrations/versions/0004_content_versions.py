"""A version is its content: content_hash for every stored referral; run cost columns.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 01:20:00.000000

Until now ``sync_state.content_hash`` was written only for documents that came without an eTag,
and a version was told apart by its eTag first. Listed documents carry no eTag, a GET by id does:
from this revision on the hash identifies a version, computed for every stored referral over the
document without ``eTag`` and ``@odata.*`` fields, so the same content read from a list page or
a GET is the same version. This migration fills the hash of every stored referral from its
stored payload (in batches), adds ``referral_history.origin`` and the request split of a run
(``sync_runs.list_requests``, ``get_requests``), and updates the column comments.
"""

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1000

# (table, column, type, nullable, old comment, new comment)
_COMMENTS: list[tuple[str, str, Any, bool, str, str]] = [
    (
        "referrals",
        "etag",
        sa.Text(),
        True,
        "eTag (or the ETag header), exactly as received, quotes included",
        "eTag (or the ETag header) last received for this version, quotes included; "
        "NULL when it came from a list page without one",
    ),
    (
        "referrals",
        "last_changed_at",
        None,
        False,
        "when the content last changed (a new eTag or content)",
        "when the content last changed (a new version: see sync_state.content_hash)",
    ),
    (
        "referral_history",
        "etag",
        sa.Text(),
        True,
        "eTag of this version",
        "eTag the version came with; NULL when it came from a list page without one",
    ),
    (
        "sync_state",
        "etag",
        sa.Text(),
        True,
        "eTag of the stored version (sent as If-None-Match)",
        "last eTag received for the stored version (sent as If-None-Match); NULL when none came",
    ),
    (
        "sync_state",
        "content_hash",
        sa.String(64),
        True,
        "SHA-256 of the canonical document, for when no eTag comes",
        "what identifies a version: SHA-256 of the stored document's canonical JSON without "
        "eTag and @odata.* fields, the same from a list page or a GET",
    ),
    (
        "sync_runs",
        "ids_total",
        sa.Integer(),
        False,
        "ids the run set out to fetch",
        "distinct ids the run handled: read from a list page or by id",
    ),
    (
        "sync_runs",
        "fetched",
        sa.Integer(),
        False,
        "ids answered 200 or 304",
        "ids read from a list page or answered 200 or 304 by id",
    ),
]


def _content_hash(document: dict[str, Any]) -> str:
    """Frozen copy of ``etl.flatten.content_hash`` as of this revision."""
    content = {k: v for k, v in document.items() if k != "eTag" and not k.startswith("@odata.")}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def UtcDateTime() -> sa.DateTime:  # noqa: N802 - reads like the model's type
    """A UTC instant, as this revision knows it: timestamptz, DATETIME(6) on MariaDB."""
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _set_comments(new: bool) -> None:
    if op.get_context().dialect.name == "sqlite":
        return  # SQLite keeps no column comments
    for table, column, type_, nullable, old_comment, new_comment in _COMMENTS:
        op.alter_column(
            table,
            column,
            existing_type=type_ if type_ is not None else UtcDateTime(),
            existing_nullable=nullable,
            comment=new_comment if new else old_comment,
            existing_comment=old_comment if new else new_comment,
        )


def _fill_hashes() -> None:
    conn = op.get_bind()
    state = sa.table("sync_state", sa.column("referral_id"), sa.column("content_hash"))
    last = ""
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT id, payload FROM referrals WHERE id > :last ORDER BY id LIMIT :n"
            ).bindparams(last=last, n=_BATCH)
        ).all()
        if not rows:
            return
        updates = []
        for referral_id, payload in rows:
            document = json.loads(payload) if isinstance(payload, str | bytes) else payload
            if isinstance(document, dict):
                updates.append({"rid": referral_id, "hash": _content_hash(document)})
        if updates:
            conn.execute(
                state.update()
                .where(state.c.referral_id == sa.bindparam("rid"))
                .values(content_hash=sa.bindparam("hash")),
                updates,
            )
        last = rows[-1][0]


def upgrade() -> None:
    op.add_column(
        "referral_history",
        sa.Column(
            "origin",
            sa.String(length=8),
            nullable=True,
            comment="where this version was read: list (a list page) or get (a GET by id); "
            "NULL for versions stored before this was recorded",
        ),
    )
    op.add_column(
        "sync_runs",
        sa.Column(
            "list_requests",
            sa.Integer(),
            server_default="0",
            nullable=False,
            comment="requests to the list endpoint (pages read, retries included)",
        ),
    )
    op.add_column(
        "sync_runs",
        sa.Column(
            "get_requests",
            sa.Integer(),
            server_default="0",
            nullable=False,
            comment="requests for one referral by id (retries included)",
        ),
    )
    _set_comments(new=True)
    if not op.get_context().as_sql:
        _fill_hashes()


def downgrade() -> None:
    _set_comments(new=False)
    for table, column in (
        ("sync_runs", "get_requests"),
        ("sync_runs", "list_requests"),
        ("referral_history", "origin"),
    ):
        if op.get_context().dialect.name == "sqlite":
            # In place (SQLite 3.35+): a batch copy of referral_history would break the views.
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        else:
            op.drop_column(table, column)
    # The hashes stay: the old code reads them only for documents without an eTag, where they
    # were already the hash of the whole document; a changed hash there costs one extra version.
