"""Milestones, the contact to call, currency rates, and empty strings stored as NULL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:30:00.000000

- ``currency_rates``: a rate from each currency to the reporting currency, from a date on.
- Every typed text column that holds an empty string from the API now holds NULL (the payload
  keeps the original); new rows are written that way by the sync.
- ``referral_overview`` and ``referral_status_changes`` are recreated with columns appended (the
  contact to call, the owner, the deal value in the reporting currency; durations from the API's
  own timestamps and where each came from); ``referral_milestones`` and ``referral_pipeline``
  are new.

This file is self-contained on purpose: the SQL of every view it creates, and of the views of
0002 it restores on downgrade, is literal text per database family here, and the column types
are SQLAlchemy's own, so later changes to the package cannot change what this revision does.
(tests/test_analyst.py checks that the SQL of the current views equals what etl/views.py
describes.) The downgrade cannot bring the empty strings back: it leaves them NULL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Text columns filled from the API document, where an empty string now means NULL.
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    'referrals': ('engagement_id', 'name', 'organization_id', 'organization_name', 'external_reference_id', 'status', 'substatus', 'status_reason', 'qualification', 'type', 'direction', 'currency', 'notes', 'invite_notes', 'invited_by_organization_id', 'invited_by_organization_name', 'etag'),
    'referral_customers': ('name', 'size', 'address_line1', 'address_line2', 'city', 'state', 'region', 'postal_code', 'country'),
    'referral_customer_ids': ('profile_type', 'value'),
    'referral_contacts': ('first_name', 'last_name', 'email', 'phone_number', 'title', 'locale'),
    'referral_requirements': ('item_id', 'name', 'item_type'),
    'referral_targets': ('target_type', 'target_id'),
    'referral_history': ('etag', 'status', 'substatus', 'qualification', 'currency'),
}

VIEW_NAMES = ('referral_overview', 'referral_status_changes', 'referral_milestones', 'referral_pipeline')
VIEW_NAMES_0002 = ('referral_overview', 'referral_status_changes')

# CREATE VIEW (and, on PostgreSQL, COMMENT ON) statements of this revision's views.
VIEWS_SQL: dict[str, tuple[str, ...]] = {
    'postgresql': (
        """CREATE VIEW referral_overview AS
SELECT o.*,
       NULLIF(TRIM(COALESCE(cc.first_name, '') || ' ' || COALESCE(cc.last_name, '')), '') AS customer_contact_name,
       cc.email AS customer_contact_email,
       cc.phone_number AS customer_contact_phone,
       NULLIF(TRIM(COALESCE(tm.first_name, '') || ' ' || COALESCE(tm.last_name, '')), '') AS owner_name,
       tm.email AS owner_email,
       CAST(ROUND(o.deal_value * (SELECT cr.rate FROM currency_rates cr WHERE cr.currency = o.currency AND cr.valid_from <= CURRENT_TIMESTAMP ORDER BY cr.valid_from DESC LIMIT 1), 4) AS NUMERIC(19, 4)) AS deal_value_reporting
FROM (
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
WHERE r.deleted_at IS NULL
) o
LEFT JOIN referral_contacts cc
       ON cc.referral_id = o.referral_id AND cc.side = 'customer' AND cc.position = 0
LEFT JOIN referral_contacts tm
       ON tm.referral_id = o.referral_id AND tm.side = 'team' AND tm.position = 0""",
        """COMMENT ON VIEW referral_overview IS 'One row per live referral (referrals.deleted_at IS NULL) with its customer, address and the lists of its industries, products, services and solutions, the first customer contact, the partner-side owner, and the deal value in the reporting currency.'""",
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
        """COMMENT ON COLUMN referral_overview.customer_contact_name IS 'the contact to call: first and last name of the first member of customerProfile.team (referral_contacts side customer, position 0)'""",
        """COMMENT ON COLUMN referral_overview.customer_contact_email IS 'email of that contact (customerProfile.team)'""",
        """COMMENT ON COLUMN referral_overview.customer_contact_phone IS 'phoneNumber of that customer contact (customerProfile.team)'""",
        """COMMENT ON COLUMN referral_overview.owner_name IS 'the partner-side owner: first and last name of the first member of the top-level team (referral_contacts side team, position 0)'""",
        """COMMENT ON COLUMN referral_overview.owner_email IS 'email of that owner (team)'""",
        """COMMENT ON COLUMN referral_overview.deal_value_reporting IS 'deal_value times the currency_rates rate of its currency valid now (the latest valid_from not in the future), rounded to 4 decimals; NULL when no rate exists'""",
        """CREATE VIEW referral_status_changes AS
