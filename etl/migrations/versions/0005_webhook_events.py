"""webhook_events: the callbacks the receiver accepted, committed before they are acknowledged.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 01:30:00.000000

A repeated delivery of one event (Partner Center retries, and sends no event id) is recorded
once: the unique key is what identifies an event (referral, event name, ResourceChangeUtcDate).
The index on (processed_at, referral_id) is what the worker reads: the ids still due.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql


revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def UtcDateTime() -> sa.DateTime:  # noqa: N802 - reads like the model's type
    """A UTC instant, as this revision made it: timestamptz, DATETIME(6) on MariaDB."""
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
            comment="surrogate key",
        ),
        sa.Column(
            "event_name",
            sa.String(length=64),
            nullable=False,
            comment="EventName: referral-created, referral-updated, related-referral-...",
        ),
        sa.Column(
            "referral_id",
            sa.String(length=64),
            nullable=False,
            comment="the referral named by the event (last segment of ResourceUri)",
        ),
        sa.Column(
            "resource_change_utc_date",
            sa.String(length=40),
            nullable=False,
            comment="ResourceChangeUtcDate as sent (the event has no id of its own)",
        ),
        sa.Column(
            "changed_at",
            UtcDateTime(),
            nullable=True,
            comment="ResourceChangeUtcDate as a UTC instant (NULL when it did not parse)",
        ),
        sa.Column(
            "received_at", UtcDateTime(), nullable=False, comment="when the receiver accepted it"
        ),
        sa.Column(
            "processed_at",
            UtcDateTime(),
            nullable=True,
            comment="when its referral was fetched and stored after it; NULL while due",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint(
            "referral_id",
            "event_name",
            "resource_change_utc_date",
            name=op.f("uq_webhook_events_event"),
        ),
        comment=(
            "One row per distinct Partner Center callback the receiver accepted (a repeated "
            "delivery is recorded once); written before the callback is acknowledged."
        ),
        mysql_charset="utf8mb4",
    )
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_events_processed_at_referral_id"),
            ["processed_at", "referral_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_events_processed_at_referral_id"))
    op.drop_table("webhook_events")
