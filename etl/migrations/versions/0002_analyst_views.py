"""Analyst views: referral_overview and referral_status_changes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 01:30:00.000000

The SQL differs per database (ordered string aggregation and date arithmetic). It is written out
here as it was when this revision was made, so the revision never changes when the code does; on
PostgreSQL the views and their columns get comments, MariaDB and SQLite have no view comments.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEW_NAMES = ("referral_overview", "referral_status_changes")

# Every statement of upgrade(), per database family ("mysql" is MariaDB and MySQL).
STATEMENTS: dict[str, tuple[str, ...]] = {
    "postgresql": (
        """CREATE VIEW referral_overview AS
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
       to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM') AS created_month,
       CAST(CAST((CAST(ROUND(EXTRACT(EPOCH FROM (r.accepted_at) - (r.created_at)) * 1000000) AS BIGINT)) / 86400 AS NUMERIC(24, 6)) / 1000000 AS NUMERIC(20, 6)) AS days_to_accept,
       CAST(CAST((CAST(ROUND(EXTRACT(EPOCH FROM (CURRENT_TIMESTAMP) - (r.updated_at)) * 1000000) AS BIGINT)) / 86400 AS NUMERIC(24, 6)) / 1000000 AS NUMERIC(20, 6)) AS days_since_update
