"""partner-referrals-etl: Partner Center referrals into your own SQL database."""

__version__ = "0.1.0"
