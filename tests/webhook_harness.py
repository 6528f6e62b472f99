"""Shared pieces of the webhook tests: a test CA, certificate servers, a receiver in a thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import TOKEN, settings_for
from sqlalchemy.engine import Engine

from etl.auth import BearerAuth, StaticTokenProvider
from etl.config import Settings
from etl.models import TABLES
from etl.sandbox import Sandbox
from etl.sandbox.signing import TestAuthority
from etl.sandbox.webhooks import CertificateServer, signed_headers
from etl.stopping import StopRequest
from etl.webhooks.serve import run_serve


def webhook_settings(engine: Engine, ca_file: Path, hosts: str, **webhook: Any) -> Settings:
    values: dict[str, Any] = {"ca_bundle": str(ca_file), "certificate_hosts": hosts}
    values.update(webhook)
    return settings_for(engine, webhook=values)


@contextmanager
def receiver(
    settings: Settings,
    box: Sandbox | None,
    *,
    port: int = 0,
) -> Iterator[str]:
    """`serve` (no schedule) in a thread; yields its URL. It fetches from ``box`` in process,
    or (``box=None``) over HTTP from ``api.base_url``."""
    if box is not None:
        box.faults.accepted_tokens = {TOKEN}
    stop = StopRequest()
    ready = threading.Event()
    bound: list[int] = []
    result: list[int] = []

    def on_ready(at: int) -> None:
        bound.append(at)
        ready.set()

    def run() -> None:
        result.append(
            run_serve(
                settings,
                "127.0.0.1",
                port,
                schedule=False,
                transport=box.transport() if box is not None else None,
                auth=BearerAuth(StaticTokenProvider(TOKEN)),
                stop=stop,
                on_ready=on_ready,
            )
        )
        ready.set()

    thread = threading.Thread(target=run, name="test-serve", daemon=True)
    thread.start()
    assert ready.wait(30), "serve did not start"
    assert bound, f"serve ended before it was ready: {result}"
    try:
        yield f"http://127.0.0.1:{bound[0]}"
    finally:
        stop.request("test over")
        thread.join(60)
        assert not thread.is_alive(), "serve did not stop"
    assert result == [0]


def event_body(referral_id: str, name: str = "referral-updated", when: str | None = None) -> bytes:
    return json.dumps(
        {
            "EventName": name,
            "ResourceUri": f"https://api.partnercenter.microsoft.com/engagements/v1/referrals/{referral_id}",
            "ResourceName": "referral",
            "AuditUri": "https://api.partnercenter.microsoft.com/auditrecords/x",
            "ResourceChangeUtcDate": when or "2026-12-02T01:02:03.1234567Z",
        }
    ).encode()


def signed(authority: TestAuthority, server: CertificateServer, body: bytes) -> dict[str, str]:
    return signed_headers(body, authority.sign(body), server.url())


def wait_until(check: Callable[[], bool], timeout: float = 60.0, step: float = 0.05) -> None:
    """Poll ``check`` until it holds; fails after ``timeout`` (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            pytest.fail("condition not reached before the deadline")
        time.sleep(step)


def stored_etags(engine: Engine) -> dict[str, str | None]:
    state = TABLES["sync_state"]
    referrals = TABLES["referrals"]
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(state.c.referral_id, state.c.etag).join(
                referrals, referrals.c.id == state.c.referral_id
            )
        ).all()
    return {r[0]: r[1] for r in rows}


def api_gets(box: Sandbox, referral_id: str) -> int:
    return sum(1 for m, path, *_ in list(box.requests) if m == "GET" and path.endswith(referral_id))