WITH versions AS (
    SELECT id, referral_id, status, substatus, valid_from, updated_at,
           ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS version_no,
           LAG(status) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS previous_status,
           LAG(substatus) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS previous_substatus
    FROM referral_history
),
spells AS (
    SELECT id, referral_id, status, substatus, valid_from, updated_at,
           ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS spell_no,
           LAG(status) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_status,
           LAG(substatus) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_substatus,
           LAG(valid_from) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_valid_from,
           LAG(updated_at) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_updated_at
    FROM versions
    WHERE version_no = 1
       OR CASE WHEN (status IS NOT DISTINCT FROM previous_status) AND (substatus IS NOT DISTINCT FROM previous_substatus) THEN 0 ELSE 1 END = 1
),
changes AS (
    SELECT referral_id, id AS history_id, from_status, from_substatus,
           status AS to_status, substatus AS to_substatus,
           CASE WHEN from_updated_at IS NOT NULL AND updated_at IS NOT NULL THEN from_updated_at ELSE from_valid_from END AS previous_changed_at,
           CASE WHEN from_updated_at IS NOT NULL AND updated_at IS NOT NULL THEN updated_at ELSE valid_from END AS changed_at,
           valid_from AS seen_at,
           CASE WHEN from_updated_at IS NOT NULL AND updated_at IS NOT NULL THEN 'api' ELSE 'sync' END AS time_source
    FROM spells
    WHERE spell_no > 1
)
SELECT referral_id, history_id, from_status, from_substatus, to_status, to_substatus,
       previous_changed_at, changed_at,
       CAST(CAST(CAST(ROUND(EXTRACT(EPOCH FROM (changed_at) - (previous_changed_at)) * 1000000) AS BIGINT) AS NUMERIC(24, 6)) / 1000000 AS NUMERIC(20, 6)) AS seconds_in_previous,
       CAST(CAST((CAST(ROUND(EXTRACT(EPOCH FROM (changed_at) - (previous_changed_at)) * 1000000) AS BIGINT)) / 86400 AS NUMERIC(24, 6)) / 1000000 AS NUMERIC(20, 6)) AS days_in_previous,
       seen_at, time_source
FROM changes""",
        """COMMENT ON VIEW referral_status_changes IS 'One row per change of status or substatus of a referral, from referral_history (versions ordered by valid_from, id; versions that keep the status are not changes), with the time spent in the previous status: from the API''s updatedDateTime of the versions that began each status where both exist (time_source api), else from when the sync saw them (time_source sync).'""",
        """COMMENT ON COLUMN referral_status_changes.referral_id IS 'referral_history.referral_id (referrals.id)'""",
        """COMMENT ON COLUMN referral_status_changes.history_id IS 'referral_history.id of the version that brought the new status'""",
        """COMMENT ON COLUMN referral_status_changes.from_status IS 'status before the change'""",
        """COMMENT ON COLUMN referral_status_changes.from_substatus IS 'substatus before the change'""",
        """COMMENT ON COLUMN referral_status_changes.to_status IS 'status after the change'""",
        """COMMENT ON COLUMN referral_status_changes.to_substatus IS 'substatus after the change'""",
        """COMMENT ON COLUMN referral_status_changes.previous_changed_at IS 'when the referral entered from_status/from_substatus: updatedDateTime of the first version with it (time_source api), else that version''s valid_from (sync)'""",
        """COMMENT ON COLUMN referral_status_changes.changed_at IS 'when the new status began: updatedDateTime of the version that brought it (time_source api), else when the sync first saw it (valid_from; sync)'""",
        """COMMENT ON COLUMN referral_status_changes.seconds_in_previous IS 'seconds from previous_changed_at to changed_at (6 decimals, exact)'""",
        """COMMENT ON COLUMN referral_status_changes.days_in_previous IS 'the same span in days (6 decimals, truncated)'""",
        """COMMENT ON COLUMN referral_status_changes.seen_at IS 'when the sync first saw the new status (valid_from, UTC)'""",
        """COMMENT ON COLUMN referral_status_changes.time_source IS 'api: both ends are the API''s updatedDateTime; sync: one version had none, so both ends are when the sync saw the versions (valid_from), which after a first backfill is about the same instant'""",
        """CREATE VIEW referral_milestones AS
