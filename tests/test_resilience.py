"""A sync job's worst night: throttling, faults, kills, locks, lost connections, garbage."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import (
    TOKEN,
    backfill,
    count_rows,
    make_engine,
    options_for,
    rows_of,
    settings_for,
)
from oracle import expected_rows, normalise
from sqlalchemy.engine import Engine

from etl import db, leases, store
from etl.errors import ApiUnavailableError, DatabaseError, LockHeldError
from etl.ids import TrackedId
from etl.models import CHILD_TABLES
from etl.sandbox import Sandbox, ServerThread
from etl.sync import run_backfill

VALID_PATH = re.compile(r"^/v1\.0/engagements/referrals/[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


# In-process faults -------------------------------------------------------------------------


def test_transient_503s_are_retried(sqlite_engine: Engine) -> None:
    """Two 503s in a row cost two more requests and no referral."""
    box = Sandbox(count=20, seed=1)
    box.faults.fail_next = 2
    report = backfill(
        sqlite_engine, box, settings=settings_for(sqlite_engine, api={"max_attempts": 4})
    )
    assert (report.counts.created, report.counts.failed) == (20, 0)
    assert report.by_status.get(503) == 2
    assert report.requests == 22


def test_an_id_failing_beyond_max_attempts_is_backed_off(sqlite_engine: Engine) -> None:
    """Ids that exhaust their attempts are marked failed and not due for 40 s; the rest load."""
    box = Sandbox(count=30, seed=2)
    box.faults.error_rate_503 = 0.35
    settings = settings_for(sqlite_engine, api={"max_attempts": 2, "breaker_failures": 0})
    report = backfill(sqlite_engine, box, settings=settings)
    assert report.counts.failed > 0
    assert 30 - report.counts.failed == report.counts.created
    assert report.exit_code == 1
    failed = [r for r in rows_of(sqlite_engine, "sync_state") if r["consecutive_failures"]]
    assert len(failed) == report.counts.failed
    for row in failed:
        assert "HTTP 503" in row["last_error"]
        assert "gave up after 2 attempts" in row["last_error"]
        assert row["next_attempt_at"] > row["last_attempt_at"] + timedelta(seconds=40)


def test_circuit_breaker_stops_a_run_against_a_dead_api(sqlite_engine: Engine) -> None:
    """Ten failures in a row end the run early as failed, its lock released."""
    box = Sandbox(count=200, seed=3)
    box.faults.down = True
    settings = settings_for(sqlite_engine, api={"max_attempts": 3, "breaker_failures": 10})
    with pytest.raises(ApiUnavailableError, match="failed 10 requests in a row"):
        backfill(sqlite_engine, box, settings=settings)
    assert box.stats.total < 40  # stopped early instead of grinding through 200 ids x 3
    [run] = rows_of(sqlite_engine, "sync_runs")
    assert run["status"] == "failed"
    assert "in a row" in run["message"]
    assert rows_of(sqlite_engine, "sync_locks") == []


class _Recording(httpx.AsyncBaseTransport):
    """Passes requests on and notes each answer's status, in order."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.statuses.append(response.status_code)
        return response


def test_a_throttled_run_stores_every_referral(sqlite_engine: Engine) -> None:
    """Against a 100 rps limit, 429s are paused over and every referral is stored, none failed."""
    box = Sandbox(count=400, seed=4)
    box.faults.throttle_rps = 100
    settings = settings_for(sqlite_engine, api={"concurrency": 16})
    options = options_for(box, trigger="backfill")
    recording = _Recording(box.transport())
    options.transport = recording
    report = run_backfill(settings, sqlite_engine, (TrackedId(i, "file") for i in box.ids), options)
    assert (report.counts.created, report.counts.failed) == (400, 0)
    statuses = recording.statuses
    assert len(statuses) == report.requests
    assert statuses.count(429) == report.throttled
    assert report.throttled > 0
    # How fast the 429s shrink depends on the machine's speed against a real-time limit; the
    # pacing arithmetic itself (halve on a 429, climb back) is pinned on a fake clock in
    # tests/test_throttle.py. Here: a throttled run ends with every referral and no failure.


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("invalid_json_ids", "not valid JSON"),
        ("truncated_ids", "not valid JSON"),
        ("non_object_ids", "not an object"),
        ("wrong_content_type_ids", "not JSON"),
        ("oversized_ids", "larger than api.max_body_bytes"),
        ("mismatched_id_ids", "returned a document for id"),
    ],
)
def test_bad_bodies_fail_that_id_only(sqlite_engine: Engine, fault: str, message: str) -> None:
    """A body that is not a well-formed referral fails its own id with a clear error."""
    box = Sandbox(count=12, seed=5)
    bad = box.ids[4]
    setattr(box.faults, fault, {bad})
    settings = settings_for(sqlite_engine, api={"max_body_bytes": 1_000_000})
    report = backfill(sqlite_engine, box, settings=settings)
    assert (report.counts.failed, report.counts.created) == (1, 11)
    state = {r["referral_id"]: r for r in rows_of(sqlite_engine, "sync_state")}
    assert message in state[bad]["last_error"]
    assert bad not in {r["id"] for r in rows_of(sqlite_engine, "referrals")}


