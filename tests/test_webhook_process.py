"""`referrals-etl serve` as a process: an event acknowledged while its fetch is in flight, then
SIGKILL, then a restart: the referral is stored. The sandbox's API and certificate host run over
TCP (HTTPS for the certificate, from the sandbox's own test CA)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import TOKEN, make_engine, rows_of
from sqlalchemy.engine import Engine
from webhook_harness import api_gets, event_body, signed, stored_etags, wait_until

from etl.sandbox import Sandbox, ServerThread
from etl.sandbox.signing import TestAuthority
from etl.sandbox.webhooks import CertificateServer

_LISTENING = re.compile(r"serving webhooks at (http://\S+?)/webhooks/partner-center")


@contextmanager
def serve_process(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "-v", "serve", "--port", "0", "--no-schedule"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()
    url = None
    seen: list[str] = []
    try:
        while url is None:
            try:
                line = lines.get(timeout=30)
            except queue.Empty:
                pytest.fail("serve did not start: " + "".join(seen))
            seen.append(line)
            match = _LISTENING.search(line)
            if match:
                url = match.group(1)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        pumping.join(30)  # the pipe's end: the process (and any child of it) is gone
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "dialect", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_an_event_acknowledged_before_sigkill_is_stored_after_restart(
    dialect: str, database_urls: dict[str, str | Exception], tmp_path: Path
) -> None:
    """A callback answered 200 survives SIGKILL of the receiver: stored after the restart."""
    engine: Engine = make_engine(dialect, database_urls, tmp_path)
    authority = TestAuthority()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(authority.ca_pem())
    box = Sandbox(count=5, seed=9)
    box.faults.accepted_tokens = {TOKEN}
    box.faults.latency_seconds = 5.0  # the fetch is still in flight when the process dies
    rid = box.ids[1]
    with ServerThread(box) as api, CertificateServer(authority) as certs:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_ETL_")},
            "REFERRALS_ETL_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "REFERRALS_ETL_API_BASE_URL": api.base_url,
            "REFERRALS_ETL_AUTH_MODE": "access_token",
            "REFERRALS_ETL_AUTH_ACCESS_TOKEN": TOKEN,
            "REFERRALS_ETL_SYNC_DISCOVER": "false",
            "REFERRALS_ETL_WEBHOOK_CA_BUNDLE": str(ca_file),
            "REFERRALS_ETL_WEBHOOK_CERTIFICATE_HOSTS": certs.host,
            "REFERRALS_ETL_WEBHOOK_LOCK_LEASE": "3s",
            "REFERRALS_ETL_WEBHOOK_POLL_INTERVAL": "1s",
        }
        body = event_body(rid)
        with serve_process(env) as (proc, url):
            answer = httpx.post(
                url + "/webhooks/partner-center",
                content=body,
                headers=signed(authority, certs, body),
                timeout=30,
            )
            assert answer.status_code == 200
            wait_until(lambda: api_gets(box, rid) >= 1, timeout=30)  # the fetch has begun
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        assert rid not in stored_etags(engine)
        [event] = rows_of(engine, "webhook_events")
        assert event["referral_id"] == rid
        assert event["processed_at"] is None

        box.faults.latency_seconds = 0.0
        with serve_process(env) as (proc, url):
            wait_until(lambda: stored_etags(engine).get(rid) == box.etag(rid), timeout=60)
            assert httpx.get(url + "/healthz", timeout=10).status_code == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
    [event] = rows_of(engine, "webhook_events")
    assert event["processed_at"] is not None
    engine.dispose()