SELECT m.referral_id, m.status, m.substatus, m.outcome,
       m.created_at, m.accepted_at, m.closed_at, m.expires_at,
       to_char(m.closed_at AT TIME ZONE 'UTC', 'YYYY-MM') AS closed_month,
       CAST(CAST((CAST(ROUND(EXTRACT(EPOCH FROM (m.accepted_at) - (m.created_at)) * 1000000) AS BIGINT)) / 86400 AS NUMERIC(24, 6)) / 1000000 AS NUMERIC(20, 6)) AS days_created_to_accepted,
       CAST(CAST((CAST(ROUND(EXTRACT(EPOCH FROM (m.closed_at) - (m.accepted_at)) * 1000000) AS BIGINT)) / 86400 AS NUMERIC(24, 6)) / 1000000 AS NUMERIC(20, 6)) AS days_accepted_to_closed,
       CAST(CAST((CAST(ROUND(EXTRACT(EPOCH FROM (m.closed_at) - (m.created_at)) * 1000000) AS BIGINT)) / 86400 AS NUMERIC(24, 6)) / 1000000 AS NUMERIC(20, 6)) AS days_created_to_closed,
       m.currency, m.deal_value,
       CAST(ROUND(m.deal_value * (SELECT cr.rate FROM currency_rates cr WHERE cr.currency = m.currency AND cr.valid_from <= COALESCE(m.closed_at, CURRENT_TIMESTAMP) ORDER BY cr.valid_from DESC LIMIT 1), 4) AS NUMERIC(19, 4)) AS deal_value_reporting
