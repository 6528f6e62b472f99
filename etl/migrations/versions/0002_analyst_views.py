"""Analyst views: referral_overview and referral_status_changes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 01:30:00.000000

The SQL differs per database (ordered string aggregation and date arithmetic); it and the
description of every column live in ``etl.views``, which the data dictionary reads too. On
PostgreSQL the views and their columns get comments; MariaDB and SQLite have no view comments.
"""

from collections.abc import Sequence

from alembic import op

from etl.views import REFERRAL_OVERVIEW, REFERRAL_STATUS_CHANGES

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = (REFERRAL_OVERVIEW, REFERRAL_STATUS_CHANGES)


def upgrade() -> None:
    dialect = op.get_context().dialect.name  # works offline (--sql) too
    for view in VIEWS:
        for statement in view.create_statements(dialect):
            op.execute(statement)


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(view.drop_statement())
