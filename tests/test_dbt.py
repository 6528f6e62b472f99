"""The dbt package (integrations/dbt): generated files in step with the schema, and `dbt build`
passing against PostgreSQL after a sandbox backfill.

dbt is in the ``test`` extra (never a runtime dependency); without it the build test skips,
except under CI, where it must run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import IN_CI, POSTGRES_URL, _drop_server_db, _server_db, backfill

from etl import db
from etl.dbt import SOURCE, render_files, render_sources, staging_name
from etl.dictionary import render_data_dictionary
from etl.models import TABLES, metadata
from etl.rates import Rate, load_rates
from etl.sandbox import Sandbox
from etl.views import VIEWS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "integrations" / "dbt"
QUERIES_SQL = ROOT / "docs" / "queries.sql"


def test_committed_dbt_files_are_up_to_date() -> None:
    """The dbt package's committed models are exactly what the models render today."""
    for name, content in render_files().items():
        path = PACKAGE / "models" / name
        assert path.exists(), (
            f"{path} is out of date: run `referrals-etl db docs --dbt-dir integrations/dbt/models`"
        )
        assert path.read_text("utf-8") == content, (
            f"{path} is out of date: run `referrals-etl db docs --dbt-dir integrations/dbt/models`"
        )
    models = {p.name for p in (PACKAGE / "models" / "staging").glob("*.sql")}
    assert models == {f"{staging_name(v)}.sql" for v in VIEWS}


def test_a_new_column_changes_the_rendered_docs() -> None:
    """Adding a column changes the dictionary and the sources (so the up-to-date tests fail
    until both are regenerated), with the column's comment as its description in both."""
    copy = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(copy)
    copy.tables["referrals"].append_column(
        sa.Column("win_probability", sa.Numeric(5, 4), comment="details.winProbability")
    )
    sources = render_sources(copy)
    assert sources != render_sources()
    assert '- name: win_probability\n            description: "details.winProbability"' in sources
    assert render_data_dictionary(copy) != render_data_dictionary()


def test_sources_describe_every_column_with_the_dictionary_text() -> None:
    """The dbt sources describe every column in the data dictionary's words."""
    text = (PACKAGE / "models" / "sources.yml").read_text("utf-8")
    yaml = pytest.importorskip("yaml")
    (source,) = yaml.safe_load(text)["sources"]
    assert source["name"] == SOURCE
    described = {
        t["name"]: {c["name"]: c["description"] for c in t["columns"]} for t in source["tables"]
    }
    assert list(described) == [*TABLES, *(v.name for v in VIEWS)]
    for table in TABLES.values():
        assert described[table.name] == {
            c.name: " ".join(str(c.comment).split()) for c in table.columns
        }
    for view in VIEWS:
        assert described[view.name] == {c.name: " ".join(c.comment.split()) for c in view.columns}


def test_queries_sql_reads_only_relations_that_exist() -> None:
    """docs/queries.sql stays in step with the schema: what it reads exists, and each view has at
    least one query showing it in use."""
    sql = QUERIES_SQL.read_text("utf-8")
    relations = set(re.findall(r"\b(?:FROM|JOIN)\s+([a-z_]+)\b", sql))
    ctes = set(re.findall(r"\b([a-z_]+) AS \(", sql)) | {"funnel"}
    known = set(TABLES) | {v.name for v in VIEWS}
    assert relations - ctes <= known, relations - ctes - known
    assert {v.name for v in VIEWS} <= relations


def _dbt() -> str:
    found = Path(sys.executable).with_name("dbt")
    if found.exists():
        return str(found)
    which = shutil.which("dbt")
    if which is None:
        reason = "dbt is not installed (pip install -e '.[test]')"
        if IN_CI:
            pytest.fail(f"{reason}: in CI the dbt build must run", pytrace=False)
        pytest.skip(reason)
    return which


@pytest.mark.postgres
@pytest.mark.slow
def test_dbt_build_passes_against_postgresql_after_a_sandbox_backfill(tmp_path: Path) -> None:
    """`dbt build` (models and tests) passes on PostgreSQL after a sandbox backfill."""
    dbt = _dbt()
    name = f"etl_dbt_{os.getpid()}"
    try:
        url = _server_db(POSTGRES_URL, name)
    except sa.exc.OperationalError as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL not reachable: {exc}", pytrace=False)
        pytest.skip("PostgreSQL not reachable")
    engine = db.create_engine_for(url)
    try:
        db.upgrade(engine)
        box = Sandbox(count=150, seed=8)
        report = backfill(engine, box)
        assert report.counts.failed == 0
        box.change(fraction=0.4, seed=2)
        backfill(engine, box)  # second versions: status changes for the staging model
        load_rates(engine, [Rate("EUR", Decimal(1), datetime(2000, 1, 1, tzinfo=UTC), 2)])
        project = tmp_path / "dbt"
        shutil.copytree(PACKAGE, project, ignore=shutil.ignore_patterns("target", "logs"))
        parsed = engine.url
        env = {
            **os.environ,
            "REFERRALS_ETL_DBT_HOST": parsed.host or "127.0.0.1",
            "REFERRALS_ETL_DBT_PORT": str(parsed.port or 5432),
            "REFERRALS_ETL_DBT_USER": parsed.username or "postgres",
            "REFERRALS_ETL_DBT_PASSWORD": parsed.password or "",
            "REFERRALS_ETL_DBT_DBNAME": name,
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DBT_LOG_PATH": str(tmp_path / "logs"),
            "DBT_TARGET_PATH": str(tmp_path / "target"),
        }
        result = subprocess.run(
            [dbt, "build", "--project-dir", str(project), "--profiles-dir", str(project)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        summary = re.search(r"PASS=(\d+) WARN=(\d+) ERROR=(\d+) SKIP=(\d+)", output)
        assert summary is not None, output[-3000:]
        passed, _warned, errors, skipped = map(int, summary.groups())
        assert errors == 0, output[-3000:]
        assert skipped == 0, output[-3000:]
        assert passed >= 40, output[-3000:]
        with engine.connect() as conn:
            staged = conn.execute(sa.text("SELECT COUNT(*) FROM analytics.stg_referral_milestones"))
            assert staged.scalar() == 150
    finally:
        engine.dispose()
        _drop_server_db(POSTGRES_URL, name)