FROM (
    SELECT r.id AS referral_id, r.status, r.substatus,
           CASE WHEN status IS NULL OR NOT (status = 'Closed') THEN 'open' WHEN substatus = 'Won' THEN 'won' WHEN substatus = 'Lost' THEN 'lost' WHEN substatus = 'Declined' THEN 'declined' WHEN substatus = 'Expired' THEN 'expired' END AS outcome,
           r.created_at, r.accepted_at,
           CASE WHEN r.status = 'Closed' THEN fc.updated_at END AS closed_at,
           r.expires_at, r.currency, r.deal_value
    FROM referrals r
    LEFT JOIN (
        SELECT referral_id, updated_at
        FROM (
            SELECT referral_id, updated_at,
                   ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS n
            FROM referral_history
            WHERE status = 'Closed'
        ) closed_versions
        WHERE n = 1
    ) fc ON fc.referral_id = r.id
    WHERE r.deleted_at IS NULL
) m""",
        """COMMENT ON VIEW referral_milestones IS 'One row per live referral: when it was created, accepted, closed and expires, how it ended, and the days between, from the documents'' own timestamps (so a referral first seen already closed has its timeline too).'""",
        """COMMENT ON COLUMN referral_milestones.referral_id IS 'referrals.id (id: the referral''s GUID)'""",
        """COMMENT ON COLUMN referral_milestones.status IS 'referrals.status: New, Active, Closed (status)'""",
        """COMMENT ON COLUMN referral_milestones.substatus IS 'referrals.substatus (substatus)'""",
        """COMMENT ON COLUMN referral_milestones.outcome IS 'open (status is not Closed), else from substatus: won, lost, declined, expired; NULL for a Closed referral with any other substatus'""",
        """COMMENT ON COLUMN referral_milestones.created_at IS 'referrals.created_at (createdDateTime, UTC)'""",
        """COMMENT ON COLUMN referral_milestones.accepted_at IS 'referrals.accepted_at (acceptedDateTime, UTC)'""",
        """COMMENT ON COLUMN referral_milestones.closed_at IS 'for a Closed referral: updatedDateTime of the first version the sync saw Closed (referral_history), which is the document''s own when it was first seen already closed; NULL while not Closed'""",
        """COMMENT ON COLUMN referral_milestones.expires_at IS 'referrals.expires_at (expirationDateTime, UTC)'""",
        """COMMENT ON COLUMN referral_milestones.closed_month IS '''YYYY-MM'' of closed_at (UTC)'""",
        """COMMENT ON COLUMN referral_milestones.days_created_to_accepted IS 'days from created_at to accepted_at (6 decimals, truncated); NULL unless both are set'""",
        """COMMENT ON COLUMN referral_milestones.days_accepted_to_closed IS 'days from accepted_at to closed_at (6 decimals, truncated); NULL unless both are set'""",
        """COMMENT ON COLUMN referral_milestones.days_created_to_closed IS 'days from created_at to closed_at (6 decimals, truncated); NULL unless both are set'""",
        """COMMENT ON COLUMN referral_milestones.currency IS 'referrals.currency (details.currency)'""",
        """COMMENT ON COLUMN referral_milestones.deal_value IS 'referrals.deal_value (details.dealValue)'""",
        """COMMENT ON COLUMN referral_milestones.deal_value_reporting IS 'deal_value times the currency_rates rate of its currency valid at closed_at (now while open), rounded to 4 decimals; NULL when no rate exists'""",
        """CREATE VIEW referral_pipeline AS
SELECT p.*, CAST(ROUND(p.deal_value * p.reporting_rate, 4) AS NUMERIC(19, 4)) AS deal_value_reporting
FROM (
    SELECT r.id AS referral_id, r.name, r.status, r.substatus, r.created_at, r.closing_at,
           r.currency, r.deal_value,
           (SELECT cr.rate FROM currency_rates cr WHERE cr.currency = r.currency AND cr.valid_from <= CURRENT_TIMESTAMP ORDER BY cr.valid_from DESC LIMIT 1) AS reporting_rate
    FROM referrals r
    WHERE r.deleted_at IS NULL AND (r.status = 'New' OR r.status = 'Active')
) p""",
        """COMMENT ON VIEW referral_pipeline IS 'One row per live open referral (status New or Active) with its deal value in its own currency and in the reporting currency.'""",
        """COMMENT ON COLUMN referral_pipeline.referral_id IS 'referrals.id (id: the referral''s GUID)'""",
        """COMMENT ON COLUMN referral_pipeline.name IS 'referrals.name (name)'""",
        """COMMENT ON COLUMN referral_pipeline.status IS 'referrals.status: New or Active (status)'""",
        """COMMENT ON COLUMN referral_pipeline.substatus IS 'referrals.substatus (substatus)'""",
        """COMMENT ON COLUMN referral_pipeline.created_at IS 'referrals.created_at (createdDateTime, UTC)'""",
        """COMMENT ON COLUMN referral_pipeline.closing_at IS 'referrals.closing_at (details.closingDateTime, UTC)'""",
        """COMMENT ON COLUMN referral_pipeline.currency IS 'referrals.currency (details.currency); NULL if unknown'""",
        """COMMENT ON COLUMN referral_pipeline.deal_value IS 'referrals.deal_value (details.dealValue)'""",
        """COMMENT ON COLUMN referral_pipeline.reporting_rate IS 'currency_rates.rate of the currency valid now (the latest valid_from not in the future); NULL when there is none'""",
        """COMMENT ON COLUMN referral_pipeline.deal_value_reporting IS 'deal_value times reporting_rate, rounded to 4 decimals; NULL when either is'""",
    ),
    'mysql': (
        """CREATE VIEW referral_overview AS
SELECT o.*,
       NULLIF(TRIM(CONCAT(COALESCE(cc.first_name, ''), ' ', COALESCE(cc.last_name, ''))), '') AS customer_contact_name,
       cc.email AS customer_contact_email,
       cc.phone_number AS customer_contact_phone,
       NULLIF(TRIM(CONCAT(COALESCE(tm.first_name, ''), ' ', COALESCE(tm.last_name, ''))), '') AS owner_name,
       tm.email AS owner_email,
       CAST(ROUND(o.deal_value * (SELECT cr.rate FROM currency_rates cr WHERE BINARY cr.currency = BINARY o.currency AND cr.valid_from <= UTC_TIMESTAMP(6) ORDER BY cr.valid_from DESC LIMIT 1), 4) AS DECIMAL(19, 4)) AS deal_value_reporting
FROM (
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
WHERE r.deleted_at IS NULL
) o
LEFT JOIN referral_contacts cc
       ON cc.referral_id = o.referral_id AND cc.side = 'customer' AND cc.position = 0
LEFT JOIN referral_contacts tm
       ON tm.referral_id = o.referral_id AND tm.side = 'team' AND tm.position = 0""",
        """CREATE VIEW referral_status_changes AS
WITH versions AS (
    SELECT id, referral_id, status, substatus, valid_from, updated_at,
           ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS version_no,
           LAG(status) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS previous_status,
           LAG(substatus) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS previous_substatus
    FROM referral_history
),
spells AS (
    SELECT id, referral_id, status, substatus, valid_from, updated_at,
           ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS spell_no,
           LAG(status) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_status,
           LAG(substatus) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_substatus,
           LAG(valid_from) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_valid_from,
           LAG(updated_at) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_updated_at
    FROM versions
    WHERE version_no = 1
       OR CASE WHEN (BINARY status <=> BINARY previous_status) AND (BINARY substatus <=> BINARY previous_substatus) THEN 0 ELSE 1 END = 1
),
changes AS (
    SELECT referral_id, id AS history_id, from_status, from_substatus,
           status AS to_status, substatus AS to_substatus,
           CASE WHEN from_updated_at IS NOT NULL AND updated_at IS NOT NULL THEN from_updated_at ELSE from_valid_from END AS previous_changed_at,
           CASE WHEN from_updated_at IS NOT NULL AND updated_at IS NOT NULL THEN updated_at ELSE valid_from END AS changed_at,
           valid_from AS seen_at,
           CASE WHEN from_updated_at IS NOT NULL AND updated_at IS NOT NULL THEN 'api' ELSE 'sync' END AS time_source
    FROM spells
    WHERE spell_no > 1
)
SELECT referral_id, history_id, from_status, from_substatus, to_status, to_substatus,
       previous_changed_at, changed_at,
       CAST(CAST(TIMESTAMPDIFF(MICROSECOND, previous_changed_at, changed_at) AS DECIMAL(24, 6)) / 1000000 AS DECIMAL(20, 6)) AS seconds_in_previous,
       CAST(CAST((TIMESTAMPDIFF(MICROSECOND, previous_changed_at, changed_at)) DIV 86400 AS DECIMAL(24, 6)) / 1000000 AS DECIMAL(20, 6)) AS days_in_previous,
       seen_at, time_source
FROM changes""",
        """CREATE VIEW referral_milestones AS
SELECT m.referral_id, m.status, m.substatus, m.outcome,
       m.created_at, m.accepted_at, m.closed_at, m.expires_at,
       CONCAT(LPAD(YEAR(m.closed_at), 4, '0'), '-', LPAD(MONTH(m.closed_at), 2, '0')) AS closed_month,
       CAST(CAST((TIMESTAMPDIFF(MICROSECOND, m.created_at, m.accepted_at)) DIV 86400 AS DECIMAL(24, 6)) / 1000000 AS DECIMAL(20, 6)) AS days_created_to_accepted,
       CAST(CAST((TIMESTAMPDIFF(MICROSECOND, m.accepted_at, m.closed_at)) DIV 86400 AS DECIMAL(24, 6)) / 1000000 AS DECIMAL(20, 6)) AS days_accepted_to_closed,
       CAST(CAST((TIMESTAMPDIFF(MICROSECOND, m.created_at, m.closed_at)) DIV 86400 AS DECIMAL(24, 6)) / 1000000 AS DECIMAL(20, 6)) AS days_created_to_closed,
       m.currency, m.deal_value,
       CAST(ROUND(m.deal_value * (SELECT cr.rate FROM currency_rates cr WHERE BINARY cr.currency = BINARY m.currency AND cr.valid_from <= COALESCE(m.closed_at, UTC_TIMESTAMP(6)) ORDER BY cr.valid_from DESC LIMIT 1), 4) AS DECIMAL(19, 4)) AS deal_value_reporting
FROM (
    SELECT r.id AS referral_id, r.status, r.substatus,
           CASE WHEN status IS NULL OR NOT (BINARY status = 'Closed') THEN 'open' WHEN BINARY substatus = 'Won' THEN 'won' WHEN BINARY substatus = 'Lost' THEN 'lost' WHEN BINARY substatus = 'Declined' THEN 'declined' WHEN BINARY substatus = 'Expired' THEN 'expired' END AS outcome,
           r.created_at, r.accepted_at,
           CASE WHEN BINARY r.status = 'Closed' THEN fc.updated_at END AS closed_at,
           r.expires_at, r.currency, r.deal_value
    FROM referrals r
    LEFT JOIN (
        SELECT referral_id, updated_at
        FROM (
            SELECT referral_id, updated_at,
                   ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS n
            FROM referral_history
            WHERE BINARY status = 'Closed'
        ) closed_versions
        WHERE n = 1
    ) fc ON fc.referral_id = r.id
    WHERE r.deleted_at IS NULL
) m""",
        """CREATE VIEW referral_pipeline AS
SELECT p.*, CAST(ROUND(p.deal_value * p.reporting_rate, 4) AS DECIMAL(19, 4)) AS deal_value_reporting
FROM (
    SELECT r.id AS referral_id, r.name, r.status, r.substatus, r.created_at, r.closing_at,
           r.currency, r.deal_value,
           (SELECT cr.rate FROM currency_rates cr WHERE BINARY cr.currency = BINARY r.currency AND cr.valid_from <= UTC_TIMESTAMP(6) ORDER BY cr.valid_from DESC LIMIT 1) AS reporting_rate
    FROM referrals r
    WHERE r.deleted_at IS NULL AND (BINARY r.status = 'New' OR BINARY r.status = 'Active')
) p""",
    ),
    'sqlite': (
        """CREATE VIEW referral_overview AS
SELECT o.*,
       NULLIF(TRIM(COALESCE(cc.first_name, '') || ' ' || COALESCE(cc.last_name, '')), '') AS customer_contact_name,
       cc.email AS customer_contact_email,
       cc.phone_number AS customer_contact_phone,
       NULLIF(TRIM(COALESCE(tm.first_name, '') || ' ' || COALESCE(tm.last_name, '')), '') AS owner_name,
       tm.email AS owner_email,
       ROUND(o.deal_value * (SELECT cr.rate FROM currency_rates cr WHERE cr.currency = o.currency AND cr.valid_from <= strftime('%Y-%m-%d %H:%M:%f', 'now') ORDER BY cr.valid_from DESC LIMIT 1), 4) AS deal_value_reporting
FROM (
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
WHERE r.deleted_at IS NULL
) o
LEFT JOIN referral_contacts cc
       ON cc.referral_id = o.referral_id AND cc.side = 'customer' AND cc.position = 0
LEFT JOIN referral_contacts tm
       ON tm.referral_id = o.referral_id AND tm.side = 'team' AND tm.position = 0""",
        """CREATE VIEW referral_status_changes AS
WITH versions AS (
    SELECT id, referral_id, status, substatus, valid_from, updated_at,
           ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS version_no,
           LAG(status) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS previous_status,
           LAG(substatus) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS previous_substatus
    FROM referral_history
),
spells AS (
    SELECT id, referral_id, status, substatus, valid_from, updated_at,
           ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS spell_no,
           LAG(status) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_status,
           LAG(substatus) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_substatus,
           LAG(valid_from) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_valid_from,
           LAG(updated_at) OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS from_updated_at
    FROM versions
    WHERE version_no = 1
       OR CASE WHEN (status IS previous_status) AND (substatus IS previous_substatus) THEN 0 ELSE 1 END = 1
),
changes AS (
    SELECT referral_id, id AS history_id, from_status, from_substatus,
           status AS to_status, substatus AS to_substatus,
           CASE WHEN from_updated_at IS NOT NULL AND updated_at IS NOT NULL THEN from_updated_at ELSE from_valid_from END AS previous_changed_at,
           CASE WHEN from_updated_at IS NOT NULL AND updated_at IS NOT NULL THEN updated_at ELSE valid_from END AS changed_at,
           valid_from AS seen_at,
           CASE WHEN from_updated_at IS NOT NULL AND updated_at IS NOT NULL THEN 'api' ELSE 'sync' END AS time_source
    FROM spells
    WHERE spell_no > 1
)
SELECT referral_id, history_id, from_status, from_substatus, to_status, to_substatus,
       previous_changed_at, changed_at,
       (((CAST(strftime('%s', substr(changed_at, 1, 19)) AS INTEGER) - CAST(strftime('%s', substr(previous_changed_at, 1, 19)) AS INTEGER)) * 1000000 + CAST(substr(substr(changed_at, 21) || '000000', 1, 6) AS INTEGER) - CAST(substr(substr(previous_changed_at, 21) || '000000', 1, 6) AS INTEGER))) / 1000000.0 AS seconds_in_previous,
       ((((CAST(strftime('%s', substr(changed_at, 1, 19)) AS INTEGER) - CAST(strftime('%s', substr(previous_changed_at, 1, 19)) AS INTEGER)) * 1000000 + CAST(substr(substr(changed_at, 21) || '000000', 1, 6) AS INTEGER) - CAST(substr(substr(previous_changed_at, 21) || '000000', 1, 6) AS INTEGER))) / 86400) / 1000000.0 AS days_in_previous,
       seen_at, time_source
FROM changes""",
        """CREATE VIEW referral_milestones AS
SELECT m.referral_id, m.status, m.substatus, m.outcome,
       m.created_at, m.accepted_at, m.closed_at, m.expires_at,
       strftime('%Y-%m', m.closed_at) AS closed_month,
       ((((CAST(strftime('%s', substr(m.accepted_at, 1, 19)) AS INTEGER) - CAST(strftime('%s', substr(m.created_at, 1, 19)) AS INTEGER)) * 1000000 + CAST(substr(substr(m.accepted_at, 21) || '000000', 1, 6) AS INTEGER) - CAST(substr(substr(m.created_at, 21) || '000000', 1, 6) AS INTEGER))) / 86400) / 1000000.0 AS days_created_to_accepted,
       ((((CAST(strftime('%s', substr(m.closed_at, 1, 19)) AS INTEGER) - CAST(strftime('%s', substr(m.accepted_at, 1, 19)) AS INTEGER)) * 1000000 + CAST(substr(substr(m.closed_at, 21) || '000000', 1, 6) AS INTEGER) - CAST(substr(substr(m.accepted_at, 21) || '000000', 1, 6) AS INTEGER))) / 86400) / 1000000.0 AS days_accepted_to_closed,
       ((((CAST(strftime('%s', substr(m.closed_at, 1, 19)) AS INTEGER) - CAST(strftime('%s', substr(m.created_at, 1, 19)) AS INTEGER)) * 1000000 + CAST(substr(substr(m.closed_at, 21) || '000000', 1, 6) AS INTEGER) - CAST(substr(substr(m.created_at, 21) || '000000', 1, 6) AS INTEGER))) / 86400) / 1000000.0 AS days_created_to_closed,
       m.currency, m.deal_value,
       ROUND(m.deal_value * (SELECT cr.rate FROM currency_rates cr WHERE cr.currency = m.currency AND cr.valid_from <= COALESCE(m.closed_at, strftime('%Y-%m-%d %H:%M:%f', 'now')) ORDER BY cr.valid_from DESC LIMIT 1), 4) AS deal_value_reporting
FROM (
    SELECT r.id AS referral_id, r.status, r.substatus,
           CASE WHEN status IS NULL OR NOT (status = 'Closed') THEN 'open' WHEN substatus = 'Won' THEN 'won' WHEN substatus = 'Lost' THEN 'lost' WHEN substatus = 'Declined' THEN 'declined' WHEN substatus = 'Expired' THEN 'expired' END AS outcome,
           r.created_at, r.accepted_at,
           CASE WHEN r.status = 'Closed' THEN fc.updated_at END AS closed_at,
           r.expires_at, r.currency, r.deal_value
    FROM referrals r
    LEFT JOIN (
        SELECT referral_id, updated_at
        FROM (
            SELECT referral_id, updated_at,
                   ROW_NUMBER() OVER (PARTITION BY referral_id ORDER BY valid_from, id) AS n
            FROM referral_history
            WHERE status = 'Closed'
        ) closed_versions
        WHERE n = 1
    ) fc ON fc.referral_id = r.id
    WHERE r.deleted_at IS NULL
) m""",
        """CREATE VIEW referral_pipeline AS
SELECT p.*, ROUND(p.deal_value * p.reporting_rate, 4) AS deal_value_reporting
FROM (
    SELECT r.id AS referral_id, r.name, r.status, r.substatus, r.created_at, r.closing_at,
           r.currency, r.deal_value,
           (SELECT cr.rate FROM currency_rates cr WHERE cr.currency = r.currency AND cr.valid_from <= strftime('%Y-%m-%d %H:%M:%f', 'now') ORDER BY cr.valid_from DESC LIMIT 1) AS reporting_rate
    FROM referrals r
    WHERE r.deleted_at IS NULL AND (r.status = 'New' OR r.status = 'Active')
) p""",
    ),
}

# The same for the views of revision 0002, restored by the downgrade.
VIEWS_0002_SQL: dict[str, tuple[str, ...]] = {
    'postgresql': (
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
    'mysql': (
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
    'sqlite': (
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


def _family() -> str:
    name = op.get_context().dialect.name  # works offline (--sql) too
    return "mysql" if name in ("mysql", "mariadb") else name


def _utc_datetime() -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    family = _family()
    op.create_table(
        "currency_rates",
        sa.Column(
            "currency",
            sa.String(length=3),
            nullable=False,
            comment="ISO 4217 code, as in details.currency (e.g. EUR)",
        ),
        sa.Column(
            "valid_from",
            _utc_datetime(),
            nullable=False,
            comment="the rate applies from this instant (UTC) until the next valid_from of the currency",
        ),
        sa.Column(
            "rate",
            sa.Numeric(precision=20, scale=10),
            nullable=False,
            comment="one unit of the currency in the reporting currency (the reporting currency itself: 1)",
        ),
        sa.PrimaryKeyConstraint("currency", "valid_from", name=op.f("pk_currency_rates")),
        comment="Rates from each currency to the reporting currency, filled by `referrals-etl rates load`; one row per currency and date it applies from.",
        mysql_charset="utf8mb4",
    )
    for table, columns in TEXT_COLUMNS.items():
        for column in columns:  # LENGTH: MariaDB's '' = '  ' (PAD SPACE) must not match blanks
            op.execute(f"UPDATE {table} SET {column} = NULL WHERE LENGTH({column}) = 0")
    for name in reversed(VIEW_NAMES_0002):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for statement in VIEWS_SQL[family]:
        op.execute(statement)


def downgrade() -> None:
    family = _family()
    for name in reversed(VIEW_NAMES):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for statement in VIEWS_0002_SQL[family]:
        op.execute(statement)
    op.drop_table("currency_rates")
