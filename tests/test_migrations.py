"""Migrations: upgrade from empty, downgrade to base, upgrade again, and alembic check."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import db
from etl.errors import SchemaNotAtHeadError


def test_the_models_match_the_migrations_at_head(engine: Engine) -> None:
    """A database migrated to head has no drift from the models (`alembic check` is clean)."""
    assert db.head_revision() == db.current_revision(engine)
    db.check_models_match(engine)


def test_a_round_trip_through_base_gives_the_same_schema(engine: Engine) -> None:
    """Down to base leaves no table and is refused as not at head; up again is at head, no drift."""
    db.downgrade(engine, "base")
    assert db.current_revision(engine) is None
    assert [t for t in sa.inspect(engine).get_table_names() if t != "alembic_version"] == []
    with pytest.raises(SchemaNotAtHeadError, match="run `referrals-etl db upgrade`"):
        db.require_head(engine)
    db.upgrade(engine)
    assert db.head_revision() == db.current_revision(engine)
    db.check_models_match(engine)
    db.require_head(engine)


def _revisions() -> list[str]:
    """Every revision id, oldest first."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(db.migrations_dir()))
    return [rev.revision for rev in reversed(list(scripts.walk_revisions()))]


def test_every_past_revision_upgrades_to_head_with_no_drift(engine: Engine) -> None:
    """A database left at any earlier revision reaches head, and matches the models there."""
    for revision in _revisions()[:-1]:
        db.downgrade(engine, "base")
        db.upgrade(engine, revision)
        assert revision == db.current_revision(engine)
        db.upgrade(engine)
        assert db.head_revision() == db.current_revision(engine)
        db.check_models_match(engine)


def test_no_revision_imports_the_etl_package() -> None:
    """A revision must not change when the code does: it imports nothing from ``etl``."""
    import ast

    offenders = []
    for path in sorted((db.migrations_dir() / "versions").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n == "etl" or n.startswith("etl.")]
    assert offenders == []
