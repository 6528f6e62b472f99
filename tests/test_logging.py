"""`--log-format json`: one JSON object per stderr line, stable fields, and never a secret.

The CLI runs as a subprocess (`python -m etl ...`) against a sandbox served over TCP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_engine, rows_of
from sqlalchemy.engine import Engine

from etl import db
from etl.sandbox import Sandbox, ServerThread

ROOT = Path(__file__).resolve().parent.parent
ACCESS_TOKEN = "tok.Live-4f1d9c2e8b7a6f5e"  # not JWT-shaped: the masking filter would not hide it
DB_PASSWORD = "Pa55-w0rd-zq81"
LEVELS = {"debug", "info", "warning", "error", "critical"}
BAD_LINE = "not a referral id!"


def _env(db_url: str, base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_ETL_")}
    env.update(
        REFERRALS_ETL_API_BASE_URL=base_url,
        REFERRALS_ETL_AUTH_MODE="access_token",
        REFERRALS_ETL_AUTH_ACCESS_TOKEN=ACCESS_TOKEN,
        REFERRALS_ETL_DATABASE_URL=db_url,
        REFERRALS_ETL_SYNC_DISCOVER="false",
        PYTHONPATH=str(ROOT),
    )
    return env


def _etl(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etl", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _json_objects(stderr: str) -> list[dict[str, Any]]:
    """The stderr lines that are JSON objects (other lines are the business of the test above)."""
    entries = []
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line as a JSON object (fails on the first line that is not one)."""
    entries = []
    for number, line in enumerate(stderr.splitlines(), 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"stderr line {number} is not JSON: {line!r}")
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


class Backfill:
    """One `backfill` of 8 sandbox ids, one bad id-file line and one id the API breaks."""

    def __init__(self, engine: Engine, box: Sandbox, result: subprocess.CompletedProcess[str]):
        self.engine = engine
        self.box = box
        self.result = result
        self.broken = box.ids[2]


@pytest.fixture(scope="module")
def json_backfill(
    database_urls: dict[str, str | Exception], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backfill]:
    """Run once for the tests that read its output."""
    tmp_path = tmp_path_factory.mktemp("json-backfill")
    sqlite_engine = make_engine("sqlite", database_urls, tmp_path)
    box = Sandbox(count=8, seed=21)
    box.faults.accepted_tokens = {ACCESS_TOKEN}
    box.faults.invalid_json_ids = {box.ids[2]}
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join([*box.ids[:4], BAD_LINE, *box.ids[4:]]) + "\n", encoding="utf-8")
    db_url = sqlite_engine.url.render_as_string(hide_password=False)
    with ServerThread(box) as server:
        result = _etl(
            tmp_path,
            _env(db_url, server.base_url),
            "--log-format",
            "json",
            "-v",
            "backfill",
            "ids.txt",
        )
    yield Backfill(sqlite_engine, box, result)
    sqlite_engine.dispose()


def test_every_stderr_line_is_a_json_object_with_the_stable_fields(
    json_backfill: Backfill,
) -> None:
    """ts (ISO 8601, UTC), level, logger, message on every line; the bad id-file line and the
    failed referral are both logged; the run's summary goes to stdout, not to the log."""
    result = json_backfill.result
    assert result.returncode == 1, result.stderr
    assert "8 ids: 7 created, 0 updated, 0 unchanged, 0 not found, 1 failed" in result.stdout
    entries = _json_lines(result.stderr)
    for entry in entries:
        assert {"ts", "level", "logger", "message"} <= set(entry), entry
        stamp = datetime.fromisoformat(entry["ts"])
        assert stamp.utcoffset() == timedelta(0), entry
        assert entry["level"] in LEVELS, entry
        assert isinstance(entry["logger"], str), entry
        assert isinstance(entry["message"], str), entry
    warned = [e["message"] for e in entries if e["level"] == "warning"]
    assert any("ids.txt:5" in m and BAD_LINE in m for m in warned), warned
    assert any(json_backfill.broken in m for m in warned), warned


