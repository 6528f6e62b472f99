"""Referrals, their child tables, history and the sync bookkeeping tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 00:55:53.410547
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def UtcDateTime() -> sa.DateTime:  # noqa: N802 - reads like the model's type
    """A UTC instant, as this revision made it: timestamptz, DATETIME(6) on MariaDB."""
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "referral_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
            comment="surrogate key",
        ),
        sa.Column("referral_id", sa.String(length=64), nullable=False, comment="referrals.id"),
        sa.Column("etag", sa.Text(), nullable=True, comment="eTag of this version"),
        sa.Column(
            "valid_from",
            UtcDateTime(),
            nullable=False,
            comment="when the sync first saw this version",
        ),
        sa.Column(
            "valid_to",
            UtcDateTime(),
            nullable=True,
            comment="when a newer version replaced it; NULL for the current version",
        ),
        sa.Column("status", sa.String(length=64), nullable=True, comment="status in this version"),
        sa.Column("substatus", sa.Text(), nullable=True, comment="substatus in this version"),
        sa.Column(
            "qualification", sa.Text(), nullable=True, comment="qualification in this version"
        ),
        sa.Column(
            "deal_value",
            sa.Numeric(precision=19, scale=4),
            nullable=True,
            comment="details.dealValue in this version",
        ),
        sa.Column("currency", sa.Text(), nullable=True, comment="details.currency in this version"),
        sa.Column(
            "closing_at",
            UtcDateTime(),
            nullable=True,
            comment="details.closingDateTime in this version",
        ),
        sa.Column(
            "updated_at", UtcDateTime(), nullable=True, comment="updatedDateTime of this version"
        ),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="the whole document of this version",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral_history")),
        comment="One row per version of a referral seen by the sync (slowly changing dimension, type 2).",
        mysql_charset="utf8mb4",
    )
    with op.batch_alter_table("referral_history", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_referral_history_referral_id"), ["referral_id"], unique=False
        )

    op.create_table(
        "referrals",
        sa.Column("id", sa.String(length=64), nullable=False, comment="id: the referral's GUID"),
        sa.Column(
            "engagement_id",
            sa.String(length=64),
            nullable=True,
            comment="engagementId: referrals of one co-sell deal share it",
        ),
        sa.Column("name", sa.Text(), nullable=True, comment="name"),
        sa.Column(
            "organization_id",
            sa.Text(),
            nullable=True,
            comment="organizationId: the partner organization that owns this copy",
        ),
        sa.Column("organization_name", sa.Text(), nullable=True, comment="organizationName"),
        sa.Column(
            "external_reference_id",
            sa.Text(),
            nullable=True,
            comment="externalReferenceId: the partner's CRM id",
        ),
        sa.Column(
            "status",
            sa.String(length=64),
            nullable=True,
            comment="status: None, New, Active, Closed (text, not an enum)",
        ),
        sa.Column(
            "substatus",
            sa.Text(),
            nullable=True,
            comment="substatus: Pending, Received, Accepted, Won, Lost, Declined, Expired, ...",
        ),
        sa.Column("status_reason", sa.Text(), nullable=True, comment="statusReason"),
        sa.Column(
            "qualification",
            sa.Text(),
            nullable=True,
            comment="qualification: None, Direct, MarketingQualified, SalesQualified",
        ),
        sa.Column("type", sa.Text(), nullable=True, comment="type: Independent or Shared"),
        sa.Column("direction", sa.Text(), nullable=True, comment="direction: Incoming or Outgoing"),
        sa.Column("created_at", UtcDateTime(), nullable=True, comment="createdDateTime (UTC)"),
        sa.Column("updated_at", UtcDateTime(), nullable=True, comment="updatedDateTime (UTC)"),
        sa.Column("expires_at", UtcDateTime(), nullable=True, comment="expirationDateTime (UTC)"),
        sa.Column("accepted_at", UtcDateTime(), nullable=True, comment="acceptedDateTime (UTC)"),
        sa.Column(
            "deal_value",
            sa.Numeric(precision=19, scale=4),
            nullable=True,
            comment="details.dealValue, numeric even when sent as a string",
        ),
        sa.Column("currency", sa.Text(), nullable=True, comment="details.currency (ISO 4217)"),
        sa.Column(
            "closing_at", UtcDateTime(), nullable=True, comment="details.closingDateTime (UTC)"
        ),
        sa.Column("notes", sa.Text(), nullable=True, comment="details.notes"),
        sa.Column(
            "consent_to_contact", sa.Boolean(), nullable=True, comment="consent.consentToContact"
        ),
        sa.Column(
            "consent_to_share_info",
            sa.Boolean(),
            nullable=True,
            comment="consent.consentToToShareInfoWithOthers (the doubled To is the wire name)",
        ),
        sa.Column("invite_notes", sa.Text(), nullable=True, comment="inviteContext.notes"),
        sa.Column(
            "invited_by_organization_id",
            sa.Text(),
            nullable=True,
            comment="inviteContext.invitedBy.organizationId (msft = Microsoft)",
        ),
        sa.Column(
            "invited_by_organization_name",
            sa.Text(),
            nullable=True,
            comment="inviteContext.invitedBy.organizationName",
        ),
        sa.Column(
            "etag",
            sa.Text(),
            nullable=True,
            comment="eTag (or the ETag header), exactly as received, quotes included",
        ),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="the whole document as received: nothing the API sent is lost",
        ),
        sa.Column(
            "first_seen_at",
            UtcDateTime(),
            nullable=False,
            comment="when this row was first written",
        ),
        sa.Column(
            "last_changed_at",
            UtcDateTime(),
            nullable=False,
            comment="when the content last changed (a new eTag or content)",
        ),
        sa.Column(
            "last_checked_at",
            UtcDateTime(),
            nullable=False,
            comment="last time the API confirmed this version (200 or 304)",
        ),
        sa.Column(
            "deleted_at",
            UtcDateTime(),
            nullable=True,
            comment="set when the API answered 404; the rows stay; cleared when it comes back",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrals")),
        comment="One row per referral (lead or co-sell opportunity) the API has returned; current state.",
        mysql_charset="utf8mb4",
    )
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_referrals_engagement_id"), ["engagement_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_referrals_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_referrals_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "sync_cursors",
        sa.Column("name", sa.String(length=64), nullable=False, comment="which cursor (discovery)"),
        sa.Column(
            "position", UtcDateTime(), nullable=True, comment="the newest updatedDateTime seen"
        ),
        sa.Column(
            "updated_at", UtcDateTime(), nullable=False, comment="when the cursor last moved"
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sync_cursors")),
        comment="Positions the job keeps between runs, such as discovery's high-water mark.",
        mysql_charset="utf8mb4",
    )
    op.create_table(
        "sync_locks",
        sa.Column("name", sa.String(length=64), nullable=False, comment="what is locked (sync)"),
        sa.Column(
            "owner",
            sa.String(length=255),
            nullable=False,
            comment="host, process and run holding the lease",
        ),
        sa.Column("acquired_at", UtcDateTime(), nullable=False, comment="when the lease was taken"),
        sa.Column(
            "expires_at",
            UtcDateTime(),
            nullable=False,
            comment="the lease ends then unless renewed",
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sync_locks")),
        comment="Leases that keep two runs from working at once; an expired lease may be taken over.",
        mysql_charset="utf8mb4",
    )
    op.create_table(
        "sync_runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
            comment="run number",
        ),
        sa.Column("started_at", UtcDateTime(), nullable=False, comment="when the run started"),
        sa.Column(
            "finished_at", UtcDateTime(), nullable=True, comment="when it ended, NULL while running"
        ),
        sa.Column(
            "trigger", sa.String(length=16), nullable=False, comment="schedule, cli or backfill"
        ),
        sa.Column(
            "status",
            sa.String(length=16),
            nullable=False,
            comment="running, succeeded, partial, failed, interrupted, skipped",
        ),
        sa.Column(
            "ids_total", sa.Integer(), nullable=False, comment="ids the run set out to fetch"
        ),
        sa.Column("fetched", sa.Integer(), nullable=False, comment="ids answered 200 or 304"),
        sa.Column(
            "unchanged", sa.Integer(), nullable=False, comment="ids whose content had not changed"
        ),
        sa.Column(
            "created", sa.Integer(), nullable=False, comment="referrals stored for the first time"
        ),
        sa.Column(
            "updated", sa.Integer(), nullable=False, comment="referrals whose content changed"
        ),
        sa.Column("not_found", sa.Integer(), nullable=False, comment="ids answered 404"),
        sa.Column("failed", sa.Integer(), nullable=False, comment="ids that failed this run"),
        sa.Column(
            "requests", sa.Integer(), nullable=False, comment="HTTP requests sent to the API"
        ),
        sa.Column("throttled", sa.Integer(), nullable=False, comment="requests answered 429"),
        sa.Column(
            "message", sa.Text(), nullable=True, comment="summary or the error that ended the run"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
        comment="One row per run of the job.",
        mysql_charset="utf8mb4",
    )
    op.create_table(
        "sync_state",
        sa.Column(
            "referral_id",
            sa.String(length=64),
            nullable=False,
            comment="the referral id being tracked",
        ),
        sa.Column(
            "source",
            sa.String(length=16),
            nullable=False,
            comment="how it became tracked: file, discovery, webhook, manual",
        ),
        sa.Column("added_at", UtcDateTime(), nullable=False, comment="when it became tracked"),
        sa.Column(
            "etag",
            sa.Text(),
            nullable=True,
            comment="eTag of the stored version (sent as If-None-Match)",
        ),
        sa.Column(
            "content_hash",
            sa.String(length=64),
            nullable=True,
            comment="SHA-256 of the canonical document, for when no eTag comes",
        ),
        sa.Column(
            "last_status_code",
            sa.Integer(),
            nullable=True,
            comment="HTTP status of the last attempt (0 = no answer)",
        ),
        sa.Column(
            "last_attempt_at", UtcDateTime(), nullable=True, comment="when it was last asked for"
        ),
        sa.Column(
            "last_success_at",
            UtcDateTime(),
            nullable=True,
            comment="when it was last fetched successfully (200, 304 or 404)",
        ),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=True, comment="when it is due again"),
        sa.Column(
            "consecutive_failures",
            sa.Integer(),
            nullable=False,
            comment="failed attempts since the last success",
        ),
        sa.Column(
            "last_error",
            sa.Text(),
            nullable=True,
            comment="the last error for this id, NULL after a success",
        ),
        sa.PrimaryKeyConstraint("referral_id", name=op.f("pk_sync_state")),
        comment="The ledger: one row per tracked id, including ids that never fetched successfully.",
        mysql_charset="utf8mb4",
    )
    with op.batch_alter_table("sync_state", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sync_state_next_attempt_at"), ["next_attempt_at"], unique=False
        )

    op.create_table(
        "referral_contacts",
        sa.Column("referral_id", sa.String(length=64), nullable=False, comment="referrals.id"),
        sa.Column(
            "side",
            sa.String(length=16),
            nullable=False,
            comment="customer (customerProfile.team) or team (top-level team)",
        ),
        sa.Column("position", sa.Integer(), nullable=False, comment="order in the array, from 0"),
        sa.Column("first_name", sa.Text(), nullable=True, comment="firstName"),
        sa.Column("last_name", sa.Text(), nullable=True, comment="lastName"),
        sa.Column("email", sa.Text(), nullable=True, comment="email"),
        sa.Column("phone_number", sa.Text(), nullable=True, comment="phoneNumber"),
        sa.Column("title", sa.Text(), nullable=True, comment="title"),
        sa.Column("locale", sa.Text(), nullable=True, comment="contactPreference.locale"),
        sa.Column(
            "disable_notifications",
            sa.Boolean(),
            nullable=True,
            comment="contactPreference.disableNotifications",
        ),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referrals.id"],
            name=op.f("fk_referral_contacts_referral_id_referrals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "referral_id", "side", "position", name=op.f("pk_referral_contacts")
        ),
        comment="People on a referral, in array order: the customer's contacts and the partner/Microsoft team.",
        mysql_charset="utf8mb4",
    )
    op.create_table(
        "referral_customer_ids",
        sa.Column("referral_id", sa.String(length=64), nullable=False, comment="referrals.id"),
        sa.Column(
            "position", sa.Integer(), nullable=False, comment="order in customerProfile.ids, from 0"
        ),
        sa.Column(
            "profile_type",
            sa.Text(),
            nullable=True,
            comment="profileType (Duns, External) or the object key (e.g. CrmId)",
        ),
        sa.Column("value", sa.Text(), nullable=True, comment="id, or the object value"),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referrals.id"],
            name=op.f("fk_referral_customer_ids_referral_id_referrals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("referral_id", "position", name=op.f("pk_referral_customer_ids")),
        comment="External ids of the customer (customerProfile.ids, array or object shape).",
        mysql_charset="utf8mb4",
    )
    op.create_table(
        "referral_customers",
        sa.Column("referral_id", sa.String(length=64), nullable=False, comment="referrals.id"),
        sa.Column("name", sa.Text(), nullable=True, comment="customerProfile.name"),
        sa.Column(
            "size",
            sa.Text(),
            nullable=True,
            comment="customerProfile.size: employee band, e.g. 10to50employees",
        ),
        sa.Column(
            "address_line1",
            sa.Text(),
            nullable=True,
            comment="customerProfile.address.addressLine1",
        ),
        sa.Column(
            "address_line2",
            sa.Text(),
            nullable=True,
            comment="customerProfile.address.addressLine2",
        ),
        sa.Column("city", sa.Text(), nullable=True, comment="customerProfile.address.city"),
        sa.Column("state", sa.Text(), nullable=True, comment="customerProfile.address.state"),
        sa.Column("region", sa.Text(), nullable=True, comment="customerProfile.address.region"),
        sa.Column(
            "postal_code", sa.Text(), nullable=True, comment="customerProfile.address.postalCode"
        ),
        sa.Column(
            "country",
            sa.Text(),
            nullable=True,
            comment="customerProfile.address.country (ISO 3166 alpha-2)",
        ),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referrals.id"],
            name=op.f("fk_referral_customers_referral_id_referrals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("referral_id", name=op.f("pk_referral_customers")),
        comment="The customer of a referral (customerProfile and its address); one row per referral.",
        mysql_charset="utf8mb4",
    )
    op.create_table(
        "referral_requirements",
        sa.Column("referral_id", sa.String(length=64), nullable=False, comment="referrals.id"),
        sa.Column(
            "kind",
            sa.String(length=64),
            nullable=False,
            comment="the array's JSON name: industries, products, services, solutions, offers, ...",
        ),
        sa.Column("position", sa.Integer(), nullable=False, comment="order in the array, from 0"),
        sa.Column("item_id", sa.String(length=255), nullable=True, comment="id of the item"),
        sa.Column("name", sa.Text(), nullable=True, comment="name (solutions)"),
        sa.Column(
            "item_type", sa.Text(), nullable=True, comment="type (solutions: None, Category, Name)"
        ),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referrals.id"],
            name=op.f("fk_referral_requirements_referral_id_referrals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "referral_id", "kind", "position", name=op.f("pk_referral_requirements")
        ),
        comment="Every array under details.requirements (industries, products, services, solutions, and newer ones), in order.",
        mysql_charset="utf8mb4",
    )
    with op.batch_alter_table("referral_requirements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_referral_requirements_kind_item_id"), ["kind", "item_id"], unique=False
        )

    op.create_table(
        "referral_targets",
        sa.Column("referral_id", sa.String(length=64), nullable=False, comment="referrals.id"),
        sa.Column("position", sa.Integer(), nullable=False, comment="order in target, from 0"),
        sa.Column(
            "target_type",
            sa.Text(),
            nullable=True,
            comment="type: None, BusinessProfileLocation, SolutionProfile",
        ),
        sa.Column("target_id", sa.Text(), nullable=True, comment="id"),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referrals.id"],
            name=op.f("fk_referral_targets_referral_id_referrals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("referral_id", "position", name=op.f("pk_referral_targets")),
        comment="Targets of a referral (target array).",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("referral_targets")
    with op.batch_alter_table("referral_requirements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_referral_requirements_kind_item_id"))

    op.drop_table("referral_requirements")
    op.drop_table("referral_customers")
    op.drop_table("referral_customer_ids")
    op.drop_table("referral_contacts")
    with op.batch_alter_table("sync_state", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_state_next_attempt_at"))

    op.drop_table("sync_state")
    op.drop_table("sync_runs")
    op.drop_table("sync_locks")
    op.drop_table("sync_cursors")
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_referrals_updated_at"))
        batch_op.drop_index(batch_op.f("ix_referrals_status"))
        batch_op.drop_index(batch_op.f("ix_referrals_engagement_id"))

    op.drop_table("referrals")
    with op.batch_alter_table("referral_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_referral_history_referral_id"))

    op.drop_table("referral_history")
