"""The console entry point: every error becomes one line a person can act on, and its exit code.

Importing this module registers every command on :data:`etl.cli.app.cli`.
"""

from __future__ import annotations

import logging
import sys

import click

from etl.cli import auth, database, runs, sandbox, webhooks  # noqa: F401 - registers them
from etl.cli.app import JSON_LOGS, cli, say, verbosity
from etl.config import redact_url
from etl.errors import EtlError, first_line
from etl.logs import setup_logging

log = logging.getLogger("etl.cli")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps every error to one line and its exit code."""
    setup_logging()
    try:
        cli.main(args=argv, prog_name="referrals-etl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if JSON_LOGS[0]:
            say(
                exc.format_message(), event="usage_error", level="error", outcome="exit 2", err=True
            )
        else:
            exc.show()
        sys.exit(2)
    except click.Abort:
        say("aborted", event="interrupted", level="error", err=True)
        sys.exit(130)
    except EtlError as exc:
        _fail(str(exc), exc.exit_code, exc)
    except KeyboardInterrupt:
        say("error: interrupted", event="interrupted", level="error", err=True)
        sys.exit(130)
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        reason = first_line(getattr(exc, "orig", None) or exc)
        _fail(f"database error: {reason}; check database.url and the server", 5, exc)
    sys.exit(0)


def _is_database_error(exc: Exception) -> bool:
    """A SQLAlchemy error; SQLAlchemy is not imported to find out when nothing loaded it."""
    if "sqlalchemy" not in sys.modules:
        return False
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, SQLAlchemyError)


def _fail(message: str, code: int, exc: BaseException) -> None:
    if verbosity() > 1:
        log.error("details", exc_info=exc)
    if JSON_LOGS[0]:
        log.error(redact_url(message), extra={"event": "error", "outcome": f"exit {code}"})
    else:
        click.echo(f"error: {redact_url(message)}", err=True)
    sys.exit(code)