FROM referrals r
LEFT JOIN referral_customers c ON c.referral_id = r.id
LEFT JOIN (
    SELECT referral_id,
           string_agg(CASE WHEN kind = 'industries' THEN label END, ', ' ORDER BY position) AS industries,
           string_agg(CASE WHEN kind = 'products' THEN label END, ', ' ORDER BY position) AS products,
           string_agg(CASE WHEN kind = 'services' THEN label END, ', ' ORDER BY position) AS services,
           string_agg(CASE WHEN kind = 'solutions' THEN label END, ', ' ORDER BY position) AS solutions
    FROM (
        SELECT referral_id, kind, position, CASE WHEN kind = 'solutions' THEN COALESCE(NULLIF(name, ''), NULLIF(item_id, '')) ELSE COALESCE(NULLIF(item_id, ''), NULLIF(name, '')) END AS label
        FROM referral_requirements
        WHERE kind IN ('industries', 'products', 'services', 'solutions')
    ) labelled
    GROUP BY referral_id
) q ON q.referral_id = r.id
WHERE r.deleted_at IS NULL""",
        """COMMENT ON VIEW referral_overview IS 'One row per live referral (referrals.deleted_at IS NULL) with its customer, address and the lists of its industries, products, services and solutions.'""",
        """COMMENT ON COLUMN referral_overview.referral_id IS 'referrals.id (id: the referral''s GUID)'""",
        """COMMENT ON COLUMN referral_overview.engagement_id IS 'referrals.engagement_id (engagementId)'""",
        """COMMENT ON COLUMN referral_overview.name IS 'referrals.name (name)'""",
        """COMMENT ON COLUMN referral_overview.organization_id IS 'referrals.organization_id (organizationId)'""",
        """COMMENT ON COLUMN referral_overview.organization_name IS 'referrals.organization_name (organizationName)'""",
        """COMMENT ON COLUMN referral_overview.external_reference_id IS 'referrals.external_reference_id (externalReferenceId)'""",
        """COMMENT ON COLUMN referral_overview.status IS 'referrals.status: New, Active, Closed (status)'""",
        """COMMENT ON COLUMN referral_overview.substatus IS 'referrals.substatus (substatus)'""",
        """COMMENT ON COLUMN referral_overview.status_reason IS 'referrals.status_reason (statusReason)'""",
        """COMMENT ON COLUMN referral_overview.qualification IS 'referrals.qualification (qualification)'""",
        """COMMENT ON COLUMN referral_overview.type IS 'referrals.type: Independent or Shared (type)'""",
        """COMMENT ON COLUMN referral_overview.direction IS 'referrals.direction: Incoming or Outgoing (direction)'""",
        """COMMENT ON COLUMN referral_overview.created_at IS 'referrals.created_at (createdDateTime, UTC)'""",
        """COMMENT ON COLUMN referral_overview.updated_at IS 'referrals.updated_at (updatedDateTime, UTC)'""",
        """COMMENT ON COLUMN referral_overview.expires_at IS 'referrals.expires_at (expirationDateTime, UTC)'""",
        """COMMENT ON COLUMN referral_overview.accepted_at IS 'referrals.accepted_at (acceptedDateTime, UTC)'""",
        """COMMENT ON COLUMN referral_overview.closing_at IS 'referrals.closing_at (details.closingDateTime, UTC)'""",
        """COMMENT ON COLUMN referral_overview.deal_value IS 'referrals.deal_value (details.dealValue)'""",
        """COMMENT ON COLUMN referral_overview.currency IS 'referrals.currency (details.currency)'""",
        """COMMENT ON COLUMN referral_overview.invited_by_organization_id IS 'referrals.invited_by_organization_id (inviteContext.invitedBy.organizationId)'""",
        """COMMENT ON COLUMN referral_overview.invited_by_organization_name IS 'referrals.invited_by_organization_name (inviteContext.invitedBy.organizationName)'""",
        """COMMENT ON COLUMN referral_overview.customer_name IS 'referral_customers.name (customerProfile.name)'""",
        """COMMENT ON COLUMN referral_overview.customer_size IS 'referral_customers.size (customerProfile.size)'""",
        """COMMENT ON COLUMN referral_overview.address_line1 IS 'referral_customers.address_line1 (customerProfile.address.addressLine1)'""",
        """COMMENT ON COLUMN referral_overview.address_line2 IS 'referral_customers.address_line2 (customerProfile.address.addressLine2)'""",
        """COMMENT ON COLUMN referral_overview.city IS 'referral_customers.city (customerProfile.address.city)'""",
        """COMMENT ON COLUMN referral_overview.state IS 'referral_customers.state (customerProfile.address.state)'""",
        """COMMENT ON COLUMN referral_overview.region IS 'referral_customers.region (customerProfile.address.region)'""",
        """COMMENT ON COLUMN referral_overview.postal_code IS 'referral_customers.postal_code (customerProfile.address.postalCode)'""",
        """COMMENT ON COLUMN referral_overview.country IS 'referral_customers.country (customerProfile.address.country, ISO 3166 alpha-2)'""",
        """COMMENT ON COLUMN referral_overview.industries IS 'Industry ids, comma-separated ('', '') in array order (details.requirements.industries); NULL when there are none'""",
        """COMMENT ON COLUMN referral_overview.products IS 'Product ids, comma-separated ('', '') in array order (details.requirements.products); NULL when there are none'""",
        """COMMENT ON COLUMN referral_overview.services IS 'Service ids, comma-separated ('', '') in array order (details.requirements.services); NULL when there are none'""",
        """COMMENT ON COLUMN referral_overview.solutions IS 'Solution names (the id when unnamed), comma-separated ('', '') in array order (details.requirements.solutions); NULL when there are none'""",
        """COMMENT ON COLUMN referral_overview.created_month IS '''YYYY-MM'' of created_at (UTC)'""",
        """COMMENT ON COLUMN referral_overview.days_to_accept IS 'Days from created_at to accepted_at (6 decimals, truncated); NULL unless both are set'""",
        """COMMENT ON COLUMN referral_overview.days_since_update IS 'Days from updated_at to now (UTC; 6 decimals, truncated)'""",
        """CREATE VIEW referral_status_changes AS
WITH versions AS (
    SELECT id, referral_id, status, substatus, valid_from,
           ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS version_no,
           LAG(status) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS previous_status,
           LAG(substatus) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS previous_substatus
    FROM referral_history
),
spells AS (
    SELECT id, referral_id, status, substatus, valid_from,
           ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS spell_no,
           LAG(status) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_status,
           LAG(substatus) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_substatus,
           LAG(valid_from) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_valid_from
    FROM versions
    WHERE version_no = 1
       OR CASE WHEN (status IS NOT DISTINCT FROM previous_status) AND (substatus IS NOT DISTINCT FROM previous_substatus) THEN 0 ELSE 1 END = 1
),
changes AS (
    SELECT referral_id, id AS history_id, from_status, from_substatus,
           status AS to_status, substatus AS to_substatus,
           from_valid_from AS previous_changed_at, valid_from AS changed_at
    FROM spells
    WHERE spell_no > 1
)
SELECT referral_id, history_id, from_status, from_substatus, to_status, to_substatus,
       previous_changed_at, changed_at,
       CAST(CAST(CAST(ROUND(EXTRACT(EPOCH FROM (changed_at) - (previous_changed_at)) * 1000000) AS BIGINT) AS NUMERIC(24, 6)) / 1000000 AS NUMERIC(20, 6)) AS seconds_in_previous,
       CAST(CAST((CAST(ROUND(EXTRACT(EPOCH FROM (changed_at) - (previous_changed_at)) * 1000000) AS BIGINT)) / 86400 AS NUMERIC(24, 6)) / 1000000 AS NUMERIC(20, 6)) AS days_in_previous
FROM changes""",
        """COMMENT ON VIEW referral_status_changes IS 'One row per change of status or substatus of a referral, from referral_history (versions ordered by valid_from, id; versions that keep the status are not changes), with the time spent in the previous status as the sync saw it.'""",
        """COMMENT ON COLUMN referral_status_changes.referral_id IS 'referral_history.referral_id (referrals.id)'""",
        """COMMENT ON COLUMN referral_status_changes.history_id IS 'referral_history.id of the version that brought the new status'""",
        """COMMENT ON COLUMN referral_status_changes.from_status IS 'status before the change'""",
        """COMMENT ON COLUMN referral_status_changes.from_substatus IS 'substatus before the change'""",
        """COMMENT ON COLUMN referral_status_changes.to_status IS 'status after the change'""",
        """COMMENT ON COLUMN referral_status_changes.to_substatus IS 'substatus after the change'""",
        """COMMENT ON COLUMN referral_status_changes.previous_changed_at IS 'when the referral entered from_status/from_substatus (valid_from of the first version with it)'""",
        """COMMENT ON COLUMN referral_status_changes.changed_at IS 'when the sync first saw the new status (valid_from, UTC)'""",
        """COMMENT ON COLUMN referral_status_changes.seconds_in_previous IS 'seconds from previous_changed_at to changed_at (6 decimals, exact)'""",
        """COMMENT ON COLUMN referral_status_changes.days_in_previous IS 'the same span in days (6 decimals, truncated)'""",
    ),
    "mysql": (
        """CREATE VIEW referral_overview AS
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
       CONCAT(LPAD(YEAR(r.created_at), 4, '0'), '-', LPAD(MONTH(r.created_at), 2, '0')) AS created_month,
       CAST(CAST((TIMESTAMPDIFF(MICROSECOND, r.created_at, r.accepted_at)) DIV 86400 AS DECIMAL(24, 6)) / 1000000 AS DECIMAL(20, 6)) AS days_to_accept,
       CAST(CAST((TIMESTAMPDIFF(MICROSECOND, r.updated_at, UTC_TIMESTAMP(6))) DIV 86400 AS DECIMAL(24, 6)) / 1000000 AS DECIMAL(20, 6)) AS days_since_update
FROM referrals r
LEFT JOIN referral_customers c ON c.referral_id = r.id
LEFT JOIN (
    SELECT referral_id,
           GROUP_CONCAT(CASE WHEN kind = 'industries' THEN label END ORDER BY position SEPARATOR ', ') AS industries,
           GROUP_CONCAT(CASE WHEN kind = 'products' THEN label END ORDER BY position SEPARATOR ', ') AS products,
           GROUP_CONCAT(CASE WHEN kind = 'services' THEN label END ORDER BY position SEPARATOR ', ') AS services,
           GROUP_CONCAT(CASE WHEN kind = 'solutions' THEN label END ORDER BY position SEPARATOR ', ') AS solutions
    FROM (
        SELECT referral_id, kind, position, CASE WHEN kind = 'solutions' THEN COALESCE(NULLIF(name, ''), NULLIF(item_id, '')) ELSE COALESCE(NULLIF(item_id, ''), NULLIF(name, '')) END AS label
        FROM referral_requirements
        WHERE kind IN ('industries', 'products', 'services', 'solutions')
    ) labelled
    GROUP BY referral_id
) q ON q.referral_id = r.id
WHERE r.deleted_at IS NULL""",
        """CREATE VIEW referral_status_changes AS
WITH versions AS (
    SELECT id, referral_id, status, substatus, valid_from,
           ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS version_no,
           LAG(status) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS previous_status,
           LAG(substatus) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS previous_substatus
    FROM referral_history
),
spells AS (
    SELECT id, referral_id, status, substatus, valid_from,
           ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS spell_no,
           LAG(status) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_status,
           LAG(substatus) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_substatus,
           LAG(valid_from) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_valid_from
    FROM versions
    WHERE version_no = 1
       OR CASE WHEN (BINARY status <=> BINARY previous_status) AND (BINARY substatus <=> BINARY previous_substatus) THEN 0 ELSE 1 END = 1
),
changes AS (
    SELECT referral_id, id AS history_id, from_status, from_substatus,
           status AS to_status, substatus AS to_substatus,
           from_valid_from AS previous_changed_at, valid_from AS changed_at
    FROM spells
    WHERE spell_no > 1
)
SELECT referral_id, history_id, from_status, from_substatus, to_status, to_substatus,
       previous_changed_at, changed_at,
       CAST(CAST(TIMESTAMPDIFF(MICROSECOND, previous_changed_at, changed_at) AS DECIMAL(24, 6)) / 1000000 AS DECIMAL(20, 6)) AS seconds_in_previous,
       CAST(CAST((TIMESTAMPDIFF(MICROSECOND, previous_changed_at, changed_at)) DIV 86400 AS DECIMAL(24, 6)) / 1000000 AS DECIMAL(20, 6)) AS days_in_previous
FROM changes""",
    ),
    "sqlite": (
        """CREATE VIEW referral_overview AS
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
       strftime('%Y-%m', r.created_at) AS created_month,
       ((((CAST(strftime('%s', substr(r.accepted_at, 1, 19)) AS INTEGER) - CAST(strftime('%s', substr(r.created_at, 1, 19)) AS INTEGER)) * 1000000 + CAST(substr(substr(r.accepted_at, 21) || '000000', 1, 6) AS INTEGER) - CAST(substr(substr(r.created_at, 21) || '000000', 1, 6) AS INTEGER))) / 86400) / 1000000.0 AS days_to_accept,
       ((((CAST(strftime('%s', substr(strftime('%Y-%m-%d %H:%M:%f', 'now'), 1, 19)) AS INTEGER) - CAST(strftime('%s', substr(r.updated_at, 1, 19)) AS INTEGER)) * 1000000 + CAST(substr(substr(strftime('%Y-%m-%d %H:%M:%f', 'now'), 21) || '000000', 1, 6) AS INTEGER) - CAST(substr(substr(r.updated_at, 21) || '000000', 1, 6) AS INTEGER))) / 86400) / 1000000.0 AS days_since_update
FROM referrals r
LEFT JOIN referral_customers c ON c.referral_id = r.id
LEFT JOIN (
    SELECT referral_id,
           MAX(CASE WHEN kind = 'industries' THEN items END) AS industries,
           MAX(CASE WHEN kind = 'products' THEN items END) AS products,
           MAX(CASE WHEN kind = 'services' THEN items END) AS services,
           MAX(CASE WHEN kind = 'solutions' THEN items END) AS solutions
    FROM (
        SELECT referral_id, kind,
               group_concat(label, ', ') OVER (
                   PARTITION BY referral_id, kind ORDER BY position
                   ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
               ) AS items,
               ROW_NUMBER() OVER (PARTITION BY referral_id, kind ORDER BY position) AS item_no
        FROM (
            SELECT referral_id, kind, position, CASE WHEN kind = 'solutions' THEN COALESCE(NULLIF(name, ''), NULLIF(item_id, '')) ELSE COALESCE(NULLIF(item_id, ''), NULLIF(name, '')) END AS label
            FROM referral_requirements
            WHERE kind IN ('industries', 'products', 'services', 'solutions')
        ) labelled
    ) listed
    WHERE item_no = 1
    GROUP BY referral_id
) q ON q.referral_id = r.id
WHERE r.deleted_at IS NULL""",
        """CREATE VIEW referral_status_changes AS
WITH versions AS (
    SELECT id, referral_id, status, substatus, valid_from,
           ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS version_no,
           LAG(status) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS previous_status,
           LAG(substatus) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS previous_substatus
    FROM referral_history
),
spells AS (
    SELECT id, referral_id, status, substatus, valid_from,
           ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS spell_no,
           LAG(status) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_status,
           LAG(substatus) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_substatus,
           LAG(valid_from) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_valid_from
    FROM versions
    WHERE version_no = 1
       OR CASE WHEN (status IS previous_status) AND (substatus IS previous_substatus) THEN 0 ELSE 1 END = 1
),
changes AS (
    SELECT referral_id, id AS history_id, from_status, from_substatus,
           status AS to_status, substatus AS to_substatus,
           from_valid_from AS previous_changed_at, valid_from AS changed_at
    FROM spells
    WHERE spell_no > 1
)
SELECT referral_id, history_id, from_status, from_substatus, to_status, to_substatus,
       previous_changed_at, changed_at,
       (((CAST(strftime('%s', substr(changed_at, 1, 19)) AS INTEGER) - CAST(strftime('%s', substr(previous_changed_at, 1, 19)) AS INTEGER)) * 1000000 + CAST(substr(substr(changed_at, 21) || '000000', 1, 6) AS INTEGER) - CAST(substr(substr(previous_changed_at, 21) || '000000', 1, 6) AS INTEGER))) / 1000000.0 AS seconds_in_previous,
       ((((CAST(strftime('%s', substr(changed_at, 1, 19)) AS INTEGER) - CAST(strftime('%s', substr(previous_changed_at, 1, 19)) AS INTEGER)) * 1000000 + CAST(substr(substr(changed_at, 21) || '000000', 1, 6) AS INTEGER) - CAST(substr(substr(previous_changed_at, 21) || '000000', 1, 6) AS INTEGER))) / 86400) / 1000000.0 AS days_in_previous
FROM changes""",
    ),
}


def _family(name: str) -> str:
    return "mysql" if name in {"mysql", "mariadb"} else name


def upgrade() -> None:
    dialect = _family(op.get_context().dialect.name)  # works offline (--sql) too
    for statement in STATEMENTS[dialect]:
        op.execute(statement)


def downgrade() -> None:
    for name in reversed(VIEW_NAMES):
        op.execute(f"DROP VIEW IF EXISTS {name}")
