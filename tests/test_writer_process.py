"""The writer in its own process (``sync.writer_process``) keeps every promise of the thread's.

The same rows as the thread writer; a value the database refuses fails only its referral (the
driver's error comes back from the child and is judged by the run's one policy); a missing
table and a writer process that dies both end the run with exit 5, recorded `failed`, lease
released, never a hang.
"""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import httpx
import pytest
from conftest import backfill, count_rows, rows_of, settings_for
from sqlalchemy.engine import Engine
from test_run_core import MISSING, _table_away

from etl.auth import BearerAuth, StaticTokenProvider
from etl.errors import DatabaseError
from etl.ids import TrackedId
from etl.sandbox import Sandbox
from etl.sync import RunOptions, run_backfill


def _data(engine: Engine) -> dict[str, int]:
    return {k: v for k, v in count_rows(engine).items() if k != "sync_runs"}


def _in_process(engine: Engine, **sync: Any) -> Any:
    return settings_for(engine, sync={"writer_process": True, **sync})


def test_the_process_writes_the_same_rows_as_the_thread(engine: Engine) -> None:
    box = Sandbox(count=120, seed=31)
    report = backfill(engine, box, settings=_in_process(engine, batch_size=25))
    assert (report.counts.created, report.counts.failed) == (120, 0)
    by_process = _data(engine)
    assert multiprocessing.active_children() == []  # the writer process was ended
    with engine.begin() as conn:  # the same load again, with the thread: the same rows
        for table in reversed(list(count_rows(engine))):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    assert backfill(engine, box).counts.created == 120
    assert _data(engine) == by_process
    again = backfill(engine, box, settings=_in_process(engine))
    assert again.counts.unchanged == 120
    assert _data(engine) == by_process


def test_a_value_refused_in_the_process_fails_only_that_referral(engine: Engine) -> None:
    """PostgreSQL refuses NUL characters in text: that referral fails alone, its batch is kept."""
    box = Sandbox(count=20, seed=15)
    poisoned = box.ids[6]

    def handler(request: httpx.Request) -> httpx.Response:
        referral_id = request.url.path.rsplit("/", 1)[-1]
        doc = box.document(referral_id)
        if referral_id == poisoned:
            doc["name"] = "nul\u0000byte"
        return httpx.Response(200, json=doc)

    report = run_backfill(
        _in_process(engine),
        engine,
        [TrackedId(i, "file") for i in box.ids],
        RunOptions(
            transport=httpx.MockTransport(handler), auth=BearerAuth(StaticTokenProvider("t"))
        ),
    )
    stored = {r["id"] for r in rows_of(engine, "referrals")}
    if engine.dialect.name == "postgresql":
        assert (report.counts.failed, report.counts.created) == (1, 19)
        assert stored == set(box.ids) - {poisoned}
        [state] = [r for r in rows_of(engine, "sync_state") if r["referral_id"] == poisoned]
        assert state["last_error"].startswith("could not be stored:")
    else:
        assert (report.counts.failed, report.counts.created) == (0, 20)
        assert stored == set(box.ids)


def test_a_missing_table_in_the_process_fails_the_run_with_exit_5(engine: Engine) -> None:
    box = Sandbox(count=30, seed=21)
    with _table_away(engine), pytest.raises(DatabaseError) as caught:
        backfill(engine, box, settings=_in_process(engine))
    assert caught.value.exit_code == 5
    assert MISSING in str(caught.value).lower() or "table" in str(caught.value).lower()
    [run] = rows_of(engine, "sync_runs")
    assert run["status"] == "failed"
    assert run["finished_at"] is not None
    assert rows_of(engine, "sync_locks") == []
    assert [r for r in rows_of(engine, "sync_state") if r["consecutive_failures"]] == []


def test_a_writer_process_that_dies_ends_the_run_with_exit_5(sqlite_engine: Engine) -> None:
    """The child is killed mid-run (as the kernel's OOM killer would): exit 5, `failed`, no
    hang, no lease left, every batch committed before it stays."""
    box = Sandbox(count=2000, seed=22)
    served = 0
    killed = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal served
        served += 1
        if served == 600 and not killed.is_set():
            for child in multiprocessing.active_children():
                child.kill()
            killed.set()
        referral_id = request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(200, json=box.document(referral_id))

    with pytest.raises(DatabaseError) as caught:
        run_backfill(
            _in_process(sqlite_engine, batch_size=50),
            sqlite_engine,
            (TrackedId(i, "file") for i in box.ids),
            RunOptions(
                transport=httpx.MockTransport(handler), auth=BearerAuth(StaticTokenProvider("t"))
            ),
        )
    assert killed.is_set()
    assert caught.value.exit_code == 5
    assert "writer process died" in str(caught.value)
    [run] = rows_of(sqlite_engine, "sync_runs")
    assert run["status"] == "failed"
    assert run["finished_at"] is not None
    assert rows_of(sqlite_engine, "sync_locks") == []
    assert served < 2000  # the run stopped fetching
    assert multiprocessing.active_children() == []
