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
from conftest import TOKEN, backfill, make_engine, rows_of, settings_for
from sqlalchemy.engine import Engine

from etl import store
from etl.errors import DatabaseError
from etl.leases import acquire_lock, start_run, sync_locks
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
    """A database failure ends the run (exit 5, recorded failed) and blames no referral."""
    box = Sandbox(count=30, seed=21)
    with _table_away(engine), pytest.raises(DatabaseError) as caught:
        backfill(engine, box)
    assert caught.value.exit_code == 5
    assert MISSING in str(caught.value).lower() or "table" in str(caught.value).lower()
    [run] = rows_of(engine, "sync_runs")
    assert run["status"] == "failed"
    assert run["finished_at"] is not None
    assert rows_of(engine, "sync_locks") == []
    # No referral was blamed for the database's failure.
    assert [r for r in rows_of(engine, "sync_state") if r["consecutive_failures"]] == []
    report = caught.value.report
    assert report is not None
    assert report.status == "failed"


def test_an_id_given_twenty_times_is_fetched_once(sqlite_engine: Engine) -> None:
    """A repeated id is one request, one outcome and one count, even when it fails."""
    box = Sandbox(count=10, seed=22)
    twice = box.ids[3]
    box.faults.invalid_json_ids = {twice}
    ids = [*box.ids[:3], *([twice] * 20), *box.ids[4:], twice]
    report = backfill(sqlite_engine, box, ids=ids)
    asked = [path.rsplit("/", 1)[-1] for _, path, _, _ in box.requests]
    assert sorted(asked) == sorted(box.ids)  # every id once, the repeated one too
    assert report.ids_total == 10
    assert report.requests == 10
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
        acquire_lock(sqlite_engine, name, owner, 60)
        runs[who] = start_run(sqlite_engine, "backfill", lease=(name, owner))
    with sqlite_engine.begin() as conn:  # the dead shard's lease runs out
        conn.execute(
            sa.update(sync_locks)
            .where(sync_locks.c.name == "backfill-0-of-2")
            .values(expires_at=store.utcnow() - timedelta(seconds=1))
        )
    acquire_lock(sqlite_engine, "backfill-0-of-2", "host-c:33:z", 60)
    status = {r["id"]: r for r in rows_of(sqlite_engine, "sync_runs")}
    assert status[runs["dead"]]["status"] == "failed"
    assert "lease" in status[runs["dead"]]["message"]
    assert status[runs["live"]]["status"] == "running"  # a live shard is left alone
    assert (status[runs["live"]]["lease_name"], status[runs["live"]]["lease_owner"]) == leases[
        "live"
    ]


def test_runs_record_the_lease_they_hold(sqlite_engine: Engine) -> None:
    """A backfill's sync_runs row names the lease and owner it ran under."""
    box = Sandbox(count=5, seed=23)
    backfill(sqlite_engine, box)
    [run] = rows_of(sqlite_engine, "sync_runs")
    assert run["lease_name"] == "sync"
    assert run["lease_owner"]
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
    assert len(lines) == 1
    assert "database" in lines[0]
    assert "Traceback" not in err
    [run] = rows_of(engine, "sync_runs")
    assert run["status"] == "failed"
    assert run["finished_at"] is not None
    assert rows_of(engine, "sync_locks") == []
    assert [r for r in rows_of(engine, "sync_state") if r["consecutive_failures"]] == []
    engine.dispose()


