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
from etl.logs import json_line, setup_logging

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
            help="Text, or JSON: one JSON object per line on stdout and stderr.",
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
    _say(
        f"database {db.describe(engine)}: {before or 'empty'} -> {after}",
        event="db_upgrade",
        revision_before=before or "empty",
        revision=after,
    )


@db_group.command("current")
@common_options
def db_current() -> None:
    """Print the schema revision and whether it is at head."""
    from etl import db

    engine = db.create_engine_for(_state().settings().database.url)
    current, head = db.current_revision(engine), db.head_revision()
    state = "at head" if current == head else f"NOT at head {head}: run `referrals-etl db upgrade`"
    _say(
        f"{current or 'empty (no revision)'} ({state})",
        event="db_current",
        revision=current or "empty",
        head=head,
    )
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
@click.option(
    "--dbt-dir",
    help="Also write the dbt sources and staging models (e.g. integrations/dbt/models).",
)
def db_docs(output: str, dbt_dir: str | None) -> None:
    """Write the data dictionary (tables, views, columns, meanings) generated from the models."""
    from etl.dictionary import render_data_dictionary

    text = render_data_dictionary()
    if output == "-":
        click.echo(text, nl=False)
    else:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text, encoding="utf-8")
        _say(f"wrote {output}", event="db_docs")
    if dbt_dir is not None:
        from etl.dbt import render_files

        for name, content in render_files().items():
            path = Path(dbt_dir) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            _say(f"wrote {path}", event="db_docs")


@cli.group("rates")
def rates_group() -> None:
    """Currency rates to the reporting currency (currency_rates)."""


@rates_group.command("load")
@common_options
@click.argument("file")
def rates_load(file: str) -> None:
    """Load FILE (CSV: currency,rate,valid_from) into currency_rates, all lines or none."""
    from etl import db
    from etl.rates import load_rates, read_rates

    rates = read_rates(file)  # every line checked before the database is touched
    settings = _state().settings()
    engine = db.create_engine_for(settings.database.url)
    try:
        db.require_head(engine)
        result = load_rates(engine, rates)
    finally:
        engine.dispose()
    _say(
        f"loaded {result.loaded} rate(s) from {file} ({result.replaced} replaced)",
        event="rates_load",
        loaded=result.loaded,
        replaced=result.replaced,
    )


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
        report = run(engine, options)
    except EtlError as exc:
        report = exc.report  # also when the run raised: alerts need failed runs
        raise
    finally:
        if progress is not None:
            progress.close()
        if report is not None:  # also when the run raised: alerts need failed runs
            _emit_metrics(report, metrics_file, pushgateway, command, shard)
            counts: dict[str, Any] = report.totals()
            _say(
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
    stop = options.stop

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if not stop.request(name, signum):
            raise KeyboardInterrupt  # a second signal: stop now
        log.warning("received %s: finishing in-flight work, then stopping", name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


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
    _say(render_status(engine, runs), event="status")


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
@click.option(
    "--webhook-url",
    help="POST a signed Partner Center callback here for every change the sandbox makes.",
)
@click.option(
    "--webhook-ca-file",
    default="sandbox-webhook-ca.pem",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="With --webhook-url: write the sandbox's test CA here (the receiver's webhook.ca_bundle).",
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
    webhook_url: str | None,
    webhook_ca_file: str,
) -> None:
    """Serve a simulated Referrals API (for trying the tool and for tests)."""
    from etl.errors import ConfigError
    from etl.sandbox import Sandbox, serve
    from etl.sandbox.server import listen_socket

    try:
        sock = listen_socket(host, port)  # before saying anything: a busy port is one line
    except OSError as exc:
        raise ConfigError(
            f"the sandbox cannot listen on {host}:{port} ({exc.strerror or exc}); is another "
            "server using that port? pick another with --port"
        ) from None
    box = Sandbox(count=count, seed=seed)
    box.faults.latency_seconds = latency
    box.faults.throttle_rps = throttle
    box.faults.send_304 = not no_304
    box.faults.accepted_tokens = set(tokens) or None
    url = f"http://{host}:{sock.getsockname()[1]}"
    exports = [
        f"export REFERRALS_ETL_API_BASE_URL={url}/v1.0",
        (
            "export REFERRALS_ETL_AUTH_MODE=access_token "
            f"REFERRALS_ETL_AUTH_ACCESS_TOKEN={tokens[0] if tokens else 'sandbox-token'}"
        ),
    ]
    _say(
        f"sandbox: {count} referrals at {url}/v1.0; its ids: curl {url}/_sandbox/ids; "
        f"control endpoints: {url}/_sandbox/; Ctrl-C stops it. Point the job at it with:",
        event="sandbox_listening",
        base_url=f"{url}/v1.0",
    )
    for line in exports:
        _say(line, event="sandbox_export")
    if webhook_url is None:
        serve(box, sock=sock)
        return
    from etl.sandbox.signing import TestAuthority
    from etl.sandbox.webhooks import CertificateServer, WebhookSender

    authority = TestAuthority()
    Path(webhook_ca_file).write_bytes(authority.ca_pem())
    with (
        CertificateServer(authority) as certificates,
        WebhookSender(box, webhook_url, authority, certificates.url()),
    ):
        _say(
            f"sandbox: signed callbacks to {webhook_url}; for the receiver set "
            f"REFERRALS_ETL_WEBHOOK_CA_BUNDLE={webhook_ca_file} "
            f"REFERRALS_ETL_WEBHOOK_CERTIFICATE_HOSTS={certificates.host}",
            event="sandbox_webhooks",
        )
        serve(box, sock=sock)


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

    run_demo(database, count, lambda line: _say(line, event="demo"))


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

    settings = _state().settings()
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
        code = run_schedule(settings, on_report=on_report)
    finally:
        if server is not None:
            server.close()
    sys.exit(code)


# serve and webhook ---------------------------------------------------------------------


@cli.command()
@common_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 in a container).",
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--no-schedule",
    is_flag=True,
    help="Receive and fetch only; the scheduled sync runs elsewhere (e.g. a CronJob).",
)
def serve(host: str, port: int, no_schedule: bool) -> None:
    """Receive Partner Center's signed webhooks, fetch what they name, and run the schedule."""
    from etl.webhooks.serve import run_serve

    sys.exit(run_serve(_state().settings(), host, port, schedule=not no_schedule))


