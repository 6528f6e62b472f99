"""Engines for the three supported databases, and the Alembic migrations behind `db upgrade`.

The schema is only ever made by the migrations (never ``create_all``); ``require_head`` is the
guard that `sync` and `backfill` call so they never write into an older schema.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection, Engine, make_url

from etl.config import redact_url
from etl.errors import ConfigError, DatabaseError, SchemaNotAtHeadError
from etl.flatten import RawJson

log = logging.getLogger(__name__)

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
    reason = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0][:300]
    return DatabaseError(
        f"database {describe(engine)}: {reason}; check database.url and that the server is up"
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
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except sa.exc.OperationalError as exc:
        raise connect_error(engine, exc) from exc


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run_alembic(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    _run_alembic(engine, command.downgrade, revision)


def check_models_match(engine: Engine) -> None:
    """``alembic check``: raise when the models and the migrated database differ."""
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
