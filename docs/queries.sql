-- Questions analysts ask, answered in SQL that runs unchanged on SQLite, PostgreSQL and MariaDB.
--
-- Each statement follows a `-- name: <slug>` line and a one-line comment saying what it answers.
-- Date arithmetic differs on every database, so it lives in the views (`referral_overview`,
-- `referral_status_changes`, `referral_milestones`, `referral_pipeline`), which expose plain
-- numbers (days, seconds, months as 'YYYY-MM'); the queries only use those numbers. Amounts in
-- the reporting currency come from `currency_rates` (`referrals-etl rates load`): a referral
-- whose currency has no rate counts as "without rate" and adds nothing, never a wrong number. Medians are computed with ROW_NUMBER/COUNT, since no median function is
-- portable. NULLs sort differently on each database, hence the explicit `CASE WHEN x IS NULL`
-- in ORDER BY. Sums of money are rounded to 4 decimals because SQLite adds in floating point;
-- `1.000000000 * a / b` keeps MariaDB from dividing to only 4 decimals.
-- `:referral_id` is a parameter: bind it, or replace it by a quoted id.
-- The tests (tests/test_analyst.py) run every statement here on all three databases and check
-- the answers. Column meanings: docs/data-dictionary.md.

-- name: open-pipeline-by-status-and-currency
-- Open pipeline (New and Active referrals): how many and their total deal value, per status and currency.
SELECT status,
       currency,
       COUNT(*) AS referrals,
       COUNT(deal_value) AS with_deal_value,
       ROUND(COALESCE(SUM(deal_value), 0), 4) AS pipeline_value
FROM referral_overview
WHERE status IN ('New', 'Active')
GROUP BY status, currency
ORDER BY status, pipeline_value DESC, CASE WHEN currency IS NULL THEN 1 ELSE 0 END, currency;

-- name: win-rate-by-product
-- Of the closed referrals that name a product, the share won (substatus Won), per product.
SELECT q.item_id AS product,
       COUNT(DISTINCT r.referral_id) AS closed_referrals,
       COUNT(DISTINCT CASE WHEN r.substatus = 'Won' THEN r.referral_id END) AS won,
       1.000000000 * COUNT(DISTINCT CASE WHEN r.substatus = 'Won' THEN r.referral_id END)
           / COUNT(DISTINCT r.referral_id) AS win_rate
FROM referral_overview r
JOIN referral_requirements q ON q.referral_id = r.referral_id AND q.kind = 'products'
WHERE r.status = 'Closed' AND q.item_id IS NOT NULL
GROUP BY q.item_id
ORDER BY win_rate DESC, closed_referrals DESC, product;

-- name: win-rate-by-industry
-- Of the closed referrals that name an industry, the share won (substatus Won), per industry.
SELECT q.item_id AS industry,
       COUNT(DISTINCT r.referral_id) AS closed_referrals,
       COUNT(DISTINCT CASE WHEN r.substatus = 'Won' THEN r.referral_id END) AS won,
       1.000000000 * COUNT(DISTINCT CASE WHEN r.substatus = 'Won' THEN r.referral_id END)
           / COUNT(DISTINCT r.referral_id) AS win_rate
FROM referral_overview r
JOIN referral_requirements q ON q.referral_id = r.referral_id AND q.kind = 'industries'
WHERE r.status = 'Closed' AND q.item_id IS NOT NULL
GROUP BY q.item_id
ORDER BY win_rate DESC, closed_referrals DESC, industry;

-- name: median-days-created-to-accepted
-- Median days from createdDateTime to acceptedDateTime, over live referrals that have both.
WITH spans AS (
    SELECT days_to_accept AS days,
           ROW_NUMBER() OVER (ORDER BY days_to_accept) AS rn,
           COUNT(*) OVER () AS n
    FROM referral_overview
    WHERE days_to_accept IS NOT NULL
)
SELECT MAX(n) AS referrals, AVG(days) AS median_days
FROM spans
WHERE 2 * rn BETWEEN n AND n + 2;

-- name: median-days-accepted-to-closed
-- Median days from acceptedDateTime to closing (closed_at of referral_milestones), over live referrals that have both.
WITH spans AS (
    SELECT days_accepted_to_closed AS days,
           ROW_NUMBER() OVER (ORDER BY days_accepted_to_closed) AS rn,
           COUNT(*) OVER () AS n
    FROM referral_milestones
    WHERE days_accepted_to_closed IS NOT NULL
)
SELECT MAX(n) AS referrals, AVG(days) AS median_days
FROM spans
WHERE 2 * rn BETWEEN n AND n + 2;