@cli.group("webhook")
def webhook_group() -> None:
    """Partner Center's webhook registration: register, status, test."""


@webhook_group.command("register")
@common_options
@click.argument("url")
@click.option(
    "--events",
    help="Comma-separated event names (default: every referral event).",
)
def webhook_register(url: str, events: str | None) -> None:
    """Register URL (the receiver's public https address) for the referral events."""
    from etl.webhooks.registration import DEFAULT_EVENTS, registration_client

    if not url.startswith("https://"):
        raise click.UsageError("URL must be an https:// address Partner Center can reach")
    names = [e.strip() for e in events.split(",") if e.strip()] if events else DEFAULT_EVENTS
    with registration_client(_state().settings()) as client:
        answer = client.register(url, names)
    _say(f"registered {answer.get('WebhookUrl', url)} for {', '.join(names)}", event="webhook")
    if answer.get("SubscriberId"):
        _say(f"subscriber id: {answer['SubscriberId']}", event="webhook")


@webhook_group.command("status")
@common_options
def webhook_status() -> None:
    """Show the registration (URL and events), or that there is none."""
    from etl.webhooks.registration import registration_client

    with registration_client(_state().settings()) as client:
        found = client.get()
    if found is None:
        _say("no webhook is registered: run `referrals-etl webhook register URL`", event="webhook")
        sys.exit(1)
    _say(f"url: {found.get('WebhookUrl', '-')}", event="webhook")
    _say(f"events: {', '.join(found.get('WebhookEvents') or []) or '-'}", event="webhook")
    if found.get("SubscriberId"):
        _say(f"subscriber id: {found['SubscriberId']}", event="webhook")


@webhook_group.command("test")
@common_options
@click.option(
    "--wait",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds to wait for Partner Center to report the delivery.",
)
def webhook_test(wait: float) -> None:
    """Have Partner Center send its validation event, and report how the delivery went."""
    from etl.webhooks.registration import delivered, registration_client

    with registration_client(_state().settings()) as client:
        correlation = client.send_test()
        _say(
            f"test event sent (correlation id {correlation}); waiting for its delivery",
            event="webhook",
        )
        attempts = client.wait_for_test(correlation, wait)
    if not attempts:
        _say(
            f"no delivery reported within {wait:g}s; try `webhook test` again later",
            event="webhook",
        )
        sys.exit(4)
    for attempt in attempts:
        _say(
            f"{attempt.get('dateTimeUtc', '-')}: response {attempt.get('responseCode', '-')} "
            f"{attempt.get('responseMessage') or ''} {attempt.get('systemError') or ''}".rstrip(),
            event="webhook",
        )
    sys.exit(0 if any(delivered(a) for a in attempts) else 1)


# auth ------------------------------------------------------------------------------------


@cli.group("auth")
def auth_group() -> None:
    """Sign in (device code), show who is signed in, sign out."""


@auth_group.command("login")
@common_options
def auth_login() -> None:
    """Sign in: device code (mode device_code), or redeem the refresh token (refresh_token)."""
    from etl.auth.commands import login

    login(_state().settings(), lambda line: _say(line, event="auth_login"))


@auth_group.command("status")
@common_options
def auth_status() -> None:
    """Who is signed in, until when, and where the cache is (never a token)."""
    from etl.auth.commands import describe_status

    _say(describe_status(_state().settings()), event="auth_status")


@auth_group.command("logout")
@common_options
def auth_logout() -> None:
    """Remove the signed-in account from the token cache."""
    from etl.auth.commands import logout

    _say(logout(_state().settings()), event="auth_logout")


# entry point -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps every error to one line and its exit code."""
    setup_logging()
    try:
        cli.main(args=argv, prog_name="referrals-etl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if _JSON_LOGS[0]:
            _say(
                exc.format_message(), event="usage_error", level="error", outcome="exit 2", err=True
            )
        else:
            exc.show()
        sys.exit(2)
    except click.Abort:
        _say("aborted", event="interrupted", level="error", err=True)
        sys.exit(130)
    except EtlError as exc:
        _fail(str(exc), exc.exit_code, exc)
    except KeyboardInterrupt:
        _say("error: interrupted", event="interrupted", level="error", err=True)
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


def _say(text: str, *, event: str, level: str = "info", err: bool = False, **fields: Any) -> None:
    """Print a result line: as is, or with --log-format json one JSON object per line.

    In JSON mode ``fields`` become the record's fields (e.g. the ``summary`` record's counts);
    a text of several lines (status, the demo's table) is one record with a multi-line message.
    """
    if _JSON_LOGS[0]:
        click.echo(json_line(text, level=level, event=event, **fields), err=err)
    else:
        click.echo(text, err=err)


def _verbosity() -> int:
    return max(_VERBOSITY[0], 2 if os.environ.get("REFERRALS_ETL_DEBUG") else 0)
