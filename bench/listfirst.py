"""List-first against by-id: requests and seconds of a first sync and a 1%-changed sync.

``python -m bench.listfirst [--referrals 20000] [--latency 0.1] [--changed 0.01]``

The sandbox serves ``--referrals`` referrals over loopback (a :class:`~etl.sandbox.ServerThread`)
with ``--latency`` seconds added to every API answer; each mode loads a fresh SQLite database
through the migrations, with the job's default settings (8 workers, batches of 100):

- **list-first**: ``run_sync`` with discovery on: the first sync reads the whole listing
  (100 referrals a request) and stores it; after ``--changed`` of the referrals change, the next
  sync reads the pages down to the previous high-water mark and stores the changes.
- **by-id**: what the job did before: every referral fetched by id (``run_backfill`` of every
  id), then a sync that fetches exactly the changed ids by id (the best case for by-id: the ids
  known for free, say from webhooks; the former discovery also read the listing to find them).

Both modes start from identical sandboxes (same count and seed) and change the same referrals.
Wall time is the run alone (schema check, lock, run row and all), not the process start. Prints
a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from etl import db
from etl.auth import BearerAuth, StaticTokenProvider
from etl.config import Settings
from etl.ids import TrackedId
from etl.report import SyncReport
from etl.sandbox import Sandbox, ServerThread
from etl.sync import RunOptions, run_backfill, run_sync

TOKEN = "bench-listfirst"
SEED = 20


def _options() -> RunOptions:
    return RunOptions(trigger="bench", auth=BearerAuth(StaticTokenProvider(TOKEN)))


def _timed(run: Callable[[], SyncReport]) -> tuple[SyncReport, float]:
    started = time.perf_counter()
    report = run()
    return report, time.perf_counter() - started


def _mode(mode: str, args: argparse.Namespace, workdir: Path) -> list[list[str]]:
    box = Sandbox(count=args.referrals, seed=SEED, request_log_size=0)
    box.faults.accepted_tokens = {TOKEN}
    box.faults.latency_seconds = args.latency
    path = workdir / f"{mode}.db"
    engine = db.create_engine_for(f"sqlite:///{path}")
    db.upgrade(engine)
    rows: list[list[str]] = []
    with ServerThread(box) as server:
        settings = Settings().replace(
            database={"url": f"sqlite:///{path}"},
            api={"base_url": server.base_url},
            sync={"discover": mode == "list-first"},
        )
        ids = list(box.ids)

        def first() -> SyncReport:
            if mode == "list-first":
                return run_sync(settings, engine, _options())
            return run_backfill(settings, engine, (TrackedId(i, "file") for i in ids), _options())

        report, seconds = _timed(first)
        rows.append(_row("first sync", mode, report, seconds))
        changed = box.change(fraction=args.changed, seed=SEED + 1)

        def again() -> SyncReport:
            if mode == "list-first":
                return run_sync(settings, engine, _options())
            return run_backfill(
                settings, engine, (TrackedId(i, "webhook") for i in changed), _options()
            )

        report, seconds = _timed(again)
        assert report.counts.updated == len(changed), report.summary()
        rows.append(_row(f"{args.changed:.0%} changed", mode, report, seconds))
    engine.dispose()
    return rows


def _row(step: str, mode: str, report: SyncReport, seconds: float) -> list[str]:
    stored = report.counts.created + report.counts.updated
    return [
        step,
        mode,
        f"{stored:,}",
        f"{report.requests:,}",
        f"{report.list_requests:,}",
        f"{report.get_requests:,}",
        f"{seconds:.1f}",
        f"{report.requests / stored:.3f}" if stored else "-",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.listfirst", description=__doc__)
    parser.add_argument("--referrals", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per API answer")
    parser.add_argument("--changed", type=float, default=0.01, help="fraction that changes")
    args = parser.parse_args(argv)
    header = ["step", "mode", "stored", "requests", "list pages", "GETs", "seconds", "req/stored"]
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-listfirst-") as tmp:
        for mode in ("list-first", "by-id"):
            rows += _mode(mode, args, Path(tmp))
    rows.sort(key=lambda r: (r[0] != "first sync", r[0], r[1] != "list-first"))
    print(
        f"{args.referrals:,} referrals, {args.latency * 1000:g} ms latency, SQLite, "
        "8 workers (defaults)\n"
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
