"""Runs record the lease they hold: sync_runs.lease_name and sync_runs.lease_owner.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 01:30:00.000000

A lease takeover (the holder's lease expired: its process died) now fails only the runs that
held that lease, so the live shards of a sharded backfill keep running. Both columns are
nullable: runs recorded before this revision keep working and simply name no lease.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(
            sa.Column(
                "lease_name",
                sa.String(64),
                nullable=True,
                comment="the lease (sync_locks.name) the run held; NULL for runs without one",
            )
        )
        batch.add_column(
            sa.Column(
                "lease_owner",
                sa.String(255),
                nullable=True,
                comment=(
                    "who held it (sync_locks.owner): a takeover of that lease fails only "
                    "these runs"
                ),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("lease_owner")
        batch.drop_column("lease_name")
