"""``python -m etl`` is the same as ``referrals-etl``."""

from etl.cli import main

if __name__ == "__main__":
    main()
