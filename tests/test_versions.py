"""A version is the content, not the transport: eTag or none, list page or GET, same version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from conftest import rows_of, settings_for
from sqlalchemy.engine import Engine

from etl import db
from etl.auth import BearerAuth, StaticTokenProvider
from etl.flatten import content_hash
from etl.ids import TrackedId
from etl.models import TABLES
from etl.report import SyncReport
from etl.sync import RunOptions, run_backfill

SEED = json.loads((Path(__file__).parent / "data" / "seed_referral.json").read_text("utf-8"))
LISTED = {k: v for k, v in SEED.items() if k != "eTag" and not k.startswith("@odata.")}


def _get(engine: Engine, document: dict[str, Any], etag_header: str | None = None) -> SyncReport:
    """A backfill of the seed id whose GET answers ``document``."""

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"ETag": etag_header} if etag_header else {}
        return httpx.Response(200, json=document, headers=headers)

    return run_backfill(
        settings_for(engine),
        engine,
        [TrackedId(SEED["id"], "file")],
        RunOptions(
            transport=httpx.MockTransport(handler), auth=BearerAuth(StaticTokenProvider("t"))
        ),
    )


def _versions(engine: Engine) -> list[dict[str, Any]]:
    return rows_of(engine, "referral_history", order_by="id")


def test_transport_fields_never_make_a_new_version(
    engine: Engine,
) -> None:
    """The same content with or without eTag and @odata fields, under any eTag, is one version."""
    assert "eTag" in SEED
    assert "@odata.context" in SEED
    first = _get(engine, LISTED)  # as a list page gives it: no eTag, no @odata.context
    assert first.counts.created == 1
    [state] = rows_of(engine, "sync_state")
    assert state["etag"] is None
    assert state["content_hash"] == content_hash(SEED)

    again = _get(engine, SEED)  # the GET by id: eTag and @odata.context
    assert (again.counts.unchanged, again.counts.updated) == (1, 0)
    [version] = _versions(engine)
    # The eTag now known is kept (for If-None-Match) on the ledger, the row and the version.
    assert version["etag"] == SEED["eTag"]
    assert rows_of(engine, "sync_state")[0]["etag"] == SEED["eTag"]
    assert rows_of(engine, "referrals")[0]["etag"] == SEED["eTag"]

    back = _get(engine, LISTED)  # and a list page again
    assert (back.counts.unchanged, back.counts.updated) == (1, 0)
    assert len(_versions(engine)) == 1
    assert rows_of(engine, "sync_state")[0]["etag"] == SEED["eTag"]

    # The same content under a new eTag (from the header) is still the same version.
    new_tag = '"5e5e5e5e-0000-0000-0000-000000000001"'
    moved = _get(engine, LISTED, etag_header=new_tag)
    assert (moved.counts.unchanged, moved.counts.updated) == (1, 0)
    assert len(_versions(engine)) == 1
    assert rows_of(engine, "sync_state")[0]["etag"] == new_tag

    # Changed content, with no eTag at all, is a new version.
    changed = _get(engine, {**LISTED, "status": "Active", "substatus": "Accepted"})
    assert changed.counts.updated == 1
    assert [v["status"] for v in _versions(engine)] == ["New", "Active"]
    assert rows_of(engine, "sync_state")[0]["etag"] is None


def test_migration_0004_hashes_every_stored_referral(engine: Engine) -> None:
    """Upgrading through 0004 fills the content hash of referrals stored without one."""
    assert _get(engine, SEED).counts.created == 1
    state = TABLES["sync_state"]
    with engine.begin() as conn:  # as the code before 0004 left it: no hash when an eTag came
        conn.execute(sa.update(state).values(content_hash=None))
    db.downgrade(engine, "0002")
    db.upgrade(engine)
    assert rows_of(engine, "sync_state")[0]["content_hash"] == content_hash(SEED)
    assert _get(engine, LISTED).counts.unchanged == 1
    assert len(_versions(engine)) == 1
