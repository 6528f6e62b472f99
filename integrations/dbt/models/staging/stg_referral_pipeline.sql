select * from {{ source('referrals_etl', 'referral_pipeline') }}
