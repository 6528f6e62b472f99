"""The benchmark's databases: made fresh by the migrations, emptied between scenarios.

SQLite lives in the run's temporary folder; PostgreSQL and MariaDB get a database of their own
(``etl_bench`` by default, never ``test`` or ``etl_test_*``), set with ``BENCH_POSTGRES_URL`` /
``BENCH_MARIADB_URL``. :class:`WriteCounter` counts the rows each statement wrote, per table.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import db, store
from etl.models import CHILD_TABLES, TABLES

URLS = {
    "postgres": os.environ.get(
        "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/etl_bench"
    ),
    "mariadb": os.environ.get("BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/etl_bench"),
}
DATA_TABLES = ("referrals", *CHILD_TABLES, "referral_history")
# An UPDATE of referrals that sets only these columns is bookkeeping, not a data row written.
_BOOKKEEPING_COLUMNS = {"last_checked_at", "deleted_at"}
_STATEMENT = re.compile(r"^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+[`\"]?(\w+)", re.IGNORECASE)
_SET = re.compile(r"\bSET\b(.*?)(\bWHERE\b|$)", re.IGNORECASE | re.DOTALL)
_PROTECTED = re.compile(r"^(test|etl_test_.*|postgres|mysql|information_schema|sys)$")


class Database:
    """One database of the benchmark: ``url`` for the job, ``reset()`` to empty it."""

    def __init__(self, dialect: str, workdir: Path) -> None:
        self.dialect = dialect
        self._workdir = workdir
        if dialect == "sqlite":
            self._template = workdir / "template.db"
            self.path = workdir / "bench.db"
            self.url = f"sqlite:///{self.path}"
        elif dialect in URLS:
            self.url = db.normalise_url(URLS[dialect]).render_as_string(hide_password=False)
        else:
            raise ValueError(f"unknown database {dialect!r}: sqlite, postgres or mariadb")

    def create(self) -> None:
        """Make the database anew and run the migrations (raises when the server is down)."""
        if self.dialect == "sqlite":
            engine = db.create_engine_for(f"sqlite:///{self._template}")
            db.upgrade(engine)
            engine.dispose()
            self.reset()
            return
        _create_server_db(self.url)
        engine = db.create_engine_for(self.url)
        try:
            db.upgrade(engine)
        finally:
            engine.dispose()

    def reset(self) -> None:
        """Empty every table (SQLite: a fresh copy of the migrated template)."""
        if self.dialect == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            shutil.copy(self._template, self.path)
            return
        engine = db.create_engine_for(self.url)
        names = [t.name for t in reversed(TABLES.values())]
        try:
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    conn.execute(sa.text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
                else:
                    conn.execute(sa.text("SET FOREIGN_KEY_CHECKS=0"))
                    for name in names:
                        conn.execute(sa.text(f"TRUNCATE TABLE {name}"))
                    conn.execute(sa.text("SET FOREIGN_KEY_CHECKS=1"))
        finally:
            engine.dispose()

    def drop(self) -> None:
        if self.dialect != "sqlite":
            _drop_server_db(self.url)


def _admin(url: str) -> tuple[Engine, str]:
    parsed = db.normalise_url(url)
    name = parsed.database or ""
    if _PROTECTED.match(name):
        raise ValueError(f"the benchmark will not use database {name!r}; choose another name")
    admin_db = "postgres" if parsed.get_backend_name() == "postgresql" else None
    admin_url = sa.engine.URL.create(
        parsed.drivername,
        username=parsed.username,
        password=parsed.password,
        host=parsed.host,
        port=parsed.port,
        database=admin_db,
        query=parsed.query,
    )
    admin = db.create_engine_for(
        admin_url.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT"
    )
    return admin, name


def _create_server_db(url: str) -> None:
    admin, name = _admin(url)
    try:
        with admin.connect() as conn:
            if admin.dialect.name == "postgresql":
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
                conn.execute(
                    sa.text(
                        f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                    )
                )
    finally:
        admin.dispose()


def _drop_server_db(url: str) -> None:
    admin, name = _admin(url)
    try:
        with admin.connect() as conn:
            if admin.dialect.name == "postgresql":
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        admin.dispose()


class WriteCounter:
    """Rows written per table, from each statement's rowcount (executemany: the sum).

    ``data`` counts rows of the referral tables (referrals, children, history) inserted, updated
    or deleted; an UPDATE of referrals that only sets ``last_checked_at``/``deleted_at`` and
    every ledger/run/lock row count as ``bookkeeping``. MariaDB counts an upsert that updates a
    row as 2, as its server reports it. PostgreSQL's child rows go by ``COPY``
    (``etl.store.copy_rows``), which no cursor event sees: they are counted as inserts where
    they are copied.
    """

    def __init__(self, engine: Engine) -> None:
        self.by_table: Counter[str] = Counter()
        self.data = 0
        self.bookkeeping = 0
        self._lock = threading.Lock()
        self._engine = engine
        sa.event.listen(engine, "after_cursor_execute", self._after)
        copy_rows = store.copy_rows

        def counted_copy(conn: Any, table: Any, columns: Any, rows: list[Any]) -> None:
            copy_rows(conn, table, columns, rows)
            if conn.engine is self._engine:
                self._count("insert", table.name, len(rows), data=True)

        store.copy_rows = counted_copy  # instrumentation of a step

    def _count(self, verb: str, table: str, rows: int, data: bool) -> None:
        with self._lock:
            self.by_table[f"{verb} {table}"] += rows
            if data:
                self.data += rows
            else:
                self.bookkeeping += rows

    def _after(self, _conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        match = _STATEMENT.match(statement)
        if match is None:
            return
        rows = max(int(getattr(cursor, "rowcount", 0) or 0), 0)
        if not rows:
            return
        verb, table = match.group(1).split()[0].upper(), match.group(2).lower()
        data = table in DATA_TABLES
        if data and verb == "UPDATE" and table == "referrals":
            found = _SET.search(statement)
            columns = set(re.findall(r"(\w+)\s*=", found.group(1))) if found else set()
            data = not columns <= _BOOKKEEPING_COLUMNS
        self._count(verb.lower(), table, rows, data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "bookkeeping": self.bookkeeping,
            "by_table": dict(sorted(self.by_table.items())),
        }
