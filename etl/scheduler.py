"""`referrals-etl schedule`: run `sync` on ``schedule.cron`` (or ``schedule.interval``) in process.

An APScheduler 3 ``BackgroundScheduler`` fires one job, ``max_instances=1`` and ``coalesce=True``:
never two syncs at once, and fire times missed while a run was going (or the process was
paused) collapse into one run. With ``schedule.run_at_start`` (the default) the first run starts
at once, then the schedule goes on (a fresh pod does not wait up to a whole interval).
The main thread only waits for a stop request. Each run builds
its own engine and auth and calls :func:`etl.sync.run_sync`; a run that raises is logged in one
line and the schedule goes on, except for errors no later run can cure (authentication, schema
not at head, configuration), which stop the scheduler with their exit code.

SIGTERM/SIGINT (or ``stop_event`` in tests): no new runs; the run in progress is asked to stop
(its ``RunOptions.stop``, a :class:`~etl.stopping.StopRequest`): it finishes its in-flight
requests, commits them, records itself as interrupted; then the scheduler shuts down and
:func:`run_schedule` returns 0. A second signal exits at once (the database is left consistent:
every batch is one transaction).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import undefined

from etl import db
from etl.config import Settings, redact_url
from etl.errors import (
    AuthError,
    ConfigError,
    EtlError,
    InterruptedRunError,
    SchemaNotAtHeadError,
    first_line,
)
from etl.report import SyncReport
from etl.stopping import on_stop_signals
from etl.sync import RunOptions, run_sync

log = logging.getLogger(__name__)

JOB_ID = "sync"
MISFIRE_GRACE_SECONDS = 300
_POLL_SECONDS = 0.2
# Errors that every later run would hit again: stop the scheduler and exit with their code.
_FATAL: tuple[type[EtlError], ...] = (AuthError, ConfigError, SchemaNotAtHeadError)


def build_trigger(settings: Settings, now: datetime | None = None) -> CronTrigger | IntervalTrigger:
    """``IntervalTrigger`` when ``schedule.interval`` > 0, else ``schedule.cron`` (UTC).

    An interval's first fire time is an interval after ``now`` (default: the current time).
    """
    schedule = settings.schedule
    if schedule.interval > 0:
        first = None if now is None else now + timedelta(seconds=schedule.interval)
        return IntervalTrigger(seconds=schedule.interval, timezone=UTC, start_date=first)
    try:
        return CronTrigger.from_crontab(schedule.cron, timezone=UTC)
    except ValueError as exc:
        raise ConfigError(
            f"schedule.cron {schedule.cron!r} is not a crontab expression ({exc}); expected "
            "five fields such as '*/30 * * * *' (or set schedule.interval, e.g. 30m, "
            "REFERRALS_ETL_SCHEDULE_INTERVAL)"
        ) from None


class _Runner:
    """The scheduled job, and what the main thread needs to know about it."""

    def __init__(
        self,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None,
        auth: httpx.Auth | None,
        on_report: Callable[[SyncReport], None] | None,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.auth = auth
        self.on_report = on_report
        self.fatal_code: int | None = None
        self.stopping = threading.Event()  # set: no new runs; the main thread shuts down
        self.stop_signal = signal.SIGTERM.value
        self._lock = threading.Lock()
        self._current: RunOptions | None = None

    def run_once(self) -> None:
        """One sync; never raises (APScheduler would log a traceback), records fatal errors."""
        options = RunOptions(trigger="schedule", transport=self.transport)
        with self._lock:  # stop_current() either sees this run or the run sees `stopping`
            if self.stopping.is_set():
                return
            self._current = options
        engine = None
        report: SyncReport | None = None  # the run's report, also when it raised
        try:
            options.auth = self.auth if self.auth is not None else _build_auth(self.settings)
            engine = db.create_engine_for(self.settings.database.url)
            report = run_sync(self.settings, engine, options)
        except InterruptedRunError as exc:
            report = exc.report
            log.warning("%s", exc, extra={"outcome": "interrupted"})
        except _FATAL as exc:
            report = exc.report
            log.error(
                "scheduled sync failed, stopping the scheduler (exit %d): %s",
                exc.exit_code,
                exc,
                extra={"outcome": "failed"},
            )
            self.fatal_code = exc.exit_code
            self.stopping.set()
        except EtlError as exc:
            report = exc.report
            log.error(
                "scheduled sync failed (exit %d), next run as scheduled: %s",
                exc.exit_code,
                exc,
                extra={"outcome": "failed"},
            )
        except Exception as exc:
            log.error(
                "scheduled sync failed, next run as scheduled: %s: %s",
                exc.__class__.__name__,
                redact_url(first_line(exc)),
                exc_info=log.isEnabledFor(logging.DEBUG),
                extra={"outcome": "failed"},
            )
        else:
            assert report is not None
            log.log(
                logging.WARNING if report.exit_code else logging.INFO,
                "scheduled sync %s: %s",
                report.status,
                report.summary(),
                extra={"run_id": report.run_id, "outcome": report.status},
            )
        finally:
            with self._lock:
                self._current = None
            if engine is not None:
                engine.dispose()
        # A run that raised carries its report on the error: failed runs get their metrics
        # out too, they are the ones to alert on.
        if report is not None and self.on_report is not None:
            try:
                self.on_report(report)
            except Exception as exc:  # noqa: BLE001 - a failed report must not stop the schedule
                log.error(
                    "could not report the run: %s: %s",
                    exc.__class__.__name__,
                    redact_url(first_line(exc)),
                )

    def stop_current(self) -> None:
        """Ask the run in progress (if any) to finish its in-flight work and stop."""
        with self._lock:
            options = self._current
            if options is None:
                return
            name = signal.Signals(self.stop_signal).name
            options.stop.request(f"{name}: the scheduler is stopping", self.stop_signal)


def _build_auth(settings: Settings) -> httpx.Auth:
    from etl.auth import build_auth

    return build_auth(settings)


def run_schedule(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    auth: httpx.Auth | None = None,
    stop_event: threading.Event | None = None,
    on_report: Callable[[SyncReport], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Run `sync` on the schedule until a signal (or ``stop_event``); returns the exit code.

    0 after a requested stop; 2, 3 or 5 when a run hit an error no later run can cure.
    ``transport`` and ``auth`` are handed to every run (tests pass the sandbox's app);
    ``on_report`` gets each finished run's report (e.g. to write metrics); ``clock`` tells
    the time the schedule starts from (the run at start; an interval's first fire time).
    Configuration errors and a schema not at head are raised before the first run.
    """
    started = clock()
    trigger = build_trigger(settings, started)
    _preflight(settings, auth)
    runner = _Runner(settings, transport, auth, on_report)
    stop = stop_event or threading.Event()
    signals: list[int] = []
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(
        runner.run_once,
        trigger,
        id=JOB_ID,
        name="referrals-etl sync",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=MISFIRE_GRACE_SECONDS,
        next_run_time=started if settings.schedule.run_at_start else undefined,
    )

    def after_run(_event: JobEvent) -> None:
        # (APScheduler itself warns when a fire time is skipped because a run is still going.)
        if not runner.stopping.is_set() and not stop.is_set():
            _log_next_run(scheduler)

    scheduler.add_listener(after_run, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    restore_signals = on_stop_signals(signals.append, _exit_now)  # main thread polls `signals`
    try:
        scheduler.start()
        log.info("scheduler started: %s (UTC)", _describe(settings))
        _log_next_run(scheduler)
        while not (stop.is_set() or signals or runner.stopping.is_set()):
            stop.wait(_POLL_SECONDS)
        if signals:
            runner.stop_signal = signals[0]
            log.warning("received %s", signal.Signals(signals[0]).name)
        if runner.fatal_code is None:
            log.warning("stopping: no new runs; a run in progress finishes its in-flight work")
        runner.stopping.set()
        scheduler.pause()
        runner.stop_current()
        scheduler.shutdown(wait=True)
    finally:
        restore_signals()
    log.info("scheduler stopped")
    return runner.fatal_code or 0


def _preflight(settings: Settings, auth: httpx.Auth | None) -> None:
    """Fail fast on what no scheduled run could cure: the auth set-up and the schema."""
    if auth is None:
        _build_auth(settings)
    engine = db.create_engine_for(settings.database.url)
    try:
        db.require_head(engine)
    finally:
        engine.dispose()


def _describe(settings: Settings) -> str:
    if settings.schedule.interval > 0:
        return f"every {settings.schedule.interval:g}s"
    return f"cron {settings.schedule.cron!r}"


def _log_next_run(scheduler: BackgroundScheduler) -> None:
    job = scheduler.get_job(JOB_ID)
    when: datetime | None = getattr(job, "next_run_time", None)
    if when is not None:
        log.info("next sync at %s", when.astimezone(UTC).isoformat(timespec="seconds"))


def _exit_now(signum: int) -> None:
    """A second SIGTERM/SIGINT: exit at once (every committed batch is whole)."""
    log.error("second %s: exiting now", signal.Signals(signum).name)
    os._exit(128 + signum)
