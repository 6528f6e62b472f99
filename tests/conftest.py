"""Real databases for the tests: SQLite always, PostgreSQL and MariaDB on the local servers.

The schema is made by running the migrations, as in production: once per session and
database, then each test starts from empty tables. Each xdist worker has databases of its own.
Without a server the PostgreSQL/MariaDB tests skip with the reason, except under CI (``CI`` set),
where a missing server fails the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import db
from etl.auth import BearerAuth, StaticTokenProvider
from etl.config import Settings
from etl.ids import TrackedId
from etl.models import TABLES
from etl.report import SyncReport
from etl.sandbox import Sandbox
from etl.sync import RunOptions, run_backfill, run_sync

POSTGRES_URL = os.environ.get(
    "REFERRALS_ETL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get(
    "REFERRALS_ETL_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
IN_CI = bool(os.environ.get("CI"))
TOKEN = "test-token"
BASE_URL = "http://sandbox.test/v1.0"
DIALECTS = ["sqlite", "postgres", "mariadb"]


def _worker(request: pytest.FixtureRequest) -> str:
    return str(getattr(request.config, "workerinput", {}).get("workerid", "main"))


def _server_db(admin_url: str, name: str) -> str:
    """Create (fresh) database ``name`` on the server of ``admin_url``; return its URL."""
    admin = db.create_engine_for(admin_url, isolation_level="AUTOCOMMIT")
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
    return db.normalise_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _unavailable(what: str, exc: Exception) -> None:
    reason = f"{what} server not reachable ({str(exc).splitlines()[0][:120]})"
    if IN_CI:
        pytest.fail(f"{reason}: in CI the PostgreSQL and MariaDB tests must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def database_urls(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str | Exception]]:
    """One migrated database per dialect for this worker (an Exception when unavailable).

    Server databases are named after the worker and the process, so concurrent test sessions
    on one machine never share (or drop) each other's databases; they are dropped at the end.
    """
    name = f"etl_test_{_worker(request)}_{os.getpid()}"
    urls: dict[str, str | Exception] = {}
    template = tmp_path_factory.mktemp("sqlite") / "template.db"
    urls["sqlite"] = f"sqlite:///{template}"
    admins = {"postgres": POSTGRES_URL, "mariadb": MARIADB_URL}
    for dialect, admin in admins.items():
        try:
            urls[dialect] = _server_db(admin, name)
        except sa.exc.OperationalError as exc:
            urls[dialect] = exc
    for url in urls.values():
        if isinstance(url, str):
            engine = db.create_engine_for(url)
            db.upgrade(engine)
            engine.dispose()
    yield urls
    for dialect, admin in admins.items():
        if isinstance(urls[dialect], str):
            _drop_server_db(admin, name)


def _drop_server_db(admin_url: str, name: str) -> None:
    admin = db.create_engine_for(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if admin.dialect.name == "postgresql":
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        admin.dispose()


def _empty_tables(engine: Engine) -> None:
    names = [t.name for t in reversed(TABLES.values())]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
        else:
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS=0"))
            for name in names:
                conn.execute(sa.text(f"TRUNCATE TABLE {name}"))
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS=1"))


def make_engine(dialect: str, urls: dict[str, str | Exception], tmp_path: Path) -> Engine:
    url = urls[dialect]
    if isinstance(url, Exception):
        _unavailable(dialect, url)
        raise AssertionError("unreachable")
    if dialect == "sqlite":
        path = tmp_path / "referrals.db"
        shutil.copy(sa.engine.make_url(url).database or "", path)
        return db.create_engine_for(f"sqlite:///{path}")
    engine = db.create_engine_for(url)
    _empty_tables(engine)
    return engine


@pytest.fixture(params=DIALECTS)
def engine(
    request: pytest.FixtureRequest, database_urls: dict[str, str | Exception], tmp_path: Path
) -> Iterator[Engine]:
    """A migrated, empty database of each dialect in turn."""
    if request.param != "sqlite":
        request.applymarker(getattr(pytest.mark, request.param))
    built = make_engine(request.param, database_urls, tmp_path)
    yield built
    built.dispose()


@pytest.fixture
def sqlite_engine(database_urls: dict[str, str | Exception], tmp_path: Path) -> Iterator[Engine]:
    built = make_engine("sqlite", database_urls, tmp_path)
    yield built
    built.dispose()


def settings_for(engine: Engine, **sections: dict[str, Any]) -> Settings:
    """Settings pointing at ``engine`` and the in-process sandbox (no discovery by default)."""
    base: dict[str, dict[str, Any]] = {
        "database": {"url": engine.url.render_as_string(hide_password=False)},
        "api": {"base_url": BASE_URL, "concurrency": 8, "max_attempts": 3},
        # The writer in a thread (the default) unless a test asks for the process.
        "sync": {"discover": False, "writer_process": False},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return Settings().replace(**base)


def options_for(box: Sandbox, **kwargs: Any) -> RunOptions:
    box.faults.accepted_tokens = {TOKEN}
    return RunOptions(
        transport=box.transport(),
        auth=BearerAuth(StaticTokenProvider(TOKEN)),
        **kwargs,
    )


def backfill(
    engine: Engine,
    box: Sandbox,
    ids: list[str] | None = None,
    settings: Settings | None = None,
    **kwargs: Any,
) -> SyncReport:
    """Run a backfill of ``ids`` (default: every sandbox id) against the in-process sandbox."""
    chosen = box.ids if ids is None else ids
    return run_backfill(
        settings or settings_for(engine),
        engine,
        (TrackedId(i, "file") for i in chosen),
        options_for(box, trigger="backfill", **kwargs),
    )


def sync(
    engine: Engine, box: Sandbox, settings: Settings | None = None, **kwargs: Any
) -> SyncReport:
    return run_sync(settings or settings_for(engine), engine, options_for(box, **kwargs))


def rows_of(engine: Engine, table: str, order_by: str | None = None) -> list[dict[str, Any]]:
    t = TABLES[table]
    keys = list(t.primary_key.columns) if order_by is None else [t.c[order_by]]
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(*keys))]


def count_rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for name, t in TABLES.items()
        }


@pytest.fixture
def make_sandbox() -> Callable[..., Sandbox]:
    def build(count: int = 50, seed: int = 1) -> Sandbox:
        return Sandbox(count=count, seed=seed)

    return build
