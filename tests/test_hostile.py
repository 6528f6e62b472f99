"""Hostile documents: each one is stored (odd but valid values) or fails alone, on every database.

The bodies are served by the sandbox in place of real ones (the network edge); everything from
the client to the rows goes through the real code and the real databases.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from conftest import backfill, rows_of, settings_for, sync
from hostile_docs import hostile_bodies, install
from sqlalchemy.engine import Engine

from etl.ids import TrackedId
from etl.models import TABLES
from etl.sandbox import Sandbox, ServerThread


def _payload(row: dict[str, Any]) -> Any:
    return row["payload"]


def test_odd_documents_are_stored_and_bad_ones_fail_alone(engine: Engine) -> None:
    box = Sandbox(count=120, seed=41)
    bodies = hostile_bodies(box, box.ids[:12])
    install(box, bodies)
    for attempt in (1, 2):  # a second run behaves the same
        report = backfill(engine, box)
        failed = {rid for rid, (_, want) in bodies.items() if want.startswith("failed")}
        assert {rid for rid, _ in report.counts.failures} == failed, attempt
        stored = {r["id"]: r for r in rows_of(engine, "referrals")}
        assert set(stored) == set(box.ids) - failed
    state = {r["referral_id"]: r for r in rows_of(engine, "sync_state")}
    for rid, (_, want) in bodies.items():
        row = stored.get(rid)
        if want.startswith("failed"):
            assert state[rid]["consecutive_failures"] == 2
            assert "nested" in state[rid]["last_error"] and "\n" not in state[rid]["last_error"]
            assert state[rid]["next_attempt_at"] is not None
            continue
        assert row is not None, want
        payload = _payload(row)
        assert payload["id"] == rid
        if want == "stored:years":
            assert row["created_at"] is None and row["updated_at"] is None
            assert payload["createdDateTime"] == "0001-01-01T00:00:00+01:00"
            assert payload["updatedDateTime"] == "9999-12-31T23:30:00-01:00"
        elif want == "stored:fffd":
            assert row["name"] == "half an emoji \ufffd here"
            assert payload["name"] == "half an emoji \ufffd here"
        elif want == "stored:nan":
            assert row["deal_value"] is None
            assert payload["details"]["dealValue"] == "NaN"
            assert payload["score"] == "-Infinity"
        elif want == "stored:etag":
            assert row["etag"] == 'W/"\u00e9t\u00e9"\r\nX-Injected: 1'
        elif want == "stored:fffd-key":
            assert row["notes"] == '{"k\ufffd":"\ufffd","ok":"\U0001f600"}'
            assert payload["details"]["notes"] == {"k\ufffd": "\ufffd", "ok": "\U0001f600"}
    history = rows_of(engine, "referral_history")
    assert len(history) == len(stored)


def test_a_listing_with_hostile_entries_still_stores_the_good_ones(engine: Engine) -> None:
    box = Sandbox(count=150, seed=42)
    bodies = hostile_bodies(box, box.ids[:12])
    del bodies[box.ids[7]]  # a 100,000-deep page cannot be read at all (see the next test)
    del bodies[box.ids[6]]
    del bodies[box.ids[3]]  # a UTF-16 body inside a UTF-8 page is not JSON either
    del bodies[box.ids[4]]  # nor a byte-order mark inside one
    install(box, bodies)
    settings = settings_for(engine, sync={"discover": True})
    report = sync(engine, box, settings=settings)
    failed = {rid for rid, (_, want) in bodies.items() if want.startswith("failed")}
    assert {rid for rid, _ in report.counts.failures} == failed
    stored = {r["id"] for r in rows_of(engine, "referrals")}
    assert stored == set(box.ids) - failed
    with engine.connect() as conn:
        cursors = TABLES["sync_cursors"]
        cursor = conn.execute(sa.select(cursors).where(cursors.c.name == "discovery")).one()
    assert cursor.position.year < 9000  # a year-9999 entry is no high-water mark


def test_a_listing_page_that_cannot_be_read_stops_discovery_not_the_run(engine: Engine) -> None:
    box = Sandbox(count=30, seed=43)
    backfill(engine, box, ids=box.ids[:10])
    bad = box.ids[15]
    rec = box.record(bad)
    assert rec is not None
    rec.body = b"[" * 100_000 + b"]" * 100_000
    with engine.begin() as conn:  # make the stored ones due again
        conn.execute(sa.update(TABLES["sync_state"]).values(next_attempt_at=None))
    report = sync(engine, box, settings=settings_for(engine, sync={"discover": True}))
    assert report.counts.failed == 0 and report.counts.unchanged == 10


SECRET_TOKEN = "opaque-S3cr3tT0kenValue.abc_123"


class _Echoing(httpx.AsyncBaseTransport):
    """In front of the sandbox: for some ids the server echoes the request's credentials."""

    def __init__(self, inner: httpx.AsyncBaseTransport, echo: list[str]) -> None:
        self.inner = inner
        self.echo = echo

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        rid = request.url.path.rsplit("/", 1)[-1]
        auth = request.headers.get("authorization", "")
        if rid == self.echo[0]:
            message = f"bad request; headers were Authorization: {auth}, Accept: */*"
            return httpx.Response(400, json={"error": {"code": "BadRequest", "message": message}})
        if rid == self.echo[1]:
            text = f"upstream said: access_token={auth.split()[-1]}&x=1\nline two"
            return httpx.Response(500, json={"message": text})
        if rid == self.echo[2]:
            text = f"the token {auth.split()[-1]} has expired"
            return httpx.Response(400, json={"code": "Expired", "description": text})
        return await self.inner.handle_async_request(request)


