"""`schedule`: one sync per trigger, never two at once, errors logged, clean stop on request."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from conftest import TOKEN, make_engine, rows_of, settings_for
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from etl import db, due, leases, store
from etl.auth import BearerAuth, StaticTokenProvider
from etl.config import Settings
from etl.errors import ConfigError, SchemaNotAtHeadError
from etl.report import SyncReport
from etl.sandbox import Sandbox, ServerThread
from etl.scheduler import build_trigger, run_schedule

ROOT = Path(__file__).resolve().parent.parent


def _wait_for(what: str, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _runs(engine: Engine) -> list[dict[str, Any]]:
    return rows_of(engine, "sync_runs")


def _finished(engine: Engine, status: str | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in _runs(engine)
        if r["finished_at"] is not None and (status is None or r["status"] == status)
    ]


def _schedule_settings(engine: Engine, interval: float, **sync: Any) -> Settings:
    """Every referral due again right away, so that every run has the same work to do."""
    return settings_for(
        engine,
        api={"concurrency": 1, "max_attempts": 1},
        sync={
            "discover": True,
            "refresh_open_after": 0.0,
            "refresh_closed_after": 0.0,
            "refresh_listed_after": 0.0,
            **sync,
        },
        schedule={"interval": interval},
    )


class Running:
    """``run_schedule`` in a thread, stopped through its ``stop_event``."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.code: int | None = None
        self.error: BaseException | None = None
        self.reports: list[SyncReport] = []
        self.thread: threading.Thread | None = None


