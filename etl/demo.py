"""`referrals-etl demo`: the whole job on embedded defaults, in one process.

A sandbox API in process, a SQLite file, the migrations, a first backfill, then the sandbox
changes and deletes some referrals and a second pass shows what the job notices.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from etl import db
from etl.auth import BearerAuth, StaticTokenProvider
from etl.config import Settings
from etl.ids import TrackedId
from etl.sandbox import Sandbox
from etl.sync import RunOptions, SyncReport, run_backfill

DEFAULT_DATABASE = "sqlite:///referrals-demo.db"
_TOKEN = "demo-token"  # the in-process sandbox accepts only this made-up token

SAMPLE_QUERY = """\
SELECT status, currency, COUNT(*) AS referrals, SUM(deal_value) AS pipeline
FROM referral_overview
WHERE status IN ('New', 'Active')
GROUP BY status, currency
ORDER BY pipeline DESC
LIMIT 6"""


def run_demo(database: str, count: int, echo: Callable[[str], None]) -> None:
    if database == DEFAULT_DATABASE:
        Path("referrals-demo.db").unlink(missing_ok=True)
    settings = Settings().replace(
        database={"url": database},
        api={"base_url": "http://sandbox.local/v1.0", "concurrency": 16},
        sync={"discover": False},
    )
    engine = db.create_engine_for(database)
    db.upgrade(engine)
    echo(f"database {db.describe(engine)} migrated to {db.current_revision(engine)}")

    box = Sandbox(count=count, seed=7)
    box.faults.accepted_tokens = {_TOKEN}
    all_ids = list(box.ids)

    def backfill(label: str) -> SyncReport:
        options = RunOptions(
            trigger="backfill",
            transport=box.transport(),
            auth=BearerAuth(StaticTokenProvider(_TOKEN)),
        )
        ids = (TrackedId(i, "file") for i in all_ids)
        report = run_backfill(settings, engine, ids, options)
        echo(f"{label}: {report.summary()}")
        return report

    backfill("first pass ")
    changed = box.change(fraction=0.1, seed=1)
    gone = [i for i in all_ids if i not in set(changed)][:5]
    box.delete(gone)
    echo(f"the sandbox changed {len(changed)} referrals and deleted {len(gone)}")
    backfill("second pass")

    echo("")
    echo("open pipeline by status and currency (a query analysts run):")
    echo(SAMPLE_QUERY)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(SAMPLE_QUERY)).all()
    echo(f"{'status':<8} {'currency':<8} {'referrals':>9} {'pipeline':>16}")
    for status, currency, n, pipeline in rows:
        amount = f"{float(str(pipeline)):,.2f}" if pipeline is not None else "-"
        echo(f"{status or '-':<8} {currency or '-':<8} {n:>9} {amount:>16}")
    echo("")
    echo(f"explore it: sqlite3 {engine.url.database} 'SELECT * FROM sync_runs'")  # noqa: S608
