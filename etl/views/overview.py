"""``referral_overview``: one row per referral (migration 0002, replaced by 0006)."""

from __future__ import annotations

from typing import Final

from etl.views.sql import (
    POSTGRESQL,
    SEPARATOR,
    SQLITE,
    View,
    ViewColumn,
    days_from_micros,
    full_name,
    in_reporting_currency,
    micros_between,
    month_of,
    quote,
    rate_at,
    utc_now,
)

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
    sep = quote(SEPARATOR)
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


def _overview_v2_select(dialect: str) -> str:
    rate = rate_at(dialect, "o.currency", utc_now(dialect))
    return f"""\
SELECT o.*,
       {full_name(dialect, "cc.first_name", "cc.last_name")} AS customer_contact_name,
       cc.email AS customer_contact_email,
       cc.phone_number AS customer_contact_phone,
       {full_name(dialect, "tm.first_name", "tm.last_name")} AS owner_name,
       tm.email AS owner_email,
       {in_reporting_currency(dialect, "o.deal_value", rate)} AS deal_value_reporting
FROM (
{_overview_select(dialect)}
) o
LEFT JOIN referral_contacts cc
       ON cc.referral_id = o.referral_id AND cc.side = 'customer' AND cc.position = 0
LEFT JOIN referral_contacts tm
       ON tm.referral_id = o.referral_id AND tm.side = 'team' AND tm.position = 0"""  # noqa: S608


REFERRAL_OVERVIEW_V2: Final = View(
    name="referral_overview",
    comment=REFERRAL_OVERVIEW.comment[:-1]
    + ", the first customer contact, the partner-side owner, and the deal value in the "
    "reporting currency.",
    columns=(
        *REFERRAL_OVERVIEW.columns,
        ViewColumn(
            "customer_contact_name",
            "text",
            "the contact to call: first and last name of the first member of "
            "customerProfile.team (referral_contacts side customer, position 0)",
        ),
        ViewColumn(
            "customer_contact_email", "text", "email of that contact (customerProfile.team)"
        ),
        ViewColumn(
            "customer_contact_phone",
            "text",
            "phoneNumber of that customer contact (customerProfile.team)",
        ),
        ViewColumn(
            "owner_name",
            "text",
            "the partner-side owner: first and last name of the first member of the top-level "
            "team (referral_contacts side team, position 0)",
        ),
        ViewColumn("owner_email", "text", "email of that owner (team)"),
        ViewColumn(
            "deal_value_reporting",
            "money",
            "deal_value times the currency_rates rate of its currency valid now (the latest "
            "valid_from not in the future), rounded to 4 decimals; NULL when no rate exists",
        ),
    ),
    select=_overview_v2_select,
)
