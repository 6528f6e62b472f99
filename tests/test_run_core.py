"""The run core under the faults that used to hang it or mislabel it (issue: the run core).

A writer that dies ends the run (exit 5, recorded `failed`, lease released) instead of hanging;
a missing table is the database's failure, not thousands of bad referrals; a lease takeover
fails only the dead owner's runs; an id given twenty times is fetched once.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import TOKEN, backfill, make_engine, rows_of
from sqlalchemy.engine import Engine

from etl import store
from etl.errors import DatabaseError
from etl.sandbox import Sandbox, ServerThread

MISSING = "referral_targets"  # a child table: every new referral writes to it


@contextlib.contextmanager
def _table_away(engine: Engine, table: str = MISSING) -> Iterator[None]:
    """Rename ``table`` away (as if dropped) and put it back afterwards; views follow it."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {table} RENAME TO {table}_away"))
    try:
        yield
    finally:
        engine.dispose()
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {table}_away RENAME TO {table}"))


def test_a_missing_table_fails_the_run_with_exit_5_not_every_referral(engine: Engine) -> None:
    box = Sandbox(count=30, seed=21)
    with _table_away(engine), pytest.raises(DatabaseError) as caught:
        backfill(engine, box)
    assert caught.value.exit_code == 5
    assert MISSING in str(caught.value).lower() or "table" in str(caught.value).lower()
    [run] = rows_of(engine, "sync_runs")
    assert run["status"] == "failed" and run["finished_at"] is not None
    assert rows_of(engine, "sync_locks") == []
    # No referral was blamed for the database's failure.
    assert [r for r in rows_of(engine, "sync_state") if r["consecutive_failures"]] == []
    report = caught.value.report
    assert report is not None and report.status == "failed"


def test_an_id_given_twenty_times_is_fetched_once(sqlite_engine: Engine) -> None:
    box = Sandbox(count=10, seed=22)
    twice = box.ids[3]
    box.faults.invalid_json_ids = {twice}
    ids = [*box.ids[:3], *([twice] * 20), *box.ids[4:], twice]
    report = backfill(sqlite_engine, box, ids=ids)
    asked = [path.rsplit("/", 1)[-1] for _, path, _, _ in box.requests]
    assert sorted(asked) == sorted(box.ids)  # every id once, the repeated one too
    assert report.ids_total == 10 and report.requests == 10
    assert (report.counts.created, report.counts.failed) == (9, 1)
    [state] = [r for r in rows_of(sqlite_engine, "sync_state") if r["referral_id"] == twice]
    assert state["consecutive_failures"] == 1
    [run] = rows_of(sqlite_engine, "sync_runs")
    assert (run["ids_total"], run["failed"], run["created"]) == (10, 1, 9)


def test_a_takeover_fails_only_the_dead_owners_runs(sqlite_engine: Engine) -> None:
    """Two shards of one backfill hold a lease each; one dies; its rerun takes over its lease."""
    leases = {
        "dead": ("backfill-0-of-2", "host-a:11:x"),
        "live": ("backfill-1-of-2", "host-b:22:y"),
    }
    runs = {}
    for who, (name, owner) in leases.items():
        store.acquire_lock(sqlite_engine, name, owner, 60)
        runs[who] = store.start_run(sqlite_engine, "backfill", lease=(name, owner))
    with sqlite_engine.begin() as conn:  # the dead shard's lease runs out
        conn.execute(
            sa.update(store.sync_locks)
            .where(store.sync_locks.c.name == "backfill-0-of-2")
            .values(expires_at=store.utcnow() - timedelta(seconds=1))
        )
    store.acquire_lock(sqlite_engine, "backfill-0-of-2", "host-c:33:z", 60)
    status = {r["id"]: r for r in rows_of(sqlite_engine, "sync_runs")}
    assert status[runs["dead"]]["status"] == "failed"
    assert "lease" in status[runs["dead"]]["message"]
    assert status[runs["live"]]["status"] == "running"  # a live shard is left alone
    assert (status[runs["live"]]["lease_name"], status[runs["live"]]["lease_owner"]) == leases[
        "live"
    ]


def test_runs_record_the_lease_they_hold(sqlite_engine: Engine) -> None:
    box = Sandbox(count=5, seed=23)
    backfill(sqlite_engine, box)
    [run] = rows_of(sqlite_engine, "sync_runs")
    assert run["lease_name"] == "sync" and run["lease_owner"]
    assert run["status"] == "succeeded"


# The writer dies mid-run, from the CLI -----------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[Sandbox, str]]:
    box = Sandbox(count=3000, seed=24)
    box.faults.accepted_tokens = {TOKEN}
    with ServerThread(box) as server:
        yield box, server.base_url


def _env(url: str, base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_ETL_")}
    env.update(
        REFERRALS_ETL_DATABASE_URL=url,
        REFERRALS_ETL_API_BASE_URL=base_url,
        REFERRALS_ETL_AUTH_MODE="access_token",
        REFERRALS_ETL_AUTH_ACCESS_TOKEN=TOKEN,
        REFERRALS_ETL_SYNC_DISCOVER="false",
        REFERRALS_ETL_SYNC_BATCH_SIZE="10",
    )
    return env


def _stored(engine: Engine) -> int:
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT COUNT(*) FROM referrals")).scalar_one())
    except sa.exc.DBAPIError:
        return 0


@pytest.mark.parametrize(
    "dialect", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_writer_that_dies_mid_run_ends_it_with_exit_5(
    served: tuple[Sandbox, str], database_urls: dict[str, Any], tmp_path: Path, dialect: str
) -> None:
    """The table goes away under a 3,000-id backfill: exit 5, `failed`, no hang, no lease left."""
    box, base_url = served
    engine = make_engine(dialect, database_urls, tmp_path)
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(box.ids) + "\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "etl", "backfill", str(ids_file)],
        env=_env(engine.url.render_as_string(hide_password=False), base_url),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    moved = threading.Event()
    try:
        deadline = time.monotonic() + 60
        while _stored(engine) < 200 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {MISSING} RENAME TO {MISSING}_away"))
        moved.set()
        try:
            _out, err = process.communicate(timeout=90)  # a hang fails here
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail("the run hung after its writer failed")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if moved.is_set():
            engine.dispose()
            with engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE {MISSING}_away RENAME TO {MISSING}"))
    assert process.returncode == 5, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "database" in lines[0] and "Traceback" not in err
    [run] = rows_of(engine, "sync_runs")
    assert run["status"] == "failed" and run["finished_at"] is not None
    assert rows_of(engine, "sync_locks") == []
    assert [r for r in rows_of(engine, "sync_state") if r["consecutive_failures"]] == []
    engine.dispose()