def test_a_token_the_server_echoes_is_never_stored_logged_printed_or_in_metrics(
    engine: Engine, tmp_path: Path
) -> None:
    from etl.auth import BearerAuth, StaticTokenProvider
    from etl.logs import setup_logging
    from etl.metrics import write_metrics
    from etl.status import render_status
    from etl.sync import RunOptions, run_backfill

    box = Sandbox(count=30, seed=44)
    box.faults.accepted_tokens = {SECRET_TOKEN}
    echo = box.ids[:3]
    log_stream = io.StringIO()
    setup_logging("json", 1, stream=log_stream)
    options = RunOptions(
        trigger="backfill",
        transport=_Echoing(box.transport(), echo),
        auth=BearerAuth(StaticTokenProvider(SECRET_TOKEN)),
    )
    settings = settings_for(engine, api={"max_attempts": 2})
    report = run_backfill(settings, engine, (TrackedId(i, "file") for i in box.ids), options)
    setup_logging()
    assert {rid for rid, _ in report.counts.failures} == set(echo)
    everything: list[str] = []
    for name in TABLES:
        everything += [str(row) for row in rows_of(engine, name)]
    database = "\n".join(everything)
    status = render_status(engine)
    metrics = tmp_path / "metrics.prom"
    write_metrics(report, str(metrics))
    logs = log_stream.getvalue()
    for where, text in [
        ("database", database),
        ("status", status),
        ("logs", logs),
        ("metrics", metrics.read_text()),
    ]:
        assert SECRET_TOKEN not in text, where
        assert "S3cr3t" not in text, where
    state = {r["referral_id"]: r["last_error"] for r in rows_of(engine, "sync_state")}
    assert "Authorization: ***" in state[echo[0]]
    assert "access_token=***" in state[echo[1]] and "\n" not in state[echo[1]]
    assert "the token *** has expired" in state[echo[2]]
    assert "Authorization: ***" in status and "***" in logs


