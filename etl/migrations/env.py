"""Alembic environment: the schema comes from ``etl.models``, the database from ``etl.config``.

The CLI and the tests hand a live connection in ``config.attributes["connection"]``; run by
hand (``alembic upgrade head``), the URL comes from the project's configuration.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from etl.config import load_settings
from etl.db import create_engine_for
from etl.models import metadata

target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine_for(load_settings().database.url)
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=load_settings().database.url,
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