def test_log_lines_carry_structured_fields(
    json_backfill: Backfill,
) -> None:
    """The failed referral's line has referral_id, run_id and outcome fields (not only text in
    the message), and the end of the run is logged with its run_id and outcome."""
    [run] = rows_of(json_backfill.engine, "sync_runs")
    entries = _json_objects(json_backfill.result.stderr)
    failed = [e for e in entries if e.get("referral_id") == json_backfill.broken]
    assert failed, entries
    assert all(
        (e["outcome"], e["run_id"], e["level"]) == ("failed", run["id"], "warning") for e in failed
    ), failed
    assert all(set(e) >= {"referral_id", "run_id", "outcome"} for e in failed)
    finished = [
        e for e in entries if e.get("run_id") == run["id"] and e.get("outcome") == "partial"
    ]
    assert len(finished) == 1, entries
    assert finished[0]["level"] == "info"


def test_no_token_or_password_reaches_any_output(sqlite_engine: Engine, tmp_path: Path) -> None:
    """At -vv (debug, tracebacks): the access token never appears in stdout or stderr, and a
    database password neither, also when the database cannot be reached (exit 5)."""
    box = Sandbox(count=4, seed=22)
    box.faults.accepted_tokens = {ACCESS_TOKEN}
    box.faults.invalid_json_ids = {box.ids[0]}
    (tmp_path / "ids.txt").write_text("\n".join(box.ids) + "\n", encoding="utf-8")
    db_url = sqlite_engine.url.render_as_string(hide_password=False)
    unreachable = f"postgresql+psycopg://etl:{DB_PASSWORD}@127.0.0.1:1/referrals"
    with ServerThread(box) as server:
        ran = _etl(
            tmp_path,
            _env(db_url, server.base_url),
            "--log-format",
            "json",
            "-vv",
            "backfill",
            "ids.txt",
        )
        refused = _etl(
            tmp_path,
            _env(unreachable, server.base_url),
            "--log-format",
            "json",
            "-vv",
            "backfill",
            "ids.txt",
        )
    assert ran.returncode == 1, ran.stderr
    assert box.stats.by_status == {200: 4}  # the token was sent, and accepted
    lines = _json_lines(ran.stderr)
    assert sum(line["logger"] == "etl.transport" for line in lines) == 4  # a debug line a request
    assert refused.returncode == 5, refused.stderr
    assert "127.0.0.1" in refused.stderr
    assert "etl:***@" in refused.stderr
    for result in (ran, refused):
        for secret in (ACCESS_TOKEN, DB_PASSWORD):
            assert secret not in result.stdout + result.stderr


def test_a_fatal_error_is_one_json_line_too(tmp_path: Path) -> None:
    """The one line a person can act on (here: database unreachable, exit 5) is itself a JSON
    log line in JSON mode, level error, with the password hidden."""
    (tmp_path / "ids.txt").write_text("some-id\n", encoding="utf-8")
    unreachable = f"postgresql+psycopg://etl:{DB_PASSWORD}@127.0.0.1:1/referrals"
    env = _env(unreachable, "http://127.0.0.1:1/v1.0")
    result = _etl(tmp_path, env, "--log-format", "json", "backfill", "ids.txt")
    assert result.returncode == 5, result.stderr
    [entry] = _json_lines(result.stderr)
    assert entry["level"] == "error"
    assert "postgresql+psycopg://etl:***@127.0.0.1:1/referrals" in entry["message"]
    assert "check database.url" in entry["message"]
    assert DB_PASSWORD not in result.stdout + result.stderr


