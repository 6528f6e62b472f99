"""Engines for the three supported databases, and the Alembic migrations behind `db upgrade`.

The schema is only ever made by the migrations (never ``create_all``); ``require_head`` is the
guard that `sync` and `backfill` call so they never write into an older schema. It reads the
head revision from the migration scripts' text and the current one with one query, so a run
starts without loading Alembic; Alembic itself is imported only by `db upgrade` and friends.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from etl.config import redact_url
from etl.errors import ConfigError, DatabaseError, SchemaNotAtHeadError, first_line
from etl.flatten import RawJson

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10  # seconds to open a connection to a database server before giving up
# Seconds a statement waits for a lock another session holds before it fails. PostgreSQL waits
# for ever by default: a session holding `LOCK TABLE` or an ALTER in an open transaction held
# the run (and SIGTERM, its thread being blocked in the driver) for as long as it lasted. The
# job's own transactions hold row locks for one batch (~0.1 s); a longer wait is someone else's
# and ends the run with exit 5 and one line. MySQL/MariaDB wait 50 s by default: the same 10.
LOCK_TIMEOUT = 10

_DRIVERS = {
    "postgresql": ("postgresql+psycopg", "psycopg", "postgres"),
    "postgres": ("postgresql+psycopg", "psycopg", "postgres"),
    "mysql": ("mysql+pymysql", "pymysql", "mysql"),
    "mariadb": ("mariadb+pymysql", "pymysql", "mysql"),
}


def normalise_url(url: str) -> URL:
    """Parse a database URL, choosing this project's driver when none is named."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            f"database.url {redact_url(url)!r} is not a database URL; "
            "expected e.g. sqlite:///referrals.db or postgresql+psycopg://user@host/db"
        ) from None
    backend = parsed.get_backend_name()
    if backend in _DRIVERS and "+" not in parsed.drivername:
        parsed = parsed.set(drivername=_DRIVERS[backend][0])
    if parsed.get_backend_name() in {"mysql", "mariadb"} and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def json_serializer(value: Any) -> str:
    """JSON for the payload columns: API text as received (``RawJson``) passes through."""
    if isinstance(value, RawJson):
        return str.__str__(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def create_engine_for(url: str, **kwargs: Any) -> Engine:
    """An engine tuned for this job on SQLite, PostgreSQL or MariaDB/MySQL."""
    parsed = normalise_url(url)
    kwargs.setdefault("json_serializer", json_serializer)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        kwargs.setdefault("connect_args", {"timeout": 30})
    else:
        kwargs.setdefault("pool_pre_ping", True)
        # A server that does not answer fails the connection in seconds, not minutes.
        connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
        if backend == "postgresql":
            connect_args["options"] = f"-c lock_timeout={LOCK_TIMEOUT * 1000}"
        else:
            connect_args["init_command"] = f"SET SESSION innodb_lock_wait_timeout = {LOCK_TIMEOUT}"
        kwargs.setdefault("connect_args", connect_args)
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except ModuleNotFoundError as exc:
        extra = _DRIVERS.get(backend, ("", "", backend))[2]
        raise ConfigError(
            f"database.url needs the {exc.name} driver: "
            f"pip install 'partner-referrals-etl[{extra}]'"
        ) from None
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"database.url {parsed.render_as_string()!r}: {exc}") from None
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Checkpoint (copy the WAL into the database, with an fsync) every ~40 MB instead of the
    # default ~4 MB: a backfill writes a few KB per referral, and the default made checkpoints
    # most of the cost of each commit.
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    cursor.close()


def describe(engine: Engine) -> str:
    """The engine's URL with the password hidden, for messages."""
    return engine.url.render_as_string(hide_password=True)


def connect_error(engine: Engine, exc: Exception) -> DatabaseError:
    """One clear line for a database that cannot be reached or keeps failing."""
    reason = first_line(getattr(exc, "orig", None) or exc)
    return DatabaseError(
        f"database {describe(engine)}: {reason}; check database.url and that the server is up"
    )


def failure(engine: Engine, exc: Exception) -> DatabaseError:
    """One line for a database error that ends the run (a missing table or column, a denied
    permission, a read-only or full database): the database's failure, not a referral's."""
    reason = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
    first = reason[0][:300] if reason else exc.__class__.__name__
    return DatabaseError(
        f"database {describe(engine)}: {first}; the run stopped (every committed batch is "
        "whole); check the database (`referrals-etl db current`, permissions, space) and rerun"
    )


def migrations_dir() -> Path:
    """The Alembic scripts, shipped inside the package (``etl/migrations``) as package data."""
    found = Path(__file__).resolve().parent / "migrations"
    if not (found / "env.py").is_file():
        raise DatabaseError(
            f"the migrations folder {found} is missing from this installation; "
            "reinstall the package"
        )
    return found


def _alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


_REVISION = re.compile(r"^revision(?:\s*:\s*str)?\s*=\s*[\"']([^\"']+)[\"']", re.MULTILINE)
_DOWN = re.compile(r"^down_revision(?:\s*:[^=]*)?=\s*[\"']([^\"']+)[\"']", re.MULTILINE)


def head_revision() -> str:
    """The migrations' head, read from the scripts' ``revision``/``down_revision`` lines
    without importing them (a test checks that Alembic agrees)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in sorted((migrations_dir() / "versions").glob("*.py")):
        text = script.read_text(encoding="utf-8")
        found = _REVISION.search(text)
        if found is None:
            continue
        revisions.add(found.group(1))
        down = _DOWN.search(text)
        if down is not None:
            parents.add(down.group(1))
    heads = sorted(revisions - parents)
    if len(heads) != 1:
        raise DatabaseError(f"the migrations have {len(heads)} heads ({heads}); reinstall")
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``alembic_version``), or None for an empty database."""
    try:
        with engine.connect() as connection:
            if not connection.dialect.has_table(connection, "alembic_version"):
                return None
            found = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    except sa.exc.OperationalError as exc:
        raise connect_error(engine, exc) from exc
    return ",".join(sorted(str(row[0]) for row in found)) or None


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    _run_alembic(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    from alembic import command

    _run_alembic(engine, command.downgrade, revision)


def check_models_match(engine: Engine) -> None:
    """``alembic check``: raise when the models and the migrated database differ."""
    from alembic import command

    _run_alembic(engine, command.check)


def _run_alembic(engine: Engine, action: Any, *args: Any) -> None:
    try:
        with engine.begin() as connection:
            action(_alembic_config(connection), *args)
    except sa.exc.OperationalError as exc:
        raise connect_error(engine, exc) from exc


def require_head(engine: Engine) -> None:
    """Refuse to run on a schema that is not at the migrations' head."""
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        where = "an empty database" if current is None else f"revision {current}"
        raise SchemaNotAtHeadError(
            f"database {describe(engine)} is at {where}, not at {head}: "
            "run `referrals-etl db upgrade`"
        )
