"""The `referrals-etl` commands: the only module that prints, draws progress or exits.

Every failure becomes one line a person can act on and its exit code; ``-v`` adds details,
``-vv`` a traceback.

Start-up stays fast: this module imports only click and the job's light modules at the top.
SQLAlchemy, Alembic, httpx, aiohttp, MSAL and the modules that use them are imported inside the
commands that need them, so ``--help`` (and every command's ``--help``) loads none of them
(tests/test_startup.py checks which modules each command loads).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from etl.config import Settings, load_settings, redact_url
from etl.errors import EtlError
from etl.ids import BadLine, TrackedId, in_shard, parse_shard, read_ids
from etl.logs import setup_logging

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from etl.sync import RunOptions, SyncReport

log = logging.getLogger("etl.cli")
F = TypeVar("F", bound=Callable[..., Any])
_VERBOSITY = [0]  # -v count, kept beyond the click context for the error handler
_JSON_LOGS = [False]  # --log-format json: the final error line is a JSON log line too


class State:
    """What the global options chose; shared by every command through the click context."""

    def __init__(self) -> None:
        self.config: str | None = None
        self.verbose = 0
        self.log_format = "text"
        self._settings: Settings | None = None

    def settings(self, **overrides: dict[str, Any]) -> Settings:
        if self._settings is None or overrides:
            self._settings = load_settings(self.config, overrides=overrides or None)
        return self._settings


def _set_config(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    if value is not None:
        ctx.ensure_object(State).config = value
    return value


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> int:
    state = ctx.ensure_object(State)
    state.verbose = max(state.verbose, value)
    _VERBOSITY[0] = state.verbose
    setup_logging(state.log_format, state.verbose)
    return value


def _set_format(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    state = ctx.ensure_object(State)
    if value is not None:
        state.log_format = value
        _JSON_LOGS[0] = value == "json"
    setup_logging(state.log_format, state.verbose)
    return value


def common_options(func: F) -> F:
    """--config, -v and --log-format, accepted before or after the command name."""
    options = [
        click.option(
            "--config",
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_set_config,
            is_eager=True,
            help="TOML configuration file (default: $REFERRALS_ETL_CONFIG, ./config.toml).",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"]),
            expose_value=False,
            callback=_set_format,
            is_eager=True,
            help="Log lines as text or JSON.",
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            expose_value=False,
            callback=_set_verbose,
            help="More detail (-vv: debug, with tracebacks).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run_options(func: F) -> F:
    """Options of the commands that fetch: sync and backfill."""
    options = [
        click.option(
            "--concurrency",
            type=click.IntRange(1, 256),
            help="Requests in flight (overrides api.concurrency).",
        ),
        click.option("--limit", type=click.IntRange(min=1), help="Fetch at most this many ids."),
        click.option("--shard", help="Only ids whose stable hash falls in shard I of N, e.g. 0/4."),
        click.option("--dry-run", is_flag=True, help="Fetch and report; write nothing."),
        click.option(
            "--metrics-file",
            type=click.Path(dir_okay=False),
            help="Write Prometheus metrics here (textfile collector).",
        ),
        click.option("--pushgateway", help="Push metrics to this Prometheus Pushgateway URL."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _state() -> State:
    return click.get_current_context().ensure_object(State)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@common_options
@click.version_option(package_name="partner-referrals-etl")
def cli() -> None:
    """Partner Center referrals (leads and co-sell opportunities) into your SQL database."""


# db --------------------------------------------------------------------------------------


@cli.group("db")
def db_group() -> None:
    """Database schema: migrations and documentation."""


@db_group.command("upgrade")
@common_options
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(revision: str) -> None:
    """Apply the migrations (creates everything on an empty database)."""
    from etl import db

    engine = db.create_engine_for(_state().settings().database.url)
    before = db.current_revision(engine)
    db.upgrade(engine, revision)
    after = db.current_revision(engine)
    click.echo(f"database {db.describe(engine)}: {before or 'empty'} -> {after}")


@db_group.command("current")
@common_options
def db_current() -> None:
    """Print the schema revision and whether it is at head."""
    from etl import db

    engine = db.create_engine_for(_state().settings().database.url)
    current, head = db.current_revision(engine), db.head_revision()
    state = "at head" if current == head else f"NOT at head {head}: run `referrals-etl db upgrade`"
    click.echo(f"{current or 'empty (no revision)'} ({state})")
    if current != head:
        sys.exit(5)


@db_group.command("docs")
@common_options
@click.option(
    "--output",
    default="docs/data-dictionary.md",
    show_default=True,
    help="Where to write the data dictionary (- = stdout).",
)
def db_docs(output: str) -> None:
    """Write the data dictionary (tables, views, columns, meanings) generated from the models."""
    from etl.dictionary import render_data_dictionary

    text = render_data_dictionary()
    if output == "-":
        click.echo(text, nl=False)
        return
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}")


# sync and backfill -----------------------------------------------------------------------


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

    settings = _state().settings(**_overrides(concurrency))
    shard_spec = parse_shard(shard) if shard else None
    options = RunOptions(trigger="cli", dry_run=dry_run, limit=limit)
    report = _execute(
        settings,
        options,
        lambda engine, o: run_sync(settings, engine, o, shard=shard_spec),
        metrics_file,
        pushgateway,
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

    settings = _state().settings(**_overrides(concurrency))
    shard_spec = parse_shard(shard) if shard else None
    bad: list[BadLine] = []

    def on_error(line: BadLine) -> None:
        bad.append(line)
        log.warning("skipped %s", line, extra={"event": "bad_id_line"})

    ids: Iterator[TrackedId] = in_shard(read_ids(file, on_error), shard_spec)
    options = RunOptions(trigger="backfill", dry_run=dry_run, limit=limit)
    if shard_spec is not None:
        options.lock_name = f"backfill-{shard_spec[0]}-of-{shard_spec[1]}"
    report = _execute(
        settings,
        options,
        lambda engine, o: run_backfill(settings, engine, ids, o),
        metrics_file,
        pushgateway,
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
) -> SyncReport:
    from etl import db
    from etl.auth import build_auth

    engine = db.create_engine_for(settings.database.url)
    options.auth = build_auth(settings)
    progress = _progress_bar()
    options.progress = progress.update if progress is not None else None
    _install_signal_handlers(options)
    report: SyncReport | None = None
    try:
        report = run(engine, options)
    except EtlError as exc:
        report = exc.report  # also when the run raised: alerts need failed runs
        raise
    finally:
        if progress is not None:
            progress.close()
        if report is not None:
            _emit_metrics(report, metrics_file, pushgateway)
    click.echo(("dry run: " if options.dry_run else "") + report.summary())
    return report


def _progress_bar() -> Any:
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit=" referrals", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def _install_signal_handlers(options: RunOptions) -> None:
    """SIGTERM/SIGINT: stop taking new ids, finish in-flight work, record the run; a second
    signal stops at once (every committed batch is whole)."""
    stop = options.stop

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if not stop.request(name, signum):
            raise KeyboardInterrupt  # a second signal: stop now
        log.warning("received %s: finishing in-flight work, then stopping", name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _emit_metrics(report: SyncReport, metrics_file: str | None, pushgateway: str | None) -> None:
    if not metrics_file and not pushgateway:
        return
    from etl.metrics import push_metrics, write_metrics

    if metrics_file:
        write_metrics(report, metrics_file)
    if pushgateway:
        push_metrics(report, pushgateway)


# status ----------------------------------------------------------------------------------


@cli.command()
@common_options
@click.option("--runs", default=10, show_default=True, help="How many recent runs to show.")
def status(runs: int) -> None:
    """Recent runs, counts by outcome, ids that keep failing, and how many are due now."""
    from etl import db
    from etl.status import render_status

    settings = _state().settings()
    engine = db.create_engine_for(settings.database.url)
    db.require_head(engine)
    click.echo(render_status(engine, runs))


# sandbox and demo ------------------------------------------------------------------------


@cli.command()
@common_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--count", default=1000, show_default=True, help="Referrals to generate.")
@click.option("--seed", default=1, show_default=True, help="Seed of the generator.")
@click.option("--latency", default=0.0, help="Seconds of latency per API answer.")
@click.option("--throttle", default=0.0, help="Answer 429 beyond this many requests per second.")
@click.option(
    "--no-304", is_flag=True, help="Never answer 304 (like an API that ignores If-None-Match)."
)
@click.option(
    "--token", "tokens", multiple=True, help="Accept only this bearer token (repeatable)."
)
def sandbox(
    host: str,
    port: int,
    count: int,
    seed: int,
    latency: float,
    throttle: float,
    no_304: bool,
    tokens: tuple[str, ...],
) -> None:
    """Serve a simulated Referrals API (for trying the tool and for tests)."""
    from etl.sandbox import Sandbox, serve

    box = Sandbox(count=count, seed=seed)
    box.faults.latency_seconds = latency
    box.faults.throttle_rps = throttle
    box.faults.send_304 = not no_304
    box.faults.accepted_tokens = set(tokens) or None
    click.echo(
        f"sandbox: {count} referrals at http://{host}:{port}/v1.0 "
        f"(control: http://{host}:{port}/_sandbox/...); Ctrl-C stops it"
    )
    serve(box, host=host, port=port)


@cli.command()
@common_options
@click.option(
    "--database",
    default="sqlite:///referrals-demo.db",
    show_default=True,
    help="Where the demo writes (recreated on each demo run when it is the default).",
)
@click.option("--count", default=200, show_default=True, help="Referrals in the sandbox.")
def demo(database: str, count: int) -> None:
    """The whole job on embedded defaults: sandbox, SQLite, migrate, backfill, change, sync."""
    from etl.demo import run_demo

    run_demo(database, count, click.echo)


@cli.command()
@common_options
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False),
    help="Write Prometheus metrics here after each run (textfile collector).",
)
@click.option("--pushgateway", help="Push metrics to this Pushgateway URL after each run.")
def schedule(metrics_file: str | None, pushgateway: str | None) -> None:
    """Run `sync` on schedule.cron (or schedule.interval) until SIGTERM/SIGINT."""
    from etl.scheduler import run_schedule

    def on_report(report: SyncReport) -> None:
        _emit_metrics(report, metrics_file, pushgateway)

    sys.exit(run_schedule(_state().settings(), on_report=on_report))


# auth ------------------------------------------------------------------------------------


@cli.group("auth")
def auth_group() -> None:
    """Sign in (device code), show who is signed in, sign out."""


@auth_group.command("login")
@common_options
def auth_login() -> None:
    """Sign in: device code (mode device_code), or redeem the refresh token (refresh_token)."""
    from etl.msal_auth import login

    login(_state().settings(), click.echo)


@auth_group.command("status")
@common_options
def auth_status() -> None:
    """Who is signed in, until when, and where the cache is (never a token)."""
    from etl.msal_auth import describe_status

    click.echo(describe_status(_state().settings()))


@auth_group.command("logout")
@common_options
def auth_logout() -> None:
    """Remove the signed-in account from the token cache."""
    from etl.msal_auth import logout

    click.echo(logout(_state().settings()))


# entry point -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps every error to one line and its exit code."""
    setup_logging()
    try:
        cli.main(args=argv, prog_name="referrals-etl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except EtlError as exc:
        _fail(str(exc), exc.exit_code, exc)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        reason = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0][:300]
        _fail(f"database error: {reason}; check database.url and the server", 5, exc)
    sys.exit(0)


def _is_database_error(exc: Exception) -> bool:
    """A SQLAlchemy error; SQLAlchemy is not imported to find out when nothing loaded it."""
    if "sqlalchemy" not in sys.modules:
        return False
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, SQLAlchemyError)


def _fail(message: str, code: int, exc: BaseException) -> None:
    if _verbosity() > 1:
        log.error("details", exc_info=exc)
    if _JSON_LOGS[0]:
        log.error(redact_url(message), extra={"event": "error", "outcome": f"exit {code}"})
    else:
        click.echo(f"error: {redact_url(message)}", err=True)
    sys.exit(code)


def _verbosity() -> int:
    return max(_VERBOSITY[0], 2 if os.environ.get("REFERRALS_ETL_DEBUG") else 0)