-- name: referrals-by-country-and-size
-- Live referrals and their total deal value by the customer's country and size.
SELECT country,
       customer_size,
       COUNT(*) AS referrals,
       ROUND(COALESCE(SUM(deal_value), 0), 4) AS deal_value
FROM referral_overview
GROUP BY country, customer_size
ORDER BY referrals DESC,
         CASE WHEN country IS NULL THEN 1 ELSE 0 END, country,
         CASE WHEN customer_size IS NULL THEN 1 ELSE 0 END, customer_size;

-- name: stale-open-referrals
-- Open referrals (New or Active) whose updatedDateTime is more than 30 days ago, oldest first.
SELECT referral_id, name, status, substatus, updated_at, days_since_update
FROM referral_overview
WHERE status IN ('New', 'Active') AND days_since_update > 30
ORDER BY days_since_update DESC, referral_id;

-- name: status-funnel
-- How far live referrals got: received, accepted (Active, or closed as won or lost), won, lost; and those declined or expired unaccepted.
SELECT step, stage, referrals
FROM (
    SELECT 1 AS step, 'received' AS stage, COUNT(*) AS referrals
    FROM referral_milestones
    UNION ALL
    SELECT 2, 'accepted', COUNT(*)
    FROM referral_milestones
    WHERE status = 'Active' OR outcome IN ('won', 'lost')
    UNION ALL
    SELECT 3, 'won', COUNT(*)
    FROM referral_milestones
    WHERE outcome = 'won'
    UNION ALL
    SELECT 4, 'lost', COUNT(*)
    FROM referral_milestones
    WHERE outcome = 'lost'
    UNION ALL
    SELECT 5, 'declined', COUNT(*)
    FROM referral_milestones
    WHERE outcome = 'declined'
    UNION ALL
    SELECT 6, 'expired', COUNT(*)
    FROM referral_milestones
    WHERE outcome = 'expired'
) funnel
ORDER BY step;

-- name: deals-by-solution
-- Live referrals per solution (its name, else its id): how many, how many won, and their deal value.
SELECT s.solution,
       COUNT(*) AS referrals,
       SUM(CASE WHEN r.status = 'Closed' AND r.substatus = 'Won' THEN 1 ELSE 0 END) AS won,
       ROUND(COALESCE(SUM(r.deal_value), 0), 4) AS deal_value,
       ROUND(COALESCE(SUM(CASE WHEN r.status = 'Closed' AND r.substatus = 'Won'
                               THEN r.deal_value END), 0), 4) AS won_value
FROM (
    SELECT DISTINCT referral_id, COALESCE(NULLIF(name, ''), NULLIF(item_id, '')) AS solution
    FROM referral_requirements
    WHERE kind = 'solutions'
) s
JOIN referral_overview r ON r.referral_id = s.referral_id
WHERE s.solution IS NOT NULL
GROUP BY s.solution
ORDER BY deal_value DESC, referrals DESC, s.solution;

-- name: referrals-per-engagement
-- Co-sell engagements (one engagementId shared by several referrals): referrals, open ones, won ones.
SELECT engagement_id,
       COUNT(*) AS referrals,
       SUM(CASE WHEN status IN ('New', 'Active') THEN 1 ELSE 0 END) AS open_referrals,
       SUM(CASE WHEN status = 'Closed' AND substatus = 'Won' THEN 1 ELSE 0 END) AS won,
       ROUND(COALESCE(SUM(deal_value), 0), 4) AS deal_value
FROM referral_overview
WHERE engagement_id IS NOT NULL
GROUP BY engagement_id
HAVING COUNT(*) > 1
ORDER BY referrals DESC, engagement_id;

-- name: contacts-per-referral
-- Customer contacts and partner/Microsoft team members on each live referral, most first.
SELECT r.referral_id,
       COUNT(CASE WHEN c.side = 'customer' THEN 1 END) AS customer_contacts,
       COUNT(CASE WHEN c.side = 'team' THEN 1 END) AS team_members,
       COUNT(CASE WHEN c.side = 'customer' AND c.email IS NOT NULL AND c.email <> ''
                  THEN 1 END) AS customer_emails
FROM referral_overview r
LEFT JOIN referral_contacts c ON c.referral_id = r.referral_id
GROUP BY r.referral_id
ORDER BY COUNT(c.referral_id) DESC, r.referral_id;

