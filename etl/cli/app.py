"""What every command shares: the ``cli`` group, the global options and the result line.

Only click and the job's light modules are imported here (``--help`` stays fast).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from etl.config import Settings, load_settings
from etl.logs import json_line, setup_logging

F = TypeVar("F", bound=Callable[..., Any])
VERBOSITY = [0]  # -v count, kept beyond the click context for the error handler
JSON_LOGS = [False]  # --log-format json: the final error line is a JSON log line too


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
    VERBOSITY[0] = state.verbose
    setup_logging(state.log_format, state.verbose)
    return value


def _set_format(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    state = ctx.ensure_object(State)
    if value is not None:
        state.log_format = value
        JSON_LOGS[0] = value == "json"
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


def current_state() -> State:
    """The global options of the command being run."""
    return click.get_current_context().ensure_object(State)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@common_options
@click.version_option(package_name="partner-referrals-etl")
def cli() -> None:
    """Partner Center referrals (leads and co-sell opportunities) into your SQL database."""


def say(text: str, *, event: str, level: str = "info", err: bool = False, **fields: Any) -> None:
    """Print a result line: as is, or with --log-format json one JSON object per line.

    In JSON mode ``fields`` become the record's fields (e.g. the ``summary`` record's counts);
    a text of several lines (status, the demo's table) is one record with a multi-line message.
    """
    if JSON_LOGS[0]:
        click.echo(json_line(text, level=level, event=event, **fields), err=err)
    else:
        click.echo(text, err=err)


def verbosity() -> int:
    """-v count, or 2 (tracebacks) with REFERRALS_ETL_DEBUG set."""
    return max(VERBOSITY[0], 2 if os.environ.get("REFERRALS_ETL_DEBUG") else 0)
