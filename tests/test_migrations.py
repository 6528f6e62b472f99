"""Migrations: upgrade from empty, downgrade to base, upgrade again, and alembic check."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import db
from etl.errors import SchemaNotAtHeadError


def test_round_trip_and_models_match_migrations(engine: Engine) -> None:
    assert db.current_revision(engine) == db.head_revision()
    db.check_models_match(engine)
    db.downgrade(engine, "base")
    assert db.current_revision(engine) is None
    assert [t for t in sa.inspect(engine).get_table_names() if t != "alembic_version"] == []
    with pytest.raises(SchemaNotAtHeadError, match="run `referrals-etl db upgrade`"):
        db.require_head(engine)
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()
    db.check_models_match(engine)
    db.require_head(engine)