def _every_line_json(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """Every line of stdout AND stderr parses as a JSON object; returns them (stdout first)."""
    entries = []
    for stream, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        for number, line in enumerate(text.splitlines(), 1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{stream} line {number} is not JSON: {line!r}")
            assert isinstance(entry, dict), line
            assert {"ts", "level", "logger", "message"} <= set(entry), entry
            entries.append(entry)
    return entries


def test_json_mode_writes_only_json_lines(tmp_path: Path) -> None:
    """A successful run, a failing run and a configuration error, at -v: nothing but JSON
    objects on stdout and stderr; `db upgrade`'s line and the run's summary are records with
    their values as fields (the summary's counts match the database); no traceback at -v."""
    box = Sandbox(count=6, seed=23)
    box.faults.accepted_tokens = {ACCESS_TOKEN}
    (tmp_path / "ids.txt").write_text("\n".join(box.ids) + "\n", encoding="utf-8")
    db_url = f"sqlite:///{tmp_path / 'json.db'}"
    with ServerThread(box) as server:
        env = _env(db_url, server.base_url)
        upgraded = _etl(tmp_path, env, "--log-format", "json", "-v", "db", "upgrade")
        good = _etl(tmp_path, env, "--log-format", "json", "-v", "backfill", "ids.txt")
        box.faults.invalid_json_ids = set(box.ids[:2])
        bad = _etl(tmp_path, env, "--log-format", "json", "-v", "backfill", "ids.txt")
    unreachable = f"postgresql+psycopg://etl:{DB_PASSWORD}@127.0.0.1:1/referrals"
    down = _etl(tmp_path, _env(unreachable, server.base_url), "--log-format", "json", "-v", "sync")
    config = _etl(
        tmp_path,
        {**env, "REFERRALS_ETL_API_CONCURRENCY": "many"},
        "--log-format",
        "json",
        "-v",
        "sync",
    )
    usage = _etl(tmp_path, env, "--log-format", "json", "backfill", "--shard", "9/2", "ids.txt")

    assert upgraded.returncode == 0, upgraded.stderr
    [line] = [e for e in _every_line_json(upgraded) if e.get("event") == "db_upgrade"]
    assert (line["revision_before"], line["revision"]) == ("empty", db.head_revision()), line

    assert good.returncode == 0, good.stderr
    [summary] = [e for e in _every_line_json(good) if e.get("event") == "summary"]
    assert (summary["ids_total"], summary["created"], summary["failed"]) == (6, 6, 0), summary
    assert summary["outcome"] == "succeeded", summary
    assert isinstance(summary["run_id"], int), summary

    assert bad.returncode == 1, bad.stderr
    [summary] = [e for e in _every_line_json(bad) if e.get("event") == "summary"]
    assert (summary["failed"], summary["outcome"]) == (2, "partial"), summary

    for result, code in ((down, 5), (config, 2), (usage, 2)):
        assert result.returncode == code, (result.stdout, result.stderr)
        entries = _every_line_json(result)
        assert entries[-1]["level"] == "error", entries
    for result in (upgraded, good, bad, down, config, usage):
        assert "Traceback" not in result.stdout + result.stderr


def test_tracebacks_only_at_vv(tmp_path: Path) -> None:
    """`--help` promises tracebacks at -vv only: at -v a failure (exit 2 here, a configuration
    error) is its one line; at -vv the details come with the traceback."""
    env = _env(f"sqlite:///{tmp_path / 'x.db'}", "http://127.0.0.1:1/v1.0")
    env["REFERRALS_ETL_SCHEDULE_CRON"] = "not a cron line"
    for fmt in ("text", "json"):
        quiet = _etl(tmp_path, env, "--log-format", fmt, "-v", "schedule")
        loud = _etl(tmp_path, env, "--log-format", fmt, "-vv", "schedule")
        assert quiet.returncode == loud.returncode == 2, (quiet.stderr, loud.stderr)
        assert "Traceback" not in quiet.stdout + quiet.stderr
        assert len(quiet.stderr.splitlines()) == 1, quiet.stderr
        assert "Traceback" in loud.stderr


def test_an_exception_a_library_logs_shows_its_traceback_only_at_vv() -> None:
    """Whoever logs with exc_info (our modules, MSAL's client, APScheduler, uvicorn), the
    formatter shows a traceback only at -vv; below, the exception's type and first line."""
    import io
    import logging

    from etl.logs import setup_logging

    try:
        raise ConnectionError("identity provider unreachable\nsecond line")
    except ConnectionError as exc:
        error = exc
    for fmt in ("text", "json"):
        for verbose, traceback in ((1, False), (2, True)):
            stream = io.StringIO()
            setup_logging(fmt, verbose, stream)
            logging.getLogger("etl.some_module").info("request failed", exc_info=error)
            out = stream.getvalue()
            assert ("Traceback" in out) is traceback, out
            assert "ConnectionError: identity provider unreachable" in out
            if fmt == "json":
                [entry] = [json.loads(line) for line in out.splitlines()]
                assert entry["message"] == "request failed"
    setup_logging()
