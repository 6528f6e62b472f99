"""The SQL schema as SQLAlchemy tables: the contract with analysts (docs/data-dictionary.md).

Names and meanings here are a public interface. Change them only through a new Alembic
migration that keeps old queries working. Every table and column carries a comment saying where
its value comes from, so BI tools can show it; constraint and index names follow
``NAMING_CONVENTION`` so migrations are the same on every database.

The tables are SQLAlchemy Core ``Table`` objects, all the job's reads and writes use: the ORM
(~0.1 s of import and class mapping at every start of the job) is left to whoever wants classes
mapped onto them (``DeclarativeBase`` subclasses with ``__table__ = TABLES[...]``, as the
benchmark's naive loader does).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.types import TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A UTC instant: ``timestamptz`` on PostgreSQL, ``DATETIME(6)`` holding UTC on MariaDB,
    ISO text on SQLite. Always returns timezone-aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in {"mysql", "mariadb"}:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(
        self,
        value: datetime | None,
        dialect: Dialect,  # noqa: ARG002 - TypeDecorator's signature; the conversion is the same on all
    ) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Id = String(64)
Money = Numeric(19, 4)
Rate = Numeric(20, 10)
Payload = JSON().with_variant(postgresql.JSONB(), "postgresql")
Short = String(64)
Serial = BigInteger().with_variant(Integer(), "sqlite")


metadata = MetaData(naming_convention=NAMING_CONVENTION)

# One column a line: the comments are the data dictionary's text (docs/data-dictionary.md).
# fmt: off
Table(
    "referrals",
    metadata,
    Column("id", Id, primary_key=True, comment="id: the referral's GUID"),
    Column("engagement_id", Id, index=True, comment="engagementId: referrals of one co-sell deal share it"),
    Column("name", Text(), comment="name"),
    Column("organization_id", Text(), comment="organizationId: the partner organization that owns this copy"),
    Column("organization_name", Text(), comment="organizationName"),
    Column("external_reference_id", Text(), comment="externalReferenceId: the partner's CRM id"),
    Column("status", Short, index=True, comment="status: None, New, Active, Closed (text, not an enum)"),
    Column("substatus", Text(), comment="substatus: Pending, Received, Accepted, Won, Lost, Declined, Expired, ..."),
    Column("status_reason", Text(), comment="statusReason"),
    Column("qualification", Text(), comment="qualification: None, Direct, MarketingQualified, SalesQualified"),
    Column("type", Text(), comment="type: Independent or Shared"),
    Column("direction", Text(), comment="direction: Incoming or Outgoing"),
    Column("created_at", UtcDateTime(), comment="createdDateTime (UTC)"),
    Column("updated_at", UtcDateTime(), index=True, comment="updatedDateTime (UTC)"),
    Column("expires_at", UtcDateTime(), comment="expirationDateTime (UTC)"),
    Column("accepted_at", UtcDateTime(), comment="acceptedDateTime (UTC)"),
    Column("deal_value", Money, comment="details.dealValue, numeric even when sent as a string"),
    Column("currency", Text(), comment="details.currency (ISO 4217)"),
    Column("closing_at", UtcDateTime(), comment="details.closingDateTime (UTC)"),
    Column("notes", Text(), comment="details.notes"),
    Column("consent_to_contact", Boolean(), comment="consent.consentToContact"),
    Column("consent_to_share_info", Boolean(), comment="consent.consentToToShareInfoWithOthers (the doubled To is the wire name)"),
    Column("invite_notes", Text(), comment="inviteContext.notes"),
    Column("invited_by_organization_id", Text(), comment="inviteContext.invitedBy.organizationId (msft = Microsoft)"),
    Column("invited_by_organization_name", Text(), comment="inviteContext.invitedBy.organizationName"),
    Column("etag", Text(), comment="eTag (or the ETag header) last received for this version, quotes included; NULL when it came from a list page without one"),
    Column("payload", Payload, nullable=False, comment="the whole document as received: nothing the API sent is lost"),
    Column("first_seen_at", UtcDateTime(), nullable=False, comment="when this row was first written"),
    Column("last_changed_at", UtcDateTime(), nullable=False, comment="when the content last changed (a new version: see sync_state.content_hash)"),
    Column("last_checked_at", UtcDateTime(), nullable=False, comment="last time the API confirmed this version (200 or 304)"),
    Column("deleted_at", UtcDateTime(), comment="set when the API answered 404; the rows stay; cleared when it comes back"),
    mysql_charset="utf8mb4",
    comment="One row per referral (lead or co-sell opportunity) the API has returned; current state.",
)

Table(
    "referral_customers",
    metadata,
    Column("referral_id", Id, ForeignKey("referrals.id", ondelete='CASCADE'), primary_key=True, comment="referrals.id"),
    Column("name", Text(), comment="customerProfile.name"),
    Column("size", Text(), comment="customerProfile.size: employee band, e.g. 10to50employees"),
    Column("address_line1", Text(), comment="customerProfile.address.addressLine1"),
    Column("address_line2", Text(), comment="customerProfile.address.addressLine2"),
    Column("city", Text(), comment="customerProfile.address.city"),
    Column("state", Text(), comment="customerProfile.address.state"),
    Column("region", Text(), comment="customerProfile.address.region"),
    Column("postal_code", Text(), comment="customerProfile.address.postalCode"),
    Column("country", Text(), comment="customerProfile.address.country (ISO 3166 alpha-2)"),
    mysql_charset="utf8mb4",
    comment="The customer of a referral (customerProfile and its address); one row per referral.",
)

Table(
    "referral_customer_ids",
    metadata,
    Column("referral_id", Id, ForeignKey("referrals.id", ondelete='CASCADE'), primary_key=True, comment="referrals.id"),
    Column("position", Integer(), primary_key=True, comment="order in customerProfile.ids, from 0"),
    Column("profile_type", Text(), comment="profileType (Duns, External) or the object key (e.g. CrmId)"),
    Column("value", Text(), comment="id, or the object value"),
    mysql_charset="utf8mb4",
    comment="External ids of the customer (customerProfile.ids, array or object shape).",
)

Table(
    "referral_contacts",
    metadata,
    Column("referral_id", Id, ForeignKey("referrals.id", ondelete='CASCADE'), primary_key=True, comment="referrals.id"),
    Column("side", String(16), primary_key=True, comment="customer (customerProfile.team) or team (top-level team)"),
    Column("position", Integer(), primary_key=True, comment="order in the array, from 0"),
    Column("first_name", Text(), comment="firstName"),
    Column("last_name", Text(), comment="lastName"),
    Column("email", Text(), comment="email"),
    Column("phone_number", Text(), comment="phoneNumber"),
    Column("title", Text(), comment="title"),
    Column("locale", Text(), comment="contactPreference.locale"),
    Column("disable_notifications", Boolean(), comment="contactPreference.disableNotifications"),
    mysql_charset="utf8mb4",
    comment="People on a referral, in array order: the customer's contacts and the partner/Microsoft team.",
)

Table(
    "referral_requirements",
    metadata,
    Column("referral_id", Id, ForeignKey("referrals.id", ondelete='CASCADE'), primary_key=True, comment="referrals.id"),
    Column("kind", Short, primary_key=True, comment="the array's JSON name: industries, products, services, solutions, offers, ..."),
    Column("position", Integer(), primary_key=True, comment="order in the array, from 0"),
    Column("item_id", String(255), comment="id of the item"),
    Column("name", Text(), comment="name (solutions)"),
    Column("item_type", Text(), comment="type (solutions: None, Category, Name)"),
    Index(None, "kind", "item_id"),
    mysql_charset="utf8mb4",
    comment="Every array under details.requirements (industries, products, services, solutions, and newer ones), in order.",
)

Table(
    "referral_targets",
    metadata,
    Column("referral_id", Id, ForeignKey("referrals.id", ondelete='CASCADE'), primary_key=True, comment="referrals.id"),
    Column("position", Integer(), primary_key=True, comment="order in target, from 0"),
    Column("target_type", Text(), comment="type: None, BusinessProfileLocation, SolutionProfile"),
    Column("target_id", Text(), comment="id"),
    mysql_charset="utf8mb4",
    comment="Targets of a referral (target array).",
)

Table(
    "referral_history",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True, comment="surrogate key"),
    Column("referral_id", Id, nullable=False, index=True, comment="referrals.id"),
    Column("etag", Text(), comment="eTag the version came with; NULL when it came from a list page without one"),
    Column("valid_from", UtcDateTime(), nullable=False, comment="when the sync first saw this version"),
    Column("valid_to", UtcDateTime(), comment="when a newer version replaced it; NULL for the current version"),
    Column("status", Short, comment="status in this version"),
    Column("substatus", Text(), comment="substatus in this version"),
    Column("qualification", Text(), comment="qualification in this version"),
    Column("deal_value", Money, comment="details.dealValue in this version"),
    Column("currency", Text(), comment="details.currency in this version"),
    Column("closing_at", UtcDateTime(), comment="details.closingDateTime in this version"),
    Column("updated_at", UtcDateTime(), comment="updatedDateTime of this version"),
    Column("payload", Payload, nullable=False, comment="the whole document of this version"),
    Column("origin", String(8), comment="where this version was read: list (a list page) or get (a GET by id); NULL for versions stored before this was recorded"),
    mysql_charset="utf8mb4",
    comment="One row per version of a referral seen by the sync (slowly changing dimension, type 2).",
)

Table(
    "sync_state",
    metadata,
    Column("referral_id", Id, primary_key=True, comment="the referral id being tracked"),
    Column("source", String(16), nullable=False, comment="how it became tracked: file, discovery, webhook, manual"),
    Column("added_at", UtcDateTime(), nullable=False, comment="when it became tracked"),
    Column("etag", Text(), comment="last eTag received for the stored version (sent as If-None-Match); NULL when none came"),
    Column("content_hash", String(64), comment="what identifies a version: SHA-256 of the stored document's canonical JSON without eTag and @odata.* fields, the same from a list page or a GET"),
    Column("last_status_code", Integer(), comment="HTTP status of the last attempt (0 = no answer)"),
    Column("last_attempt_at", UtcDateTime(), comment="when it was last asked for"),
    Column("last_success_at", UtcDateTime(), comment="when it was last fetched successfully (200, 304 or 404)"),
    Column("next_attempt_at", UtcDateTime(), index=True, comment="when it is due again"),
    Column("consecutive_failures", Integer(), nullable=False, default=0, comment="failed attempts since the last success"),
    Column("last_error", Text(), comment="the last error for this id, NULL after a success"),
    mysql_charset="utf8mb4",
    comment="The ledger: one row per tracked id, including ids that never fetched successfully.",
)

Table(
    "sync_runs",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True, comment="run number"),
    Column("started_at", UtcDateTime(), nullable=False, comment="when the run started"),
    Column("finished_at", UtcDateTime(), comment="when it ended, NULL while running"),
    Column("trigger", String(16), nullable=False, comment="schedule, cli or backfill"),
    Column("status", String(16), nullable=False, comment="running, succeeded, partial, failed, interrupted, skipped"),
    Column("ids_total", Integer(), nullable=False, default=0, comment="distinct ids the run handled: read from a list page or by id"),
    Column("fetched", Integer(), nullable=False, default=0, comment="ids read from a list page or answered 200 or 304 by id"),
    Column("unchanged", Integer(), nullable=False, default=0, comment="ids whose content had not changed"),
    Column("created", Integer(), nullable=False, default=0, comment="referrals stored for the first time"),
    Column("updated", Integer(), nullable=False, default=0, comment="referrals whose content changed"),
    Column("not_found", Integer(), nullable=False, default=0, comment="ids answered 404"),
    Column("failed", Integer(), nullable=False, default=0, comment="ids that failed this run"),
    Column("requests", Integer(), nullable=False, default=0, comment="HTTP requests sent to the API"),
    Column("throttled", Integer(), nullable=False, default=0, comment="requests answered 429"),
    Column("list_requests", Integer(), nullable=False, default=0, server_default='0', comment="requests to the list endpoint (pages read, retries included)"),
    Column("get_requests", Integer(), nullable=False, default=0, server_default='0', comment="requests for one referral by id (retries included)"),
    Column("message", Text(), comment="summary or the error that ended the run"),
    Column("lease_name", Short, comment="the lease (sync_locks.name) the run held; NULL for runs without one"),
    Column("lease_owner", String(255), comment="who held it (sync_locks.owner): a takeover of that lease fails only these runs"),
    mysql_charset="utf8mb4",
    comment="One row per run of the job.",
)

Table(
    "sync_locks",
    metadata,
    Column("name", Short, primary_key=True, comment="what is locked (sync)"),
    Column("owner", String(255), nullable=False, comment="host, process and run holding the lease"),
    Column("acquired_at", UtcDateTime(), nullable=False, comment="when the lease was taken"),
    Column("expires_at", UtcDateTime(), nullable=False, comment="the lease ends then unless renewed"),
    mysql_charset="utf8mb4",
    comment="Leases that keep two runs from working at once; an expired lease may be taken over.",
)

Table(
    "sync_cursors",
    metadata,
    Column("name", Short, primary_key=True, comment="which cursor (discovery)"),
    Column("position", UtcDateTime(), comment="the newest updatedDateTime seen"),
    Column("updated_at", UtcDateTime(), nullable=False, comment="when the cursor last moved"),
    mysql_charset="utf8mb4",
    comment="Positions the job keeps between runs, such as discovery's high-water mark.",
)

Table(
    "currency_rates",
    metadata,
    Column("currency", String(3), primary_key=True, comment="ISO 4217 code, as in details.currency (e.g. EUR)"),
    Column("valid_from", UtcDateTime(), primary_key=True, comment="the rate applies from this instant (UTC) until the next valid_from of the currency"),
    Column("rate", Rate, nullable=False, comment="one unit of the currency in the reporting currency (the reporting currency itself: 1)"),
    mysql_charset="utf8mb4",
    comment="Rates from each currency to the reporting currency, filled by `referrals-etl rates load`; one row per currency and date it applies from.",
)

Table(
    "webhook_events",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True, comment="surrogate key"),
    Column("event_name", Short, nullable=False, comment="EventName: referral-created, referral-updated, related-referral-..."),
    Column("referral_id", Id, nullable=False, comment="the referral named by the event (last segment of ResourceUri)"),
    Column("resource_change_utc_date", String(40), nullable=False, comment="ResourceChangeUtcDate as sent (the event has no id of its own)"),
    Column("changed_at", UtcDateTime(), comment="ResourceChangeUtcDate as a UTC instant (NULL when it did not parse)"),
    Column("received_at", UtcDateTime(), nullable=False, comment="when the receiver accepted it"),
    Column("processed_at", UtcDateTime(), comment="when its referral was fetched and stored after it; NULL while due"),
    UniqueConstraint("referral_id", "event_name", "resource_change_utc_date", name="uq_webhook_events_event"),
    Index(None, "processed_at", "referral_id"),
    mysql_charset="utf8mb4",
    comment="One row per distinct Partner Center callback the receiver accepted (a repeated delivery is recorded once); written before the callback is acknowledged.",
)

# fmt: on

TABLES = metadata.tables
CHILD_TABLES = (
    "referral_customers",
    "referral_customer_ids",
    "referral_contacts",
    "referral_requirements",
    "referral_targets",
)
