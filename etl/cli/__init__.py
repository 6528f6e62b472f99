"""The `referrals-etl` commands: the only package that prints, draws progress or exits.

Every failure becomes one line a person can act on and its exit code; ``-v`` adds details,
``-vv`` a traceback. One module per command group (:mod:`etl.cli.database`,
:mod:`etl.cli.runs`, :mod:`etl.cli.sandbox`, :mod:`etl.cli.webhooks`, :mod:`etl.cli.auth`) over
what they share (:mod:`etl.cli.app`); :mod:`etl.cli.entry` maps errors to exit codes.

Start-up stays fast: these modules import only click and the job's light modules at the top.
SQLAlchemy, Alembic, httpx, aiohttp, MSAL and the modules that use them are imported inside the
commands that need them, so ``--help`` (and every command's ``--help``) loads none of them
(tests/test_startup.py checks which modules each command loads). Nothing outside this package
imports it, except ``python -m etl``.
"""

from etl.cli.app import cli
from etl.cli.entry import main

__all__ = ["cli", "main"]