def test_no_request_ever_leaves_the_referral_path(sqlite_engine: Engine, tmp_path: Path) -> None:
    """Ids that would escape the path (.., /, ?, #, NUL, wide letters) are refused, never sent."""
    box = Sandbox(count=5, seed=6)
    evil = ["../../admin", "a/b", "x?y=1", "%2e%2e", "ｘ", "a\u0000b", "a b", "..", "/", "id#frag"]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join([*box.ids, *evil]) + "\n")
    from etl.ids import read_ids

    bad: list[Any] = []
    ids = list(read_ids(str(ids_file), bad.append))
    assert [t.id for t in ids] == box.ids
    backfill(sqlite_engine, box, ids=[t.id for t in ids])
    assert box.requests
    assert all(VALID_PATH.match(path) for _, path, _, _ in box.requests)
    assert len(bad) == len(evil)


# Locks -------------------------------------------------------------------------------------


def test_a_held_lock_is_refused_to_another_owner(sqlite_engine: Engine) -> None:
    """While one owner holds the sync lease, another cannot take it."""
    leases.acquire_lock(sqlite_engine, "sync", "host:1", 60)
    with pytest.raises(LockHeldError, match="another run holds the sync lock"):
        leases.acquire_lock(sqlite_engine, "sync", "host:2", 60)


def test_an_expired_lease_is_taken_over(sqlite_engine: Engine) -> None:
    """A dead run's expired lease goes to the next owner, and the dead run is marked failed."""
    leases.acquire_lock(sqlite_engine, "sync", "host:1", 60)
    run_id = leases.start_run(sqlite_engine, "cli")  # a run whose process then dies
    with sqlite_engine.begin() as conn:
        conn.execute(
            sa.update(leases.sync_locks).values(expires_at=store.utcnow() - timedelta(seconds=1))
        )
    leases.acquire_lock(sqlite_engine, "sync", "host:3", 60)
    [lock] = rows_of(sqlite_engine, "sync_locks")
    assert lock["owner"] == "host:3"
    [run] = [r for r in rows_of(sqlite_engine, "sync_runs") if r["id"] == run_id]
    assert run["status"] == "failed"
    assert "died" in run["message"]


# Real processes ----------------------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[Sandbox, str]]:
    box = Sandbox(count=2000, seed=12)
    box.faults.accepted_tokens = {TOKEN}
    with ServerThread(box) as server:
        yield box, server.base_url


