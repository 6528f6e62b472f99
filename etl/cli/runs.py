"""`sync`, `backfill`, `status` and `schedule`: the commands that run (or report on) the job."""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from etl.cli.app import cli, common_options, current_state, run_options, say
from etl.config import Settings
from etl.errors import EtlError
from etl.ids import BadLine, TrackedId, in_shard, parse_shard, read_ids

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from etl.report import SyncReport
    from etl.sync import RunOptions

log = logging.getLogger("etl.cli")


# The youngest generation is collected after this many allocations instead of 700: a first load
# allocates a few hundred objects a referral (documents, rows, requests), nearly all freed by
# reference counting, and spent 0.10-0.12 s of ~2.7 s of CPU in young collections at the default.
_GC_THRESHOLDS = (10_000, 10, 10)


@contextlib.contextmanager
def settled_collector() -> Iterator[None]:
    """Around the commands that run, once their modules are imported.

    What the imports built (SQLAlchemy's, httpx's and the job's classes and caches: ~73,000
    objects the collector tracks) lives as long as the process: ``gc.freeze()`` moves it out
    of the collector's reach, so a full collection walks only what runs allocate; and young
    collections run less often. A 3,000-id first load spent 0.24-0.30 s in the collector,
    0.08-0.09 s after this (bench/README.md). Cycles are still collected, in larger steps.
    On the way out the collector is given back as it was (thresholds, nothing left frozen),
    for a caller that runs the command in its own process.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _overrides(concurrency: int | None) -> dict[str, dict[str, Any]]:
    return {"api": {"concurrency": concurrency}} if concurrency else {}


@cli.command()
@common_options
@run_options
def sync(
    concurrency: int | None,
    limit: int | None,
    shard: str | None,
    dry_run: bool,
    metrics_file: str | None,
    pushgateway: str | None,
) -> None:
    """One run: discover changed ids (when enabled), fetch every due id, and exit."""
    from etl.sync import RunOptions, run_sync

    settings = current_state().settings(**_overrides(concurrency))
    shard_spec = parse_shard(shard) if shard else None
    options = RunOptions(trigger="cli", dry_run=dry_run, limit=limit)
    report = _execute(
        settings,
        options,
        lambda engine, o: run_sync(settings, engine, o, shard=shard_spec),
        metrics_file,
        pushgateway,
        "sync",
        shard_spec,
    )
    sys.exit(report.exit_code)


@cli.command()
@common_options
@run_options
@click.argument("file")
def backfill(
    file: str,
    concurrency: int | None,
    limit: int | None,
    shard: str | None,
    dry_run: bool,
    metrics_file: str | None,
    pushgateway: str | None,
) -> None:
    """Track every id in FILE (- = stdin; ids or webhook events) and fetch them all now."""
    from etl.sync import RunOptions, run_backfill

    settings = current_state().settings(**_overrides(concurrency))
    shard_spec = parse_shard(shard) if shard else None
    bad: list[BadLine] = []

    def on_error(line: BadLine) -> None:
        bad.append(line)
        log.warning("skipped %s", line, extra={"event": "bad_id_line"})

    source = read_ids(file, on_error)
    ids: Iterator[TrackedId] = in_shard(source, shard_spec)
    options = RunOptions(trigger="backfill", dry_run=dry_run, limit=limit)
    if shard_spec is not None:
        options.lock_name = f"backfill-{shard_spec[0]}-of-{shard_spec[1]}"
    with contextlib.closing(source):  # also a run that ends before it reads the file (no auth)
        report = _execute(
            settings,
            options,
            lambda engine, o: run_backfill(settings, engine, ids, o),
            metrics_file,
            pushgateway,
            "backfill",
            shard_spec,
        )
    report.bad_lines = len(bad)
    if bad:
        log.warning("%d line(s) of %s were not valid ids and were skipped", len(bad), file)
    sys.exit(report.exit_code or (1 if bad else 0))


def _execute(
    settings: Settings,
    options: RunOptions,
    run: Callable[[Engine, RunOptions], SyncReport],
    metrics_file: str | None,
    pushgateway: str | None,
    command: str,
    shard: tuple[int, int] | None,
) -> SyncReport:
    from etl import db
    from etl.auth import build_auth

    engine = db.create_engine_for(settings.database.url)
    options.auth = build_auth(settings, options.stop)
    progress = _progress_bar()
    options.progress = progress.update if progress is not None else None
    _install_signal_handlers(options)
    report: SyncReport | None = None
    try:
        with settled_collector():  # the caller imported etl.sync, and with it the whole run
            report = run(engine, options)
    except EtlError as exc:
        report = exc.report  # also when the run raised: alerts need failed runs
        raise
    finally:
        engine.dispose()  # also after a refused run: its SQLite -wal/-shm files stay open else
        if progress is not None:
            progress.close()
        if report is not None:  # also when the run raised: alerts need failed runs
            _emit_metrics(report, metrics_file, pushgateway, command, shard)
            counts: dict[str, Any] = report.totals()
            say(
                ("dry run: " if options.dry_run else "") + report.summary(),
                event="summary",
                run_id=report.run_id,
                outcome=report.status,
                trigger=report.trigger,
                dry_run=options.dry_run,
                duration=round(report.seconds, 3),
                **counts,
            )
    return report


def _progress_bar() -> Any:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit=" referrals", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def _install_signal_handlers(options: RunOptions) -> None:
    """SIGTERM/SIGINT: stop taking new ids, finish in-flight work, record the run; a second
    signal stops at once (every committed batch is whole)."""
    from etl.stopping import on_stop_signals

    stop = options.stop

    def first(signum: int) -> None:
        name = signal.Signals(signum).name
        if not stop.request(name, signum):
            raise KeyboardInterrupt  # already stopping for another reason: stop now
        log.warning("received %s: finishing in-flight work, then stopping", name)

    def again(_signum: int) -> None:
        raise KeyboardInterrupt  # a second signal: stop now

    on_stop_signals(first, again)


def _emit_metrics(
    report: SyncReport,
    metrics_file: str | None,
    pushgateway: str | None,
    command: str,
    shard: tuple[int, int] | None,
) -> None:
    if not metrics_file and not pushgateway:
        return
    from etl.metrics import grouping_key, push_metrics, write_metrics

    if metrics_file:
        write_metrics(report, metrics_file)
    if pushgateway:  # one Pushgateway group per command and shard: no run hides another
        push_metrics(report, pushgateway, grouping_key(command, shard))


@cli.command()
@common_options
@click.option("--runs", default=10, show_default=True, help="How many recent runs to show.")
def status(runs: int) -> None:
    """Recent runs, counts by outcome, ids that keep failing, and how many are due now."""
    from etl import db
    from etl.status import render_status

    settings = current_state().settings()
    engine = db.create_engine_for(settings.database.url)
    try:
        db.require_head(engine)
        text = render_status(engine, runs)
    finally:
        engine.dispose()
    say(text, event="status")


@cli.command()
@common_options
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False),
    help="Write Prometheus metrics here after each run (textfile collector).",
)
@click.option("--pushgateway", help="Push metrics to this Pushgateway URL after each run.")
def schedule(metrics_file: str | None, pushgateway: str | None) -> None:
    """Run `sync` at start, then on schedule.cron (or schedule.interval), until SIGTERM/SIGINT.

    schedule.run_at_start = false waits for the first fire time; schedule.metrics_port serves
    the last run's metrics at /metrics."""
    from etl.errors import ConfigError
    from etl.metrics import LastRunMetrics, serve_metrics
    from etl.scheduler import run_schedule

    settings = current_state().settings()
    served, server = LastRunMetrics(), None
    if settings.schedule.metrics_port:
        try:
            server = serve_metrics(served, settings.schedule.metrics_port)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on port {settings.schedule.metrics_port} "
                f"({exc.strerror or exc}); change schedule.metrics_port (0 = off)"
            ) from None

    def on_report(report: SyncReport) -> None:
        served.update(report)
        _emit_metrics(report, metrics_file, pushgateway, "schedule", None)

    try:
        with settled_collector():
            code = run_schedule(settings, on_report=on_report)
    finally:
        if server is not None:
            server.close()
    sys.exit(code)