@pytest.mark.postgres
def test_postgres_refusing_connections_for_10s_mid_backfill(
    database_urls: dict[str, Any], tmp_path: Path
) -> None:
    """A 10-second outage mid-backfill ends the run by itself, and the next run completes.

    The scratch database refuses every connection (its sessions killed too) in the middle of an
    8,000-id backfill: the run rides the outage out or exits 5, its lease released.
    """
    from conftest import POSTGRES_URL

    from etl import db

    engine = make_engine("postgres", database_urls, tmp_path)
    name = engine.url.database
    assert name is not None
    assert name.startswith("etl_test_")  # never `test` itself
    box = Sandbox(count=8000, seed=25)
    box.faults.accepted_tokens = {TOKEN}
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(box.ids) + "\n")
    admin = db.create_engine_for(POSTGRES_URL, isolation_level="AUTOCOMMIT")

    def allow(flag: bool) -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(flag).lower()}'))
            if not flag:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )

    with ServerThread(box) as server:
        env = _env(engine.url.render_as_string(hide_password=False), server.base_url)
        env["REFERRALS_ETL_SYNC_BATCH_SIZE"] = "50"
        process = subprocess.Popen(
            [sys.executable, "-m", "etl", "backfill", str(ids_file)],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 120
            while _stored(engine) < 2000 and process.poll() is None:
                if time.monotonic() >= deadline:  # a guard against hanging, not a timing claim
                    pytest.fail("the backfill made no progress")
                time.sleep(0.05)
            engine.dispose()
            assert process.poll() is None, "the backfill ended before the outage"
            allow(False)
            time.sleep(10)
            allow(True)
            try:
                _out, err = process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                pytest.fail("the run did not end by itself after the outage")
        finally:
            allow(True)
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode in (0, 5), err
        assert rows_of(engine, "sync_locks") == []
        [run] = rows_of(engine, "sync_runs")
        assert run["status"] == ("succeeded" if process.returncode == 0 else "failed")
        again = subprocess.run(
            [sys.executable, "-m", "etl", "backfill", str(ids_file)],
            env=env,
            text=True,
            capture_output=True,
            timeout=300,
        )
    assert again.returncode == 0, again.stderr
    assert _stored(engine) == 8000
    assert rows_of(engine, "sync_locks") == []
    admin.dispose()
    engine.dispose()


def test_a_stop_ends_a_long_retry_after_wait_at_once(sqlite_engine: Engine) -> None:
    """A stop request ends a 10-minute Retry-After wait at once: no wait outlives a stop.

    Every worker is waiting it out; the run is recorded as interrupted, its lease released.
    """
    import httpx

    from etl.auth import BearerAuth, StaticTokenProvider
    from etl.errors import InterruptedRunError
    from etl.ids import TrackedId
    from etl.sync import RunOptions, run_backfill

    asked = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        asked.set()
        return httpx.Response(429, headers={"Retry-After": "600"})

    options = RunOptions(
        transport=httpx.MockTransport(handler), auth=BearerAuth(StaticTokenProvider("t"))
    )
    ids = [TrackedId(f"id-{n}", "file") for n in range(50)]
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["report"] = run_backfill(
                settings_for(sqlite_engine), sqlite_engine, ids, options
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert asked.wait(30)
    options.stop.request("SIGTERM", 15)
    thread.join(30)  # a deadline against a hang, not a measured duration
    assert not thread.is_alive(), "the run kept waiting after the stop request"
    error = outcome.get("error")
    assert isinstance(error, InterruptedRunError)
    assert error.exit_code == 143
    assert error.report is not None
    assert error.report.status == "interrupted"
    [run_row] = rows_of(sqlite_engine, "sync_runs")
    assert run_row["status"] == "interrupted"
    assert rows_of(sqlite_engine, "sync_locks") == []


def test_a_run_whose_lease_is_taken_over_exits_75(sqlite_engine: Engine) -> None:
    """A run whose lease another run took over stops with exit 75.

    It stops taking ids, commits what it fetched and is recorded interrupted.
    """
    import asyncio

    import httpx

    from etl.auth import BearerAuth, StaticTokenProvider
    from etl.errors import LockHeldError
    from etl.ids import TrackedId
    from etl.sync import RunOptions, run_backfill

    box = Sandbox(count=300, seed=26)
    inner = box.transport()
    answered = threading.Event()
    count = [0]

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)
        count[0] += 1
        if count[0] >= 20:
            answered.set()
        response: httpx.Response = await inner.handle_async_request(request)
        return response

    box.faults.accepted_tokens = {TOKEN}
    options = RunOptions(
        transport=httpx.MockTransport(slow), auth=BearerAuth(StaticTokenProvider(TOKEN))
    )
    settings = settings_for(sqlite_engine, api={"concurrency": 2}, sync={"lock_lease": 3.0})
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["report"] = run_backfill(
                settings, sqlite_engine, (TrackedId(i, "file") for i in box.ids), options
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert answered.wait(30)
    with sqlite_engine.begin() as conn:  # another run takes the lease over
        conn.execute(sa.update(sync_locks).values(owner="thief:1:x"))
    thread.join(60)  # a deadline against a hang, not a measured duration
    assert not thread.is_alive()
    error = outcome.get("error")
    assert isinstance(error, LockHeldError), outcome
    assert error.exit_code == 75, outcome
    assert "lease was taken over" in str(error)
    [run_row] = rows_of(sqlite_engine, "sync_runs")
    assert run_row["status"] == "interrupted"
    stored = len(rows_of(sqlite_engine, "referrals"))
    assert 0 < stored < 300
    assert run_row["created"] == stored
    assert [r["owner"] for r in rows_of(sqlite_engine, "sync_locks")] == ["thief:1:x"]


@pytest.mark.parametrize(
    "dialect",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_a_deadlock_between_two_writers_is_retried_not_fatal(
    database_urls: dict[str, Any], tmp_path: Path, dialect: str
) -> None:
    """A transaction the server aborts to break a deadlock is retried, and both writers commit.

    Two writers lock two rows in opposite orders; the server aborts one of them.
    """
    import asyncio

    from etl.db_policy import Database

    engine = make_engine(dialect, database_urls, tmp_path)
    runs = [start_run(engine, "cli"), start_run(engine, "cli")]
    barrier = threading.Barrier(2, timeout=30)
    first_try = {"a": True, "b": True}

    def write(name: str, order: list[int]) -> str:
        with engine.begin() as conn:
            for n, run_id in enumerate(order):
                conn.execute(
                    sa.update(store.sync_runs)
                    .where(store.sync_runs.c.id == run_id)
                    .values(message=f"{name} {n}")
                )
                if n == 0 and first_try[name]:
                    first_try[name] = False
                    barrier.wait()  # both hold their first row: each now waits for the other
        return name

    async def both() -> list[str]:
        database = Database(engine)
        try:
            return list(
                await asyncio.gather(
                    database.call(write, "a", runs), database.call(write, "b", runs[::-1])
                )
            )
        finally:
            database.close()

    assert asyncio.run(both()) == ["a", "b"]
    messages = {r["message"] for r in rows_of(engine, "sync_runs")}
    assert messages <= {"a 0", "a 1", "b 0", "b 1"}
    assert len(messages) == 2
    engine.dispose()


def test_database_calls_run_on_the_runs_own_two_threads(sqlite_engine: Engine) -> None:
    """Eight calls at once run on the run's two etl-db threads, not asyncio's default pool."""
    import asyncio

    from etl.db_policy import Database

    async def names() -> set[str]:
        database = Database(sqlite_engine)
        try:
            calls = (database.call(lambda: threading.current_thread().name) for _ in range(8))
            return set(await asyncio.gather(*calls))
        finally:
            database.close()

    assert asyncio.run(names()) <= {"etl-db_0", "etl-db_1"}


@pytest.fixture
def postgres_engine(database_urls: dict[str, Any], tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty PostgreSQL database (the tests of what only PostgreSQL does)."""
    engine = make_engine("postgres", database_urls, tmp_path)
    yield engine
    engine.dispose()


@pytest.mark.postgres
def test_a_connection_lost_during_copy_is_a_lost_connection(postgres_engine: Engine) -> None:
    """PostgreSQL's child rows go by COPY, outside SQLAlchemy's statements: a session killed
    under it still comes back as SQLAlchemy's error with the connection invalidated, so the
    run's database policy retries the batch on a fresh connection."""
    from etl.db_policy import lost_connection
    from etl.models import TABLES

    engine = postgres_engine
    row = {"referral_id": "a", "position": 0, "target_type": "t", "target_id": "x"}
    with engine.connect() as conn:
        conn.begin()
        pid: int = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(sa.exc.DBAPIError) as raised:
            store.insert_plain(conn, TABLES["referral_targets"], [row])
    assert raised.value.connection_invalidated
    assert lost_connection(raised.value)
    assert "COPY" in str(raised.value.statement)


@pytest.mark.postgres
def test_a_value_copy_refuses_is_a_refused_value(postgres_engine: Engine) -> None:
    """A child value PostgreSQL refuses under COPY (a NUL in text) comes back as SQLAlchemy's
    DataError, so the writer isolates that referral instead of failing the run."""
    from etl.db_policy import refused_value
    from etl.models import TABLES

    engine = postgres_engine
    row = {"referral_id": "a", "position": 0, "target_type": "nul\u0000byte", "target_id": "x"}
    with pytest.raises(sa.exc.DataError) as raised, engine.begin() as conn:
        store.insert_plain(conn, TABLES["referral_targets"], [row])
    assert refused_value(raised.value)
    assert "0x00" in str(raised.value.orig)


@pytest.mark.postgres
def test_a_history_version_by_copy_is_the_row_an_insert_writes(postgres_engine: Engine) -> None:
    """PostgreSQL's history versions go by COPY with each column's bind processing: the same
    row (the payload a JSON object, not a string; instants in UTC; the money exact) as
    SQLAlchemy's INSERT writes."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from etl.flatten import RawJson
    from etl.models import TABLES

    history = TABLES["referral_history"]
    engine = postgres_engine
    version: dict[str, Any] = {
        "referral_id": "r",
        "etag": '"e1"',
        "status": "Active",
        "substatus": "Accepted",
        "qualification": None,
        "deal_value": Decimal("1234.5600"),
        "currency": "EUR",
        "closing_at": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        "updated_at": datetime(2026, 2, 1, 8, 30, 15, 123000, tzinfo=UTC),
        "payload": RawJson('{"id":"r","name":"n\\u00e9","nested":{"a":[1,2.5,null]}}'),
        "valid_from": datetime(2026, 12, 2, 6, 0, tzinfo=UTC),
        "valid_to": None,
        "origin": "get",
    }
    # A cleaned document (lone surrogates replaced) is stored re-serialised: a dict payload.
    cleaned = {**version, "referral_id": "q", "payload": {"id": "q", "name": "bad \ufffd"}}
    with engine.begin() as conn:
        store.copy_rows(conn, history, tuple(version), [version, cleaned])
        again = [{**v, "referral_id": v["referral_id"] + "2"} for v in (version, cleaned)]
        conn.execute(sa.insert(history), again)
    rows = {r["referral_id"]: r for r in rows_of(engine, "referral_history")}
    for copied, inserted in (("r", "r2"), ("q", "q2")):
        assert {k: v for k, v in rows[copied].items() if k not in {"id", "referral_id"}} == {
            k: v for k, v in rows[inserted].items() if k not in {"id", "referral_id"}
        }
    assert rows["r"]["payload"] == {"id": "r", "name": "né", "nested": {"a": [1, 2.5, None]}}
    assert rows["q"]["payload"] == {"id": "q", "name": "bad \ufffd"}
    assert rows["r"]["updated_at"] == version["updated_at"]


@pytest.mark.parametrize(
    ("dialect", "query", "expected"),
    [
        pytest.param("postgres", "SHOW lock_timeout", "10s", marks=pytest.mark.postgres),
        pytest.param(
            "mariadb", "SELECT @@innodb_lock_wait_timeout", "10", marks=pytest.mark.mariadb
        ),
    ],
)
def test_a_database_session_waits_ten_seconds_for_a_lock_at_most(
    database_urls: dict[str, Any], tmp_path: Path, dialect: str, query: str, expected: str
) -> None:
    """Every session of the job bounds its lock waits (PostgreSQL waits for ever by default,
    MySQL/MariaDB 50 s)."""
    engine = make_engine(dialect, database_urls, tmp_path)
    try:
        with engine.connect() as conn:
            assert str(conn.execute(sa.text(query)).scalar_one()) == expected
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_table_locked_by_another_session_ends_the_run_with_exit_5(
    served: tuple[Sandbox, str], postgres_engine: Engine, tmp_path: Path
) -> None:
    """Another session holding a lock on `referrals` (an ALTER or a LOCK TABLE in an open
    transaction) used to hold the backfill, and SIGTERM with it, for as long as it lasted: the
    run now fails after the lock timeout with one line, recorded `failed`, its lease released,
    and the next run completes once the lock is gone."""
    box, base_url = served
    engine = postgres_engine
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(box.ids[:200]) + "\n")
    env = _env(engine.url.render_as_string(hide_password=False), base_url)
    args = [sys.executable, "-m", "etl", "backfill", str(ids_file)]
    with engine.connect() as holder:
        holder.begin()
        holder.execute(sa.text("LOCK TABLE referrals IN ACCESS EXCLUSIVE MODE"))
        try:
            done = subprocess.run(
                args, env=env, capture_output=True, text=True, timeout=120, check=False
            )
        finally:
            holder.rollback()
    assert done.returncode == 5, done.stderr[-2000:]
    [line] = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert "lock timeout" in line
    [run] = rows_of(engine, "sync_runs")
    assert run["status"] == "failed"
    assert rows_of(engine, "sync_locks") == []
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _stored(engine) == 200