def _env(url: str, base_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_ETL_")}
    env.update(
        REFERRALS_ETL_DATABASE_URL=url,
        REFERRALS_ETL_API_BASE_URL=base_url,
        REFERRALS_ETL_AUTH_MODE="access_token",
        REFERRALS_ETL_AUTH_ACCESS_TOKEN=TOKEN,
        REFERRALS_ETL_SYNC_DISCOVER="false",
        REFERRALS_ETL_SYNC_BATCH_SIZE="50",
        **extra,
    )
    return env


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "etl", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _referral_count(engine: Engine) -> int:
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT COUNT(*) FROM referrals")).scalar_one())
    except sa.exc.OperationalError:
        return 0


def _content(engine: Engine) -> dict[str, Any]:
    """Referral, child and history rows without the times at which they were written."""
    skip = {
        "first_seen_at",
        "last_changed_at",
        "last_checked_at",
        "valid_from",
        "valid_to",
        "id",
        "payload",
    }
    out: dict[str, Any] = {}
    for table in ("referrals", *CHILD_TABLES, "referral_history"):
        rows = [
            normalise(
                {
                    k: v
                    for k, v in r.items()
                    if k not in skip or (table == "referrals" and k == "id")
                }
            )
            for r in rows_of(engine, table)
        ]
        out[table] = sorted(rows, key=repr)
    return out


def test_a_rerun_after_sigkills_equals_an_uninterrupted_run(
    served: tuple[Sandbox, str], tmp_path: Path, database_urls: dict[str, Any]
) -> None:
    """Three runs killed at any moment leave whole referrals; a rerun gives the same rows."""
    box, base_url = served
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(box.ids) + "\n")
    (tmp_path / "ref").mkdir()
    reference = make_engine("sqlite", database_urls, tmp_path / "ref")
    backfill(reference, box)  # the uninterrupted run
    expected = _content(reference)

    (tmp_path / "k").mkdir()
    killed = make_engine("sqlite", database_urls, tmp_path / "k")
    url = killed.url.render_as_string(hide_password=False)
    env = _env(url, base_url)
    for moment in (300, 900, 1500):
        with _start(["backfill", str(ids_file)], env) as process:  # closes its pipes
            deadline = time.monotonic() + 60
            while (
                _referral_count(killed) < moment
                and process.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL
        # Every stored referral is whole at the instant of the kill.
        stored = {r["id"] for r in rows_of(killed, "referrals")}
        customers = {r["referral_id"] for r in rows_of(killed, "referral_customers")}
        assert stored == customers
        with killed.begin() as conn:  # the dead run's lease expires (as time would have it)
            conn.execute(
                sa.update(leases.sync_locks).values(
                    expires_at=store.utcnow() - timedelta(seconds=1)
                )
            )
    result = subprocess.run(
        [sys.executable, "-m", "etl", "backfill", str(ids_file)],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert expected == _content(killed)
    statuses = [r["status"] for r in rows_of(killed, "sync_runs")]
    assert statuses[-1] == "succeeded"
    assert statuses.count("failed") >= 1


def test_two_runs_at_once_one_exits_75(
    served: tuple[Sandbox, str], sqlite_engine: Engine, tmp_path: Path
) -> None:
    """Of two backfills started together, one runs and the other exits 75, recorded skipped."""
    box, base_url = served
    box.faults.latency_seconds = 0.1  # the winner runs ~5 s, far longer than a start-up
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(box.ids[:400]) + "\n")
    env = _env(sqlite_engine.url.render_as_string(hide_password=False), base_url)
    with (
        _start(["backfill", str(ids_file)], env) as first,
        _start(["backfill", str(ids_file)], env) as second,
    ):
        codes = sorted([first.wait(timeout=120), second.wait(timeout=120)])
        loser = first if first.returncode == 75 else second
        _out, loser_err = loser.communicate()
    assert codes == [0, 75]
    assert "another run holds the sync lock" in loser_err
    runs = sorted(r["status"] for r in rows_of(sqlite_engine, "sync_runs"))
    assert runs == ["skipped", "succeeded"]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_commits_in_flight_work_before_exiting(
    served: tuple[Sandbox, str], sqlite_engine: Engine, tmp_path: Path, sig: int, code: int
) -> None:
    """SIGTERM/SIGINT: what was fetched is stored and counted, the run recorded interrupted."""
    box, base_url = served
    box.faults.latency_seconds = 0.05
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(box.ids) + "\n")
    with _start(
        ["backfill", str(ids_file)],
        _env(sqlite_engine.url.render_as_string(hide_password=False), base_url),
    ) as process:
        deadline = time.monotonic() + 30
        while _referral_count(sqlite_engine) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(sig)
        process.wait(timeout=30)
    assert process.returncode == code
    [run] = rows_of(sqlite_engine, "sync_runs")
    assert run["status"] == "interrupted"
    stored = count_rows(sqlite_engine)["referrals"]
    assert 100 <= stored < 2000
    assert run["created"] == stored  # everything fetched was committed and counted
    assert rows_of(sqlite_engine, "sync_locks") == []


@pytest.mark.postgres
def test_postgres_connection_killed_mid_run(database_urls: dict[str, Any], tmp_path: Path) -> None:
    """Connections killed under a run never leave a partial referral or a duplicate version."""
    engine = make_engine("postgres", database_urls, tmp_path)
    box = Sandbox(count=1500, seed=13)
    box.faults.latency_seconds = 0.002
    killer_engine = db.create_engine_for(engine.url.render_as_string(hide_password=False))
    stop = threading.Event()
    kills: list[int] = []

    def killer() -> None:
        time.sleep(0.3)
        while not stop.is_set() and len(kills) < 3:
            with killer_engine.connect() as conn:
                n: int = conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
                conn.commit()
            kills.append(n)
            time.sleep(0.4)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        report = backfill(engine, box, settings=settings_for(engine, sync={"batch_size": 25}))
        outcome = "completed"
    except DatabaseError:  # exit 5 is an allowed ending; any other error fails the test
        outcome = "exit 5"
    finally:
        stop.set()
        thread.join()
    assert sum(kills) > 0, "the test killed no connection"
    engine.dispose()  # the test's own pooled connections were killed too
    stored = {r["id"]: r for r in rows_of(engine, "referrals")}
    if outcome == "completed":
        assert report.counts.created + report.counts.unchanged >= len(stored)
    children: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for table in CHILD_TABLES:
        for row in rows_of(engine, table):
            children.setdefault((table, row["referral_id"]), []).append(normalise(row))
    for referral_id in stored:
        expected = expected_rows(box.document(referral_id))
        for table in CHILD_TABLES:
            got = children.get((table, referral_id), [])
            assert got == [normalise(r) for r in expected[table]], (table, referral_id)
    versions: dict[str, int] = {}
    for row in rows_of(engine, "referral_history"):
        versions[row["referral_id"]] = versions.get(row["referral_id"], 0) + 1
    assert all(n == 1 for n in versions.values())
    assert set(stored) == set(versions)
    killer_engine.dispose()
    engine.dispose()  # its pooled PostgreSQL connections, not left for the garbage collector
