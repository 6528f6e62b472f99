"""`referrals-etl demo`: the whole job on embedded defaults, in one process.

A sandbox API in process, a SQLite file, the migrations, a first backfill, then the sandbox
changes and deletes some referrals and a second pass shows what the job notices. Last, real
time: `serve` runs in a thread, the sandbox changes one referral and sends Partner Center's
signed callback for it (from its own test CA), and the demo prints how long the change took
to reach SQL.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from etl import db
from etl.auth import BearerAuth, StaticTokenProvider
from etl.config import Settings
from etl.ids import TrackedId
from etl.models import TABLES
from etl.report import SyncReport
from etl.sandbox import Sandbox
from etl.sync import RunOptions, run_backfill

Echo = Callable[[str], None]
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
    echo("")
    _real_time(settings, engine, box, echo)
    echo(f"explore it: sqlite3 {engine.url.database} 'SELECT * FROM webhook_events'")  # noqa: S608


def _real_time(settings: Settings, engine: sa.Engine, box: Sandbox, echo: Echo) -> None:
    """`serve` in a thread; the sandbox changes a referral and sends its signed callback."""
    from etl.sandbox.signing import TestAuthority
    from etl.sandbox.webhooks import CertificateServer, WebhookSender
    from etl.stopping import StopRequest
    from etl.webhooks.serve import run_serve

    authority = TestAuthority()
    with tempfile.TemporaryDirectory(prefix="referrals-demo-") as scratch:
        ca_file = Path(scratch, "sandbox-ca.pem")
        ca_file.write_bytes(authority.ca_pem())
        with CertificateServer(authority) as certificates:
            served = settings.replace(
                webhook={"ca_bundle": str(ca_file), "certificate_hosts": certificates.host}
            )
            stop, ready, port = StopRequest(), threading.Event(), [0]

            def on_ready(bound: int) -> None:
                port[0] = bound
                ready.set()

            thread = threading.Thread(
                target=run_serve,
                args=(served, "127.0.0.1", 0),
                kwargs={
                    "schedule": False,
                    "transport": box.transport(),
                    "auth": BearerAuth(StaticTokenProvider(_TOKEN)),
                    "stop": stop,
                    "on_ready": on_ready,
                },
                daemon=True,
            )
            thread.start()
            try:
                if not ready.wait(30):
                    raise RuntimeError("the webhook receiver did not start")
                url = f"http://127.0.0.1:{port[0]}{served.webhook.path}"
                echo(f"real time: `serve` receives signed webhooks at {url}")
                with WebhookSender(box, url, authority, certificates.url()):
                    referral_id = box.ids[0]
                    started = time.perf_counter()
                    box.change(ids=[referral_id])
                    wanted = box.etag(referral_id)
                    seconds = _wait_stored(engine, referral_id, wanted, started)
            finally:
                stop.request("demo over")
                thread.join(60)
    if seconds is None:
        echo(f"the sandbox changed referral {referral_id}; it did not reach SQL within 30 s")
    else:
        echo(
            f"the sandbox changed referral {referral_id}; Partner Center-style signed callback "
            f"-> verified -> fetched -> in SQL {seconds:.2f} s later"
        )


def _wait_stored(engine: sa.Engine, referral_id: str, etag: str, started: float) -> float | None:
    state = TABLES["sync_state"]
    while time.perf_counter() - started < 30:
        with engine.connect() as conn:
            stored = conn.execute(
                sa.select(state.c.etag).where(state.c.referral_id == referral_id)
            ).scalar_one_or_none()
        if stored == etag:
            return time.perf_counter() - started
        time.sleep(0.02)
    return None
