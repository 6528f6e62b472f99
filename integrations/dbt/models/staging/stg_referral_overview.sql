select * from {{ source('referrals_etl', 'referral_overview') }}
