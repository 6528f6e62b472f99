"""Fast start: what each command imports before it does anything (not how long it takes).

``--help`` loads no SQLAlchemy, Alembic, aiohttp, httpx or MSAL; ``status`` and ``db current``
load SQLAlchemy (they query) but never Alembic or the HTTP and sign-in stacks; a run never loads
SQLAlchemy's ORM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from etl import db

HEAVY = ("sqlalchemy", "alembic", "aiohttp", "httpx", "msal", "httpx_aiohttp", "apscheduler")
NETWORK = ("alembic", "aiohttp", "httpx", "msal", "httpx_aiohttp")

_PROBE = """
import json, sys
from etl.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _loaded(args: list[str], env: dict[str, str] | None = None) -> tuple[int, set[str]]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return int(found["code"] or 0), {m.split(".")[0] for m in found["modules"]}


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["sync", "--help"],
        ["backfill", "--help"],
        ["status", "--help"],
        ["schedule", "--help"],
        ["db", "--help"],
        ["db", "upgrade", "--help"],
        ["auth", "login", "--help"],
        ["sandbox", "--help"],
    ],
)
def test_help_loads_none_of_the_heavy_libraries(args: list[str]) -> None:
    """`--help` of each command imports none of the heavy libraries."""
    code, modules = _loaded(args)
    assert code == 0
    assert sorted(modules & set(HEAVY)) == []


def test_read_only_commands_load_no_alembic_or_http(tmp_path: Path) -> None:
    """`status` and `db current` query the database without importing alembic or HTTP clients."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = db.create_engine_for(url)
    db.upgrade(engine)
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_ETL_")}
    env["REFERRALS_ETL_DATABASE_URL"] = url
    for args in (["status"], ["db", "current"]):
        code, modules = _loaded(args, env)
        assert code == 0, args
        assert "sqlalchemy" in modules  # they do query the database
        assert sorted(modules & set(NETWORK)) == [], args


def test_the_head_revision_read_from_the_scripts_is_alembics() -> None:
    """The head revision etl.db reads from the scripts is the one alembic computes."""
    from alembic.script import ScriptDirectory

    from etl.db import _alembic_config

    expected = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert expected == db.head_revision()


def test_a_backfill_run_never_loads_the_orm(tmp_path: Path) -> None:
    """The run reads and writes through SQLAlchemy Core tables only: a whole `backfill` (schema
    check, lock, fetches, writes) imports no `sqlalchemy.orm`, ~0.1 s of every start."""
    from etl.sandbox import Sandbox, ServerThread

    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = db.create_engine_for(url)
    db.upgrade(engine)
    engine.dispose()
    box = Sandbox(count=5, seed=3)
    box.faults.accepted_tokens = {"t"}
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(box.ids) + "\n")
    with ServerThread(box) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_ETL_")}
        env.update(
            REFERRALS_ETL_DATABASE_URL=url,
            REFERRALS_ETL_API_BASE_URL=server.base_url,
            REFERRALS_ETL_AUTH_MODE="access_token",
            REFERRALS_ETL_AUTH_ACCESS_TOKEN="t",
            REFERRALS_ETL_SYNC_DISCOVER="false",
        )
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, "backfill", str(ids)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["code"] == 0, result.stderr[-2000:]
    assert "sqlalchemy.engine" in found["modules"]  # it did run against the database
    assert [m for m in found["modules"] if m.startswith("sqlalchemy.orm")] == []