@contextmanager
def scheduled(
    settings: Settings,
    box: Sandbox,
    auth: httpx.Auth | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Iterator[Running]:
    box.faults.accepted_tokens = {TOKEN}
    running = Running()

    def target() -> None:
        try:
            running.code = run_schedule(
                settings,
                transport=httpx.ASGITransport(app=box.app),
                auth=auth or BearerAuth(StaticTokenProvider(TOKEN)),
                stop_event=running.stop,
                on_report=running.reports.append,
                clock=clock,
            )
        except BaseException as exc:
            running.error = exc

    running.thread = threading.Thread(target=target, name="scheduler-under-test", daemon=True)
    running.thread.start()
    try:
        yield running
    finally:
        running.stop.set()
        running.thread.join(30)
        assert not running.thread.is_alive(), "run_schedule did not return after stop_event"
        assert running.error is None, repr(running.error)


def _assert_no_overlap(runs: list[dict[str, Any]]) -> None:
    ordered = sorted(runs, key=lambda r: r["started_at"])
    for before, after in itertools.pairwise(ordered):
        assert after["started_at"] >= before["finished_at"], (before, after)


def test_runs_sync_on_each_trigger_one_at_a_time(
    sqlite_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Runs longer than the interval follow one another and never overlap.

    The next fire time is logged after each run, and every run reports what it did.
    """
    caplog.set_level(logging.INFO, logger="etl")
    box = Sandbox(count=6, seed=3)
    box.faults.latency_seconds = 0.1  # a run: 1 list + 6 gets, one at a time: ~0.7 s > 0.3 s
    settings = _schedule_settings(sqlite_engine, interval=0.3)
    with scheduled(settings, box) as running:
        _wait_for("three finished runs", lambda: len(_finished(sqlite_engine)) >= 3)
    assert running.code == 0

    runs = _runs(sqlite_engine)
    assert {r["trigger"] for r in runs} == {"schedule"}
    assert "skipped" not in {r["status"] for r in runs}  # no run ever found the lock taken
    assert all(r["finished_at"] is not None for r in runs)
    _assert_no_overlap(runs)
    done = [r for r in runs if r["status"] == "succeeded"]
    assert len(done) >= 3
    assert (done[0]["created"], done[0]["fetched"]) == (6, 6)
    assert [(r["unchanged"], r["failed"]) for r in done[1:]] == [(6, 0)] * (len(done) - 1)
    assert [r.run_id for r in running.reports] == [r["id"] for r in done]
    # The next fire time at start, then after every run (but not after the stop).
    said = [r.getMessage() for r in caplog.records if r.name == "etl.scheduler"]
    kinds = [
        "next" if m.startswith("next sync at 20") else m.split(":")[0]
        for m in said
        if m.startswith(("next sync at ", "scheduled sync "))
    ]
    assert kinds[:5] == ["next", *["scheduled sync succeeded", "next"] * 2]


def test_stop_lets_the_run_in_progress_finish_in_flight_work(sqlite_engine: Engine) -> None:
    """A stop during a run commits what was fetched and starts no new id.

    The run is recorded as interrupted, the lock is released, and run_schedule returns 0.
    """
    box = Sandbox(count=40, seed=4)
    box.faults.latency_seconds = 0.2  # 40 ids two at a time: ~4 s for the whole run
    # Fetched by id (a listing would store all 40 in one request): tracked, discovery off.
    due.track_ids(sqlite_engine, [(i, "file") for i in box.ids], due=store.utcnow())
    settings = _schedule_settings(sqlite_engine, interval=0.2, batch_size=2, discover=False)
    settings = settings.replace(api={"concurrency": 2})
    with scheduled(settings, box) as running:
        _wait_for("a run with some work committed", lambda: box.stats.total >= 8)
        running.stop.set()
        assert running.thread is not None
        running.thread.join(10)  # a deadline against a hang, not a measured duration
        assert not running.thread.is_alive()
    assert running.code == 0

    [run] = _runs(sqlite_engine)
    assert run["status"] == "interrupted"
    assert run["finished_at"] is not None
    assert 0 < run["fetched"] < 40
    committed = [r for r in rows_of(sqlite_engine, "sync_state") if r["last_success_at"]]
    assert len(committed) == run["fetched"] == len(rows_of(sqlite_engine, "referrals"))
    assert rows_of(sqlite_engine, "sync_locks") == []


def test_a_failed_run_does_not_stop_the_schedule(
    sqlite_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A run that raises (the lock is held: exit 75) is one error line, and the schedule goes on.

    The next trigger runs again and succeeds once the lock is free.
    """
    caplog.set_level(logging.INFO, logger="etl")
    leases.acquire_lock(sqlite_engine, "sync", "elsewhere:1", 60)
    box = Sandbox(count=3, seed=5)
    with scheduled(_schedule_settings(sqlite_engine, interval=0.2), box) as running:
        _wait_for("two skipped runs", lambda: len(_finished(sqlite_engine, "skipped")) >= 2)
        leases.release_lock(sqlite_engine, "sync", "elsewhere:1")
        _wait_for("a run after the lock", lambda: bool(_finished(sqlite_engine, "succeeded")))
    assert running.code == 0
    failures = [r for r in caplog.records if r.getMessage().startswith("scheduled sync failed")]
    assert len(failures) >= 2
    assert all(r.levelno == logging.ERROR and "\n" not in r.getMessage() for r in failures)
    assert all("(exit 75)" in r.getMessage() for r in failures)
    assert all("another run holds the sync lock" in r.getMessage() for r in failures)
    assert not any(r.exc_info for r in caplog.records)
    assert len(rows_of(sqlite_engine, "referrals")) == 3


def test_an_auth_failure_stops_the_scheduler_with_exit_3(sqlite_engine: Engine) -> None:
    """A rejected token is not retried at every trigger: the scheduler stops by itself, 3."""
    box = Sandbox(count=3, seed=6)
    wrong = BearerAuth(StaticTokenProvider("not-the-token"))
    with scheduled(_schedule_settings(sqlite_engine, interval=0.2), box, auth=wrong) as running:
        assert running.thread is not None
        running.thread.join(10)
        assert not running.thread.is_alive(), "the scheduler kept going after an auth failure"
    assert running.code == 3
    assert [r["status"] for r in _runs(sqlite_engine)] == ["failed"]


def test_a_schema_not_at_head_is_refused_before_any_run(tmp_path: Path) -> None:
    """An unmigrated database: run_schedule raises at once (exit 5), nothing is scheduled."""
    engine = db.create_engine_for(f"sqlite:///{tmp_path / 'empty.db'}")
    settings = settings_for(engine, schedule={"interval": 0.1})
    with pytest.raises(SchemaNotAtHeadError, match="referrals-etl db upgrade") as caught:
        run_schedule(settings, auth=BearerAuth(StaticTokenProvider(TOKEN)))
    assert caught.value.exit_code == 5
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []


def test_a_cron_trigger_fires_in_utc(sqlite_engine: Engine) -> None:
    """Without an interval, schedule.cron is the trigger, read in UTC."""
    cron = build_trigger(settings_for(sqlite_engine, schedule={"cron": "15 3 * * 1"}))
    assert str(cron) == "cron[month='*', day='*', day_of_week='1', hour='3', minute='15']"
    assert str(cron.timezone) == "UTC"


def test_an_interval_trigger_fires_every_interval(sqlite_engine: Engine) -> None:
    """schedule.interval > 0 is the trigger, every that many seconds."""
    interval = build_trigger(settings_for(sqlite_engine, schedule={"interval": 90.0}))
    assert interval.interval.total_seconds() == 90


def test_an_interval_first_fires_an_interval_after_the_time_given(sqlite_engine: Engine) -> None:
    """The scheduler's start time (its clock) places the first fire of an interval trigger."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    interval = build_trigger(settings_for(sqlite_engine, schedule={"interval": 90.0}), start)
    assert datetime(2026, 1, 1, 0, 1, 30, tzinfo=UTC) == interval.start_date


def test_a_bad_cron_is_a_config_error_naming_the_key(sqlite_engine: Engine) -> None:
    """A cron expression with too few fields is refused as schedule.cron, quoted."""
    with pytest.raises(ConfigError, match=r"schedule\.cron '\*/30 \* \*'"):
        build_trigger(settings_for(sqlite_engine, schedule={"cron": "*/30 * *"}))


# The real thing: `python -m etl schedule` in a subprocess, stopped by a signal. ---------------


def _cli_env(tmp_path: Path, db_url: str, server: ServerThread, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_ETL_")}
    env.update(
        REFERRALS_ETL_DATABASE_URL=db_url,
        REFERRALS_ETL_API_BASE_URL=server.base_url,
        REFERRALS_ETL_AUTH_MODE="access_token",
        REFERRALS_ETL_AUTH_ACCESS_TOKEN=TOKEN,
        REFERRALS_ETL_AUTH_TOKEN_CACHE_PATH=str(tmp_path / "token_cache.json"),
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_schedule_command_stops_cleanly_on_a_signal(
    tmp_path: Path, signum: int, database_urls: dict[str, str | Exception]
) -> None:
    """SIGTERM/SIGINT end `referrals-etl schedule` with exit 0, every run finished and recorded.

    It syncs on its interval and logs JSON lines. (The SIGTERM case migrates its database with
    `referrals-etl db upgrade`, as a deployment does; the other copies it.)
    """
    box = Sandbox(count=30, seed=7)
    box.faults.accepted_tokens = {TOKEN}
    box.faults.latency_seconds = 0.02
    if signum == signal.SIGTERM:
        db_url = f"sqlite:///{tmp_path / 'empty.db'}"  # migrated below by `db upgrade`
    else:
        migrated = make_engine("sqlite", database_urls, tmp_path)
        db_url = migrated.url.render_as_string(hide_password=False)
        migrated.dispose()
    with ServerThread(box) as server:
        env = _cli_env(
            tmp_path,
            db_url,
            server,
            REFERRALS_ETL_SCHEDULE_INTERVAL="0.5",
            REFERRALS_ETL_SYNC_DISCOVER="true",
            REFERRALS_ETL_SYNC_REFRESH_OPEN_AFTER="0",
            REFERRALS_ETL_SYNC_REFRESH_CLOSED_AFTER="0",
            REFERRALS_ETL_API_CONCURRENCY="2",
        )
        if signum == signal.SIGTERM:
            upgrade = subprocess.run(
                [sys.executable, "-m", "etl", "db", "upgrade"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert upgrade.returncode == 0, upgrade.stderr
            assert "empty -> " in upgrade.stdout
        engine = db.create_engine_for(db_url)
        process = subprocess.Popen(
            [sys.executable, "-m", "etl", "--log-format", "json", "-v", "schedule"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for(
                "a finished scheduled run",
                lambda: process.poll() is None and bool(_finished(engine, "succeeded")),
                timeout=30,
            )
            process.send_signal(signum)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, err
    runs = _runs(engine)
    engine.dispose()
    assert {r["trigger"] for r in runs} == {"schedule"}
    assert all(r["status"] in {"succeeded", "interrupted"} for r in runs), runs
    assert all(r["finished_at"] is not None for r in runs)
    assert runs[0]["created"] == 30
    _assert_no_overlap(runs)

    lines = [json.loads(line) for line in err.splitlines()]
    messages = [entry["message"] for entry in lines]
    assert f"received {signal.Signals(signum).name}" in messages
    assert messages[-1] == "scheduler stopped"
    assert any(m.startswith("next sync at ") for m in messages)
    assert {entry["logger"] for entry in lines} >= {"etl.scheduler"}
    assert TOKEN not in out + err


def test_a_second_signal_exits_at_once(
    tmp_path: Path, database_urls: dict[str, str | Exception]
) -> None:
    """A second SIGTERM exits at once with 128 + the signal number.

    The first one waits for the in-flight request (20 s here); the second does not: the
    process ends well within a deadline shorter than that request.
    """
    box = Sandbox(count=5, seed=8)
    box.faults.accepted_tokens = {TOKEN}
    box.faults.latency_seconds = 20.0
    migrated = make_engine("sqlite", database_urls, tmp_path)
    db_url = migrated.url.render_as_string(hide_password=False)
    with ServerThread(box) as server:
        env = _cli_env(
            tmp_path,
            db_url,
            server,
            REFERRALS_ETL_SCHEDULE_INTERVAL="0.2",
            REFERRALS_ETL_SYNC_DISCOVER="true",
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "etl", "--log-format", "json", "schedule"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for("a run in progress", lambda: bool(_runs(migrated)), timeout=30)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert process.poll() is None, "the first SIGTERM must wait for in-flight work"
            process.send_signal(signal.SIGTERM)
            try:  # a deadline half the in-flight request's latency, not a measured duration
                _, err = process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                pytest.fail("a second SIGTERM waited for the in-flight request")
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    migrated.dispose()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "second SIGTERM: exiting now" in err


@pytest.mark.parametrize("at_start", [True, False], ids=["run_at_start", "wait"])
def test_the_first_run_starts_at_once_unless_configured_not_to(
    sqlite_engine: Engine, at_start: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """With schedule.run_at_start (the default) the first sync runs when the scheduler starts.

    An hour's interval: the next fire time is then an hour on; without run_at_start nothing
    runs until the first fire time.
    """
    caplog.set_level(logging.INFO, logger="etl")
    box = Sandbox(count=4, seed=31)
    settings = _schedule_settings(sqlite_engine, interval=3600.0)
    assert settings.schedule.run_at_start is True  # the default
    settings = settings.replace(schedule={"run_at_start": at_start})
    started = datetime.now(UTC).replace(microsecond=0)  # the schedule's clock, stopped here
    with scheduled(settings, box, clock=lambda: started) as running:
        _wait_for(
            "the scheduler's first 'next sync at' line",
            lambda: any(r.getMessage().startswith("next sync at") for r in caplog.records),
        )
        if at_start:
            _wait_for("the run at start", lambda: len(_finished(sqlite_engine)) == 1)
            _wait_for(
                "the next fire time after the run",
                lambda: sum(r.getMessage().startswith("next sync at") for r in caplog.records) >= 2,
            )
    assert running.code == 0
    runs = _finished(sqlite_engine)
    if at_start:
        assert [(r["status"], r["created"]) for r in runs] == [("succeeded", 4)]
        assert [r.run_id for r in running.reports] == [runs[0]["id"]]
    else:
        assert runs == []
        assert running.reports == []
    # The fire time announced last is an interval after the schedule's start in both cases.
    last = [r.getMessage() for r in caplog.records if r.getMessage().startswith("next sync at")]
    announced = datetime.fromisoformat(last[-1].removeprefix("next sync at "))
    assert started + timedelta(hours=1) == announced


def test_schedule_serves_the_last_runs_metrics_over_http(
    tmp_path: Path, database_urls: dict[str, str | Exception]
) -> None:
    """GET /metrics on schedule.metrics_port answers the metrics of the last run.

    Here the run at start, 5 referrals created; SIGTERM stops both.
    """
    box = Sandbox(count=5, seed=32)
    box.faults.accepted_tokens = {TOKEN}
    migrated = make_engine("sqlite", database_urls, tmp_path)
    db_url = migrated.url.render_as_string(hide_password=False)
    migrated.dispose()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with ServerThread(box) as server:
        env = _cli_env(
            tmp_path,
            db_url,
            server,
            REFERRALS_ETL_SCHEDULE_INTERVAL="1h",
            REFERRALS_ETL_SCHEDULE_METRICS_PORT=str(port),
            REFERRALS_ETL_SYNC_DISCOVER="true",
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "etl", "--log-format", "json", "schedule"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        scraped: dict[str, float] = {}

        def scrape() -> bool:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.TransportError:
                return False
            scraped.clear()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    key = sample.name + "".join(f"|{v}" for v in sample.labels.values())
                    scraped[key] = sample.value
            return "referrals_etl_run_ids" in scraped

        try:
            _wait_for("metrics of the run at start", scrape, timeout=30)
            process.send_signal(signal.SIGTERM)
            _out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, err
    assert scraped["referrals_etl_run_ids"] == 5
    assert scraped["referrals_etl_run_referrals|created"] == 5
    assert scraped["referrals_etl_last_run_status|succeeded"] == 1
    assert "referrals_etl_last_success_timestamp_seconds" in scraped
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
