"""The SQL schema as SQLAlchemy 2 typed models: the contract with analysts (docs/data-dictionary.md).

Names and meanings here are a public interface. Change them only through a new Alembic
migration that keeps old queries working. Every table and column carries a comment saying where
its value comes from, so BI tools can show it; constraint and index names follow
``NAMING_CONVENTION`` so migrations are the same on every database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
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

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Id = String(64)
Money = Numeric(19, 4)
Rate = Numeric(20, 10)
Payload = JSON().with_variant(postgresql.JSONB(), "postgresql")
Short = String(64)
Serial = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UtcDateTime(),
        Decimal: Money,
        str: Text(),
    }


def _fk() -> ForeignKey:
    return ForeignKey("referrals.id", ondelete="CASCADE")


class Referral(Base):
    __tablename__ = "referrals"
    __table_args__ = {
        "mysql_charset": "utf8mb4",
        "comment": "One row per referral (lead or co-sell opportunity) the API has returned; current state.",
    }

    id: Mapped[str] = mapped_column(Id, primary_key=True, comment="id: the referral's GUID")
    engagement_id: Mapped[str | None] = mapped_column(
        Id, index=True, comment="engagementId: referrals of one co-sell deal share it"
    )
    name: Mapped[str | None] = mapped_column(comment="name")
    organization_id: Mapped[str | None] = mapped_column(
        comment="organizationId: the partner organization that owns this copy"
    )
    organization_name: Mapped[str | None] = mapped_column(comment="organizationName")
    external_reference_id: Mapped[str | None] = mapped_column(
        comment="externalReferenceId: the partner's CRM id"
    )
    status: Mapped[str | None] = mapped_column(
        Short, index=True, comment="status: None, New, Active, Closed (text, not an enum)"
    )
    substatus: Mapped[str | None] = mapped_column(
        comment="substatus: Pending, Received, Accepted, Won, Lost, Declined, Expired, ..."
    )
    status_reason: Mapped[str | None] = mapped_column(comment="statusReason")
    qualification: Mapped[str | None] = mapped_column(
        comment="qualification: None, Direct, MarketingQualified, SalesQualified"
    )
    type: Mapped[str | None] = mapped_column(comment="type: Independent or Shared")
    direction: Mapped[str | None] = mapped_column(comment="direction: Incoming or Outgoing")
    created_at: Mapped[datetime | None] = mapped_column(comment="createdDateTime (UTC)")
    updated_at: Mapped[datetime | None] = mapped_column(index=True, comment="updatedDateTime (UTC)")
    expires_at: Mapped[datetime | None] = mapped_column(comment="expirationDateTime (UTC)")
    accepted_at: Mapped[datetime | None] = mapped_column(comment="acceptedDateTime (UTC)")
    deal_value: Mapped[Decimal | None] = mapped_column(
        comment="details.dealValue, numeric even when sent as a string"
    )
    currency: Mapped[str | None] = mapped_column(comment="details.currency (ISO 4217)")
    closing_at: Mapped[datetime | None] = mapped_column(comment="details.closingDateTime (UTC)")
    notes: Mapped[str | None] = mapped_column(comment="details.notes")
    consent_to_contact: Mapped[bool | None] = mapped_column(
        Boolean, comment="consent.consentToContact"
    )
    consent_to_share_info: Mapped[bool | None] = mapped_column(
        Boolean, comment="consent.consentToToShareInfoWithOthers (the doubled To is the wire name)"
    )
    invite_notes: Mapped[str | None] = mapped_column(comment="inviteContext.notes")
    invited_by_organization_id: Mapped[str | None] = mapped_column(
        comment="inviteContext.invitedBy.organizationId (msft = Microsoft)"
    )
    invited_by_organization_name: Mapped[str | None] = mapped_column(
        comment="inviteContext.invitedBy.organizationName"
    )
    etag: Mapped[str | None] = mapped_column(
        comment="eTag (or the ETag header) last received for this version, quotes included; "
        "NULL when it came from a list page without one"
    )
    payload: Mapped[Any] = mapped_column(
        Payload, comment="the whole document as received: nothing the API sent is lost"
    )
    first_seen_at: Mapped[datetime] = mapped_column(comment="when this row was first written")
    last_changed_at: Mapped[datetime] = mapped_column(
        comment="when the content last changed (a new version: see sync_state.content_hash)"
    )
    last_checked_at: Mapped[datetime] = mapped_column(
        comment="last time the API confirmed this version (200 or 304)"
    )
    deleted_at: Mapped[datetime | None] = mapped_column(
        comment="set when the API answered 404; the rows stay; cleared when it comes back"
    )


class ReferralCustomer(Base):
    __tablename__ = "referral_customers"
    __table_args__ = {
        "mysql_charset": "utf8mb4",
        "comment": "The customer of a referral (customerProfile and its address); one row per referral.",
    }

    referral_id: Mapped[str] = mapped_column(Id, _fk(), primary_key=True, comment="referrals.id")
    name: Mapped[str | None] = mapped_column(comment="customerProfile.name")
    size: Mapped[str | None] = mapped_column(
        comment="customerProfile.size: employee band, e.g. 10to50employees"
    )
    address_line1: Mapped[str | None] = mapped_column(
        comment="customerProfile.address.addressLine1"
    )
    address_line2: Mapped[str | None] = mapped_column(
        comment="customerProfile.address.addressLine2"
    )
    city: Mapped[str | None] = mapped_column(comment="customerProfile.address.city")
    state: Mapped[str | None] = mapped_column(comment="customerProfile.address.state")
    region: Mapped[str | None] = mapped_column(comment="customerProfile.address.region")
    postal_code: Mapped[str | None] = mapped_column(comment="customerProfile.address.postalCode")
    country: Mapped[str | None] = mapped_column(
        comment="customerProfile.address.country (ISO 3166 alpha-2)"
    )


class ReferralCustomerId(Base):
    __tablename__ = "referral_customer_ids"
    __table_args__ = {
        "mysql_charset": "utf8mb4",
        "comment": "External ids of the customer (customerProfile.ids, array or object shape).",
    }

    referral_id: Mapped[str] = mapped_column(Id, _fk(), primary_key=True, comment="referrals.id")
    position: Mapped[int] = mapped_column(
        Integer, primary_key=True, comment="order in customerProfile.ids, from 0"
    )
    profile_type: Mapped[str | None] = mapped_column(
        comment="profileType (Duns, External) or the object key (e.g. CrmId)"
    )
    value: Mapped[str | None] = mapped_column(comment="id, or the object value")


class ReferralContact(Base):
    __tablename__ = "referral_contacts"
    __table_args__ = {
        "mysql_charset": "utf8mb4",
        "comment": "People on a referral, in array order: the customer's contacts and the partner/Microsoft team.",
    }

    referral_id: Mapped[str] = mapped_column(Id, _fk(), primary_key=True, comment="referrals.id")
    side: Mapped[str] = mapped_column(
        String(16),
        primary_key=True,
        comment="customer (customerProfile.team) or team (top-level team)",
    )
    position: Mapped[int] = mapped_column(
        Integer, primary_key=True, comment="order in the array, from 0"
    )
    first_name: Mapped[str | None] = mapped_column(comment="firstName")
    last_name: Mapped[str | None] = mapped_column(comment="lastName")
    email: Mapped[str | None] = mapped_column(comment="email")
    phone_number: Mapped[str | None] = mapped_column(comment="phoneNumber")
    title: Mapped[str | None] = mapped_column(comment="title")
    locale: Mapped[str | None] = mapped_column(comment="contactPreference.locale")
    disable_notifications: Mapped[bool | None] = mapped_column(
        Boolean, comment="contactPreference.disableNotifications"
    )


class ReferralRequirement(Base):
    __tablename__ = "referral_requirements"
    __table_args__ = (
        Index(None, "kind", "item_id"),
        {
            "mysql_charset": "utf8mb4",
            "comment": "Every array under details.requirements (industries, products, services, solutions, and newer ones), in order.",
        },
    )

    referral_id: Mapped[str] = mapped_column(Id, _fk(), primary_key=True, comment="referrals.id")
    kind: Mapped[str] = mapped_column(
        Short,
        primary_key=True,
        comment="the array's JSON name: industries, products, services, solutions, offers, ...",
    )
    position: Mapped[int] = mapped_column(
        Integer, primary_key=True, comment="order in the array, from 0"
    )
    item_id: Mapped[str | None] = mapped_column(String(255), comment="id of the item")
    name: Mapped[str | None] = mapped_column(comment="name (solutions)")
    item_type: Mapped[str | None] = mapped_column(comment="type (solutions: None, Category, Name)")


class ReferralTarget(Base):
    __tablename__ = "referral_targets"
    __table_args__ = {
        "mysql_charset": "utf8mb4",
        "comment": "Targets of a referral (target array).",
    }

    referral_id: Mapped[str] = mapped_column(Id, _fk(), primary_key=True, comment="referrals.id")
    position: Mapped[int] = mapped_column(
        Integer, primary_key=True, comment="order in target, from 0"
    )
    target_type: Mapped[str | None] = mapped_column(
        comment="type: None, BusinessProfileLocation, SolutionProfile"
    )
    target_id: Mapped[str | None] = mapped_column(comment="id")


class ReferralHistory(Base):
    __tablename__ = "referral_history"
    __table_args__ = {
        "mysql_charset": "utf8mb4",
        "comment": "One row per version of a referral seen by the sync (slowly changing dimension, type 2).",
    }

    id: Mapped[int] = mapped_column(
        Serial, primary_key=True, autoincrement=True, comment="surrogate key"
    )
    referral_id: Mapped[str] = mapped_column(Id, index=True, comment="referrals.id")
    etag: Mapped[str | None] = mapped_column(
        comment="eTag the version came with; NULL when it came from a list page without one"
    )
    valid_from: Mapped[datetime] = mapped_column(comment="when the sync first saw this version")
    valid_to: Mapped[datetime | None] = mapped_column(
        comment="when a newer version replaced it; NULL for the current version"
    )
    status: Mapped[str | None] = mapped_column(Short, comment="status in this version")
    substatus: Mapped[str | None] = mapped_column(comment="substatus in this version")
    qualification: Mapped[str | None] = mapped_column(comment="qualification in this version")
    deal_value: Mapped[Decimal | None] = mapped_column(comment="details.dealValue in this version")
    currency: Mapped[str | None] = mapped_column(comment="details.currency in this version")
    closing_at: Mapped[datetime | None] = mapped_column(
        comment="details.closingDateTime in this version"
    )
    updated_at: Mapped[datetime | None] = mapped_column(comment="updatedDateTime of this version")
    payload: Mapped[Any] = mapped_column(Payload, comment="the whole document of this version")
    origin: Mapped[str | None] = mapped_column(
        String(8),
        comment="where this version was read: list (a list page) or get (a GET by id); "
        "NULL for versions stored before this was recorded",
    )


class SyncState(Base):
    __tablename__ = "sync_state"
    __table_args__ = {
        "mysql_charset": "utf8mb4",
        "comment": "The ledger: one row per tracked id, including ids that never fetched successfully.",
    }

    referral_id: Mapped[str] = mapped_column(
        Id, primary_key=True, comment="the referral id being tracked"
    )
    source: Mapped[str] = mapped_column(
        String(16), comment="how it became tracked: file, discovery, webhook, manual"
    )
    added_at: Mapped[datetime] = mapped_column(comment="when it became tracked")
    etag: Mapped[str | None] = mapped_column(
        comment="last eTag received for the stored version (sent as If-None-Match); "
        "NULL when none came"
    )
    content_hash: Mapped[str | None] = mapped_column(
        String(64),
        comment="what identifies a version: SHA-256 of the stored document's canonical JSON "
        "without eTag and @odata.* fields, the same from a list page or a GET",
    )
    last_status_code: Mapped[int | None] = mapped_column(
        Integer, comment="HTTP status of the last attempt (0 = no answer)"
    )
    last_attempt_at: Mapped[datetime | None] = mapped_column(comment="when it was last asked for")
    last_success_at: Mapped[datetime | None] = mapped_column(
        comment="when it was last fetched successfully (200, 304 or 404)"
    )
    next_attempt_at: Mapped[datetime | None] = mapped_column(
        index=True, comment="when it is due again"
    )
    consecutive_failures: Mapped[int] = mapped_column(
        Integer, default=0, comment="failed attempts since the last success"
    )
    last_error: Mapped[str | None] = mapped_column(
        comment="the last error for this id, NULL after a success"
    )


class SyncRun(Base):
    __tablename__ = "sync_runs"
    __table_args__ = {"mysql_charset": "utf8mb4", "comment": "One row per run of the job."}

    id: Mapped[int] = mapped_column(
        Serial, primary_key=True, autoincrement=True, comment="run number"
    )
    started_at: Mapped[datetime] = mapped_column(comment="when the run started")
    finished_at: Mapped[datetime | None] = mapped_column(
        comment="when it ended, NULL while running"
    )
    trigger: Mapped[str] = mapped_column(String(16), comment="schedule, cli or backfill")
    status: Mapped[str] = mapped_column(
        String(16), comment="running, succeeded, partial, failed, interrupted, skipped"
    )
    ids_total: Mapped[int] = mapped_column(
        Integer, default=0, comment="distinct ids the run handled: read from a list page or by id"
    )
    fetched: Mapped[int] = mapped_column(
        Integer, default=0, comment="ids read from a list page or answered 200 or 304 by id"
    )
    unchanged: Mapped[int] = mapped_column(
        Integer, default=0, comment="ids whose content had not changed"
    )
    created: Mapped[int] = mapped_column(
        Integer, default=0, comment="referrals stored for the first time"
    )
    updated: Mapped[int] = mapped_column(
        Integer, default=0, comment="referrals whose content changed"
    )
    not_found: Mapped[int] = mapped_column(Integer, default=0, comment="ids answered 404")
    failed: Mapped[int] = mapped_column(Integer, default=0, comment="ids that failed this run")
    requests: Mapped[int] = mapped_column(
        Integer, default=0, comment="HTTP requests sent to the API"
    )
    throttled: Mapped[int] = mapped_column(Integer, default=0, comment="requests answered 429")
    list_requests: Mapped[int] = mapped_column(
        Integer,
        default=0,
        server_default="0",
        comment="requests to the list endpoint (pages read, retries included)",
    )
    get_requests: Mapped[int] = mapped_column(
        Integer,
        default=0,
        server_default="0",
        comment="requests for one referral by id (retries included)",
    )
    message: Mapped[str | None] = mapped_column(comment="summary or the error that ended the run")
    lease_name: Mapped[str | None] = mapped_column(
        Short, comment="the lease (sync_locks.name) the run held; NULL for runs without one"
    )
    lease_owner: Mapped[str | None] = mapped_column(
        String(255),
        comment="who held it (sync_locks.owner): a takeover of that lease fails only these runs",
    )


class SyncLock(Base):
    __tablename__ = "sync_locks"
    __table_args__ = {
        "mysql_charset": "utf8mb4",
        "comment": "Leases that keep two runs from working at once; an expired lease may be taken over.",
    }

    name: Mapped[str] = mapped_column(Short, primary_key=True, comment="what is locked (sync)")
    owner: Mapped[str] = mapped_column(
        String(255), comment="host, process and run holding the lease"
    )
    acquired_at: Mapped[datetime] = mapped_column(comment="when the lease was taken")
    expires_at: Mapped[datetime] = mapped_column(comment="the lease ends then unless renewed")


class SyncCursor(Base):
    __tablename__ = "sync_cursors"
    __table_args__ = {
        "mysql_charset": "utf8mb4",
        "comment": "Positions the job keeps between runs, such as discovery's high-water mark.",
    }

    name: Mapped[str] = mapped_column(Short, primary_key=True, comment="which cursor (discovery)")
    position: Mapped[datetime | None] = mapped_column(comment="the newest updatedDateTime seen")
    updated_at: Mapped[datetime] = mapped_column(comment="when the cursor last moved")


class CurrencyRate(Base):
    __tablename__ = "currency_rates"
    __table_args__ = {
        "mysql_charset": "utf8mb4",
        "comment": "Rates from each currency to the reporting currency, filled by `referrals-etl rates load`; one row per currency and date it applies from.",
    }

    currency: Mapped[str] = mapped_column(
        String(3), primary_key=True, comment="ISO 4217 code, as in details.currency (e.g. EUR)"
    )
    valid_from: Mapped[datetime] = mapped_column(
        primary_key=True,
        comment="the rate applies from this instant (UTC) until the next valid_from of the currency",
    )
    rate: Mapped[Decimal] = mapped_column(
        Rate,
        comment="one unit of the currency in the reporting currency (the reporting currency itself: 1)",
    )


class WebhookEvent(Base):
    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint(
            "referral_id", "event_name", "resource_change_utc_date", name="uq_webhook_events_event"
        ),
        Index(None, "processed_at", "referral_id"),
        {
            "mysql_charset": "utf8mb4",
            "comment": "One row per distinct Partner Center callback the receiver accepted (a repeated delivery is recorded once); written before the callback is acknowledged.",
        },
    )

    id: Mapped[int] = mapped_column(
        Serial, primary_key=True, autoincrement=True, comment="surrogate key"
    )
    event_name: Mapped[str] = mapped_column(
        Short, comment="EventName: referral-created, referral-updated, related-referral-..."
    )
    referral_id: Mapped[str] = mapped_column(
        Id, comment="the referral named by the event (last segment of ResourceUri)"
    )
    resource_change_utc_date: Mapped[str] = mapped_column(
        String(40), comment="ResourceChangeUtcDate as sent (the event has no id of its own)"
    )
    changed_at: Mapped[datetime | None] = mapped_column(
        comment="ResourceChangeUtcDate as a UTC instant (NULL when it did not parse)"
    )
    received_at: Mapped[datetime] = mapped_column(comment="when the receiver accepted it")
    processed_at: Mapped[datetime | None] = mapped_column(
        comment="when its referral was fetched and stored after it; NULL while due"
    )


TABLES = Base.metadata.tables
CHILD_TABLES = (
    "referral_customers",
    "referral_customer_ids",
    "referral_contacts",
    "referral_requirements",
    "referral_targets",
)