def test_mask_hides_every_shape_of_secret() -> None:
    from etl.redact import mask, remember

    remember("plain-opaque-token-value")
    cases = {
        "the plain-opaque-token-value expired": "the *** expired",
        '{"Authorization": "Bearer abc.def"}': '{"Authorization": "***"}',
        "authorization=Basic dXNlcjpwYXNz&x=1": "authorization=***&x=1",
        "got Bearer abcdefghijkl": "got Bearer ***",
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig here": "jwt *** here",
        '{"refresh_token": "0.AX8A-long"}': '{"refresh_token": "***"}',
        "client_secret=abc password: hunter2": "client_secret=*** password: ***",
        "nothing secret here": "nothing secret here",
    }
    for text, want in cases.items():
        assert mask(text) == want


def test_a_document_the_flattening_cannot_read_fails_alone(engine: Engine) -> None:
    from etl import store
    from etl.results import FetchResult, Outcome

    box = Sandbox(count=3, seed=45)
    good = [
        FetchResult(rid, Outcome.FETCHED, "file", document=box.document(rid)) for rid in box.ids
    ]
    bad = [
        FetchResult("no-id", Outcome.FETCHED, "file", document={"name": "no id at all"}),
        FetchResult("odd-id", Outcome.FETCHED, "file", document={"id": ["not", "a", "string"]}),
    ]
    counts = store.write_batch(engine, [good[0], *bad, *good[1:]], settings_for(engine).sync)
    assert (counts.created, counts.failed) == (3, 2)
    assert {r["id"] for r in rows_of(engine, "referrals")} == set(box.ids)
    state = {r["referral_id"]: r for r in rows_of(engine, "sync_state")}
    assert state["no-id"]["last_error"].startswith("the document could not be read into rows")
    assert state["no-id"]["next_attempt_at"] is not None


def _cli(args: list[str], url: str, base_url: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_ETL_")}
    env.update(
        REFERRALS_ETL_DATABASE_URL=url,
        REFERRALS_ETL_API_BASE_URL=base_url,
        REFERRALS_ETL_API_MAX_ATTEMPTS="2",
        REFERRALS_ETL_AUTH_MODE="access_token",
        REFERRALS_ETL_AUTH_ACCESS_TOKEN=token,
        REFERRALS_ETL_SYNC_DISCOVER="false",
    )
    return subprocess.run(
        [sys.executable, "-m", "etl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_acceptance_1500_good_ids_among_the_hostile_documents(
    engine: Engine, tmp_path: Path
) -> None:
    """The issue's acceptance run, through the CLI and a real HTTP server, on each database."""
    box = Sandbox(count=1_513, seed=46)
    bodies = hostile_bodies(box, box.ids[:12])
    install(box, bodies)
    echo = box.ids[12]
    box.faults.echo_auth_ids = {echo}
    box.faults.accepted_tokens = {SECRET_TOKEN}
    failed = {rid for rid, (_, want) in bodies.items() if want.startswith("failed")} | {echo}
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(box.ids) + "\n")
    url = engine.url.render_as_string(hide_password=False)
    with ServerThread(box) as server:
        for attempt in (1, 2):  # a second run behaves the same
            done = _cli(["backfill", str(ids)], url, server.base_url, SECRET_TOKEN)
            assert done.returncode == 1, done.stderr
            output = done.stdout + done.stderr
            assert "Traceback" not in output and SECRET_TOKEN not in output
            assert f"{len(failed)} failed" in done.stdout, (attempt, done.stdout)
            shown = _cli(["status"], url, server.base_url, SECRET_TOKEN)
            assert shown.returncode == 0 and SECRET_TOKEN not in shown.stdout
            assert "Authorization: ***" in shown.stdout
    stored = {r["id"] for r in rows_of(engine, "referrals")}
    assert stored == set(box.ids) - failed
    state = {r["referral_id"]: r for r in rows_of(engine, "sync_state")}
    for rid in failed:
        assert state[rid]["consecutive_failures"] == 2 and state[rid]["last_error"]
    for name in TABLES:
        assert all(SECRET_TOKEN not in str(row) for row in rows_of(engine, name)), name