-- name: referral-history
-- How one referral's status and deal value moved over time (bind :referral_id).
SELECT valid_from, valid_to, status, substatus, deal_value, currency
FROM referral_history
WHERE referral_id = :referral_id
ORDER BY valid_from, id;

-- name: time-in-status
-- For each status a referral left, how many times and the average and longest days spent in it.
SELECT from_status,
       from_substatus,
       COUNT(*) AS changes,
       AVG(days_in_previous) AS average_days,
       MAX(days_in_previous) AS longest_days
FROM referral_status_changes
GROUP BY from_status, from_substatus
ORDER BY changes DESC,
         CASE WHEN from_status IS NULL THEN 1 ELSE 0 END, from_status,
         CASE WHEN from_substatus IS NULL THEN 1 ELSE 0 END, from_substatus;

-- name: referrals-per-month
-- New referrals per month of createdDateTime (UTC), with how many of them are won so far.
SELECT created_month,
       COUNT(*) AS referrals,
       SUM(CASE WHEN status = 'Closed' AND substatus = 'Won' THEN 1 ELSE 0 END) AS won
FROM referral_overview
WHERE created_month IS NOT NULL
GROUP BY created_month
ORDER BY created_month;

-- name: open-pipeline-in-reporting-currency
-- Open pipeline per status in the reporting currency, with how many referrals have a deal value but no rate (left out of the sum).
SELECT status,
       COUNT(*) AS referrals,
       COUNT(deal_value_reporting) AS with_rate,
       SUM(CASE WHEN deal_value IS NOT NULL AND deal_value_reporting IS NULL
                THEN 1 ELSE 0 END) AS without_rate,
       ROUND(COALESCE(SUM(deal_value_reporting), 0), 4) AS pipeline_value_reporting
FROM referral_pipeline
GROUP BY status
ORDER BY status;

-- name: won-deals-by-closing-month
-- Won deals per month they closed (UTC): how many, how many have a rate, and their value in the reporting currency at the closing date.
SELECT closed_month,
       COUNT(*) AS won,
       COUNT(deal_value_reporting) AS with_rate,
       ROUND(COALESCE(SUM(deal_value_reporting), 0), 4) AS won_value_reporting
FROM referral_milestones
WHERE outcome = 'won' AND closed_month IS NOT NULL
GROUP BY closed_month
ORDER BY closed_month;

-- name: median-days-created-to-accepted-by-solution
-- Median days from createdDateTime to acceptedDateTime per solution (its name, else its id), from referral_milestones.
WITH solutions AS (
    SELECT DISTINCT referral_id, COALESCE(NULLIF(name, ''), NULLIF(item_id, '')) AS solution
    FROM referral_requirements
    WHERE kind = 'solutions'
),
spans AS (
    SELECT s.solution,
           m.days_created_to_accepted AS days,
           ROW_NUMBER() OVER (PARTITION BY s.solution ORDER BY m.days_created_to_accepted) AS rn,
           COUNT(*) OVER (PARTITION BY s.solution) AS n
    FROM referral_milestones m
    JOIN solutions s ON s.referral_id = m.referral_id
    WHERE s.solution IS NOT NULL AND m.days_created_to_accepted IS NOT NULL
)
SELECT solution, MAX(n) AS referrals, AVG(days) AS median_days
FROM spans
WHERE 2 * rn BETWEEN n AND n + 2
GROUP BY solution
ORDER BY referrals DESC, median_days, solution;

-- name: median-days-accepted-to-closed-by-solution
-- Median days from acceptedDateTime to closing per solution (its name, else its id), from referral_milestones.
WITH solutions AS (
    SELECT DISTINCT referral_id, COALESCE(NULLIF(name, ''), NULLIF(item_id, '')) AS solution
    FROM referral_requirements
    WHERE kind = 'solutions'
),
spans AS (
    SELECT s.solution,
           m.days_accepted_to_closed AS days,
           ROW_NUMBER() OVER (PARTITION BY s.solution ORDER BY m.days_accepted_to_closed) AS rn,
           COUNT(*) OVER (PARTITION BY s.solution) AS n
    FROM referral_milestones m
    JOIN solutions s ON s.referral_id = m.referral_id
    WHERE s.solution IS NOT NULL AND m.days_accepted_to_closed IS NOT NULL
)
SELECT solution, MAX(n) AS referrals, AVG(days) AS median_days
FROM spans
WHERE 2 * rn BETWEEN n AND n + 2
GROUP BY solution
ORDER BY referrals DESC, median_days, solution;
