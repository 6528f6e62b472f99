select * from {{ source('referrals_etl', 'referral_status_changes') }}
