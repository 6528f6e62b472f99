"""The webhook receiver end to end: signed callbacks from the sandbox's test CA, the real
receiver (aiohttp on a TCP port), the real databases through the migrations, the sandbox's API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from conftest import count_rows, rows_of
from sqlalchemy.engine import Engine
from webhook_harness import (
    api_gets,
    event_body,
    receiver,
    signed,
    stored_etags,
    wait_until,
    webhook_settings,
)

from etl import due, leases
from etl.sandbox import Sandbox
from etl.sandbox.signing import TestAuthority, issue, make_ca
from etl.sandbox.webhooks import CertificateServer, WebhookSender, signed_headers
from etl.webhooks import ledger
from etl.webhooks.events import parse_event

SQL_DIALECTS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="module")
def authority() -> TestAuthority:
    return TestAuthority()


@pytest.fixture(scope="module")
def certs(authority: TestAuthority) -> Iterator[CertificateServer]:
    """The allowed certificate host, also serving the wrong certificates under other names."""
    with CertificateServer(authority) as server:
        server.certificates["impostor.cer"] = issue(authority.root, organization="Contoso").der()
        server.certificates["self-signed.cer"] = issue(None).der()
        server.certificates["expired.cer"] = issue(authority.root, valid_days=(-30, -1)).der()
        server.certificates["foreign.cer"] = issue(make_ca()).der()
        # Issued by an intermediate CA that is not in the bundle: found through the leaf's
        # Authority Information Access, or (without it) not at all.
        issuing = make_ca("Test issuing CA", issuer=authority.root)
        server.certificates["issuing.crt"] = issuing.der()
        chained = issue(issuing, ca_issuers_url=server.url("issuing.crt"))
        server.certificates["chained.cer"] = chained.der()
        server.certificates["orphan.cer"] = issue(issuing).der()
        server.keys = {"chained.cer": chained, "orphan.cer": issuing}  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def elsewhere(authority: TestAuthority) -> Iterator[CertificateServer]:
    """A certificate host NOT on the allowlist, serving the genuine certificate."""
    with CertificateServer(authority) as server:
        yield server


@pytest.fixture
def ca_file(authority: TestAuthority, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_bytes(authority.ca_pem())
    return path


@pytest.fixture(params=SQL_DIALECTS)
def sql_engine(
    request: pytest.FixtureRequest, database_urls: dict[str, str | Exception], tmp_path: Path
) -> Iterator[Engine]:
    from conftest import make_engine

    built = make_engine(request.param, database_urls, tmp_path)
    yield built
    built.dispose()


def test_changes_in_the_sandbox_reach_sql_through_signed_callbacks(
    sql_engine: Engine, authority: TestAuthority, certs: CertificateServer, ca_file: Path
) -> None:
    """Changes and additions in the sandbox reach SQL through signed callbacks, each counted once."""
    box = Sandbox(count=30, seed=3)
    settings = webhook_settings(sql_engine, ca_file, certs.host)
    with receiver(settings, box) as url:
        with WebhookSender(box, url + "/webhooks/partner-center", authority, certs.url()) as sender:
            changed = box.change(ids=box.ids[:5])
            added = box.add(2)
            wanted = {i: box.etag(i) for i in changed + added}
            wait_until(lambda: all(stored_etags(sql_engine).get(i) == e for i, e in wanted.items()))
        assert {d.status for d in sender.deliveries} == {200}
        metrics = httpx.get(url + "/metrics").text
    # Each one counted as new (a new event wakes the worker; a duplicate does not).
    assert 'referrals_etl_webhook_callbacks_total{outcome="accepted"} 7.0' in metrics
    events = rows_of(sql_engine, "webhook_events", order_by="id")
    assert {e["referral_id"] for e in events} == set(wanted)
    assert all(e["processed_at"] is not None for e in events)
    assert {e["event_name"] for e in events} == {"referral-updated", "referral-created"}
    sources = {r["referral_id"]: r["source"] for r in rows_of(sql_engine, "sync_state")}
    assert set(sources) == set(wanted)
    assert set(sources.values()) == {"webhook"}
    runs = rows_of(sql_engine, "sync_runs")
    assert runs
    assert {r["trigger"] for r in runs} == {"webhook"}


def _post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=body, headers=headers, timeout=30)


def test_refused_callbacks_change_nothing(
    sql_engine: Engine,
    authority: TestAuthority,
    certs: CertificateServer,
    elsewhere: CertificateServer,
    ca_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each bad callback gets its 4xx, one log line, and no event, fetch or run."""
    box = Sandbox(count=5, seed=4)
    rid = box.ids[0]
    body = event_body(rid)
    good = signed(authority, certs, body)
    impostor_key = issue(authority.root, organization="Contoso")
    cases: dict[str, tuple[bytes, dict[str, str], int]] = {
        "forged signature": (
            body,
            {**good, "authorization": "Signature " + authority.sign(b"x")},
            401,
        ),
        "body changed after signing": (event_body(box.ids[1]), good, 401),
        "impostor (right CA, wrong organization)": (
            body,
            signed_headers(body, impostor_key.sign(body), certs.url("impostor.cer")),
            403,
        ),
        "self-signed": (body, {**good, "x-ms-certificate-url": certs.url("self-signed.cer")}, 401),
        "expired": (body, {**good, "x-ms-certificate-url": certs.url("expired.cer")}, 401),
        "another CA": (body, {**good, "x-ms-certificate-url": certs.url("foreign.cer")}, 401),
        "issuing CA nowhere to be found": (
            body,
            signed_headers(body, authority.sign(body), certs.url("orphan.cer")),
            401,
        ),
        "host not on the allowlist": (body, {**good, "x-ms-certificate-url": elsewhere.url()}, 403),
        "plain http certificate URL": (
            body,
            {**good, "x-ms-certificate-url": certs.url().replace("https:", "http:")},
            403,
        ),
        "missing signature": (body, {k: v for k, v in good.items() if k != "authorization"}, 401),
        "missing certificate URL": (
            body,
            {k: v for k, v in good.items() if k != "x-ms-certificate-url"},
            401,
        ),
        "wrong algorithm": (body, {**good, "x-ms-signature-algorithm": "rsa-sha1"}, 401),
        "non-JSON body": (b"not json", signed(authority, certs, b"not json"), 400),
        "not a referral event": (
            event_body(rid, name="customer-created"),
            signed(authority, certs, event_body(rid, name="customer-created")),
            400,
        ),
        "id that is no id": (
            event_body("not.an.id"),
            signed(authority, certs, event_body("not.an.id")),
            400,
        ),
        "too large": (b"{" + b" " * 70_000 + b"}", signed(authority, certs, b"{}"), 413),
    }
    settings = webhook_settings(sql_engine, ca_file, certs.host)
    with receiver(settings, box) as url:
        target = url + "/webhooks/partner-center"
        for name, (payload, headers, status) in cases.items():
            answer = _post(target, payload, headers)
            assert answer.status_code == status, name
        metrics = httpx.get(url + "/metrics").text
        time.sleep(0.3)  # give a (wrongly) woken worker the chance to fetch
    assert elsewhere.downloads.total() == 0  # nothing downloaded from a host off the allowlist
    counts = count_rows(sql_engine)
    assert counts["webhook_events"] == 0
    assert counts["sync_state"] == 0
    assert counts["referrals"] == 0
    assert counts["sync_runs"] == 0
    assert box.stats.by_kind.get("get", 0) == 0
    assert 'referrals_etl_webhook_rejected_total{reason="bad_signature"} 2.0' in metrics
    assert 'referrals_etl_webhook_callbacks_total{outcome="rejected"} 16.0' in metrics
    refused = [r for r in caplog.records if r.getMessage().startswith("webhook refused")]
    assert len(refused) == len(cases)  # one line each
    assert all("not json" not in r.getMessage() for r in refused)


def test_five_deliveries_of_one_event_fetch_it_at_most_twice(
    sql_engine: Engine, authority: TestAuthority, certs: CertificateServer, ca_file: Path
) -> None:
    """One event delivered five times (four at once) is one event row and at most two GETs."""
    box = Sandbox(count=5, seed=5)
    rid = box.ids[2]
    body = event_body(rid)
    headers = signed(authority, certs, body)
    settings = webhook_settings(sql_engine, ca_file, certs.host)
    with receiver(settings, box) as url:
        target = url + "/webhooks/partner-center"

        async def deliver_five() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:
                first = await client.post(target, content=body, headers=headers)
                rest = await asyncio.gather(
                    *(client.post(target, content=body, headers=headers) for _ in range(3))
                )
                await asyncio.sleep(0.2)
                last = await client.post(target, content=body, headers=headers)
                return [r.status_code for r in (first, *rest, last)]

        assert asyncio.run(deliver_five()) == [200] * 5
        wait_until(lambda: stored_etags(sql_engine).get(rid) == box.etag(rid))
        wait_until(lambda: ledger.pending_count(sql_engine) == 0)
    assert 1 <= api_gets(box, rid) <= 2
    assert len(rows_of(sql_engine, "webhook_events")) == 1


def test_a_burst_of_300_callbacks_from_16_senders_is_stored_whole(
    sql_engine: Engine, authority: TestAuthority, certs: CertificateServer, ca_file: Path
) -> None:
    """300 callbacks from 16 concurrent senders are all acknowledged and all stored."""
    box = Sandbox(count=300, seed=6)
    bodies = [event_body(i) for i in box.ids]
    settings = webhook_settings(sql_engine, ca_file, certs.host)
    with receiver(settings, box) as url:
        target = url + "/webhooks/partner-center"

        async def burst() -> list[int]:
            queue: asyncio.Queue[bytes] = asyncio.Queue()
            for body in bodies:
                queue.put_nowait(body)
            statuses: list[int] = []

            async def sender() -> None:
                async with httpx.AsyncClient(timeout=60) as client:
                    while not queue.empty():
                        body = queue.get_nowait()
                        answer = await client.post(
                            target, content=body, headers=signed(authority, certs, body)
                        )
                        statuses.append(answer.status_code)

            await asyncio.gather(*(sender() for _ in range(16)))
            return statuses

        # The latencies are bench/webhooks.py's to measure; this test only counts.
        assert asyncio.run(burst()) == [200] * 300
        wait_until(lambda: len(stored_etags(sql_engine)) == 300, timeout=120)
    assert count_rows(sql_engine)["webhook_events"] == 300


def test_worker_holds_its_own_lease_beside_a_scheduled_sync(
    sqlite_engine: Engine, authority: TestAuthority, certs: CertificateServer, ca_file: Path
) -> None:
    """The webhook worker runs under its own lease while a scheduled sync holds "sync"."""
    box = Sandbox(count=5, seed=7)
    leases.acquire_lock(sqlite_engine, "sync", "a long scheduled sync", 3600)
    rid = box.ids[0]
    body = event_body(rid)
    settings = webhook_settings(sqlite_engine, ca_file, certs.host)
    with receiver(settings, box) as url:
        answer = _post(url + "/webhooks/partner-center", body, signed(authority, certs, body))
        assert answer.status_code == 200
        wait_until(lambda: rid in stored_etags(sqlite_engine))
    with sqlite_engine.connect() as conn:
        locks = conn.execute(sa.text("SELECT name, owner FROM sync_locks")).all()
    assert locks == [("sync", "a long scheduled sync")]  # untouched, and ours released


def test_certificate_is_downloaded_once_for_many_callbacks(
    sqlite_engine: Engine, authority: TestAuthority, ca_file: Path
) -> None:
    """Forty concurrent callbacks signed by one certificate download it once."""
    box = Sandbox(count=40, seed=8)
    with CertificateServer(authority) as own:
        settings = webhook_settings(sqlite_engine, ca_file, own.host)
        with receiver(settings, box) as url:
            target = url + "/webhooks/partner-center"

            async def many() -> list[int]:
                async with httpx.AsyncClient(timeout=30) as client:
                    answers = await asyncio.gather(
                        *(
                            client.post(
                                target,
                                content=event_body(i),
                                headers={
                                    **signed(authority, own, event_body(i)),
                                    # the x-ms-signature form of the header
                                    "x-ms-signature": authority.sign(event_body(i)),
                                    "authorization": "",
                                },
                            )
                            for i in box.ids
                        )
                    )
                    return [a.status_code for a in answers]

            assert asyncio.run(many()) == [200] * 40
            health = httpx.get(url + "/healthz")
            metrics = httpx.get(url + "/metrics").text
        assert own.downloads.total() == 1
    assert health.status_code == 200
    assert "referrals_etl_webhook_certificate_downloads_total 1.0" in metrics


def test_an_event_parses_to_a_lowercase_id_with_its_change_time() -> None:
    """An event gives its id in lower case and its change time, None when that is not a time."""
    event = parse_event(event_body("ABCDEF01-2345-6789-ABCD-EF0123456789"))
    assert event.referral_id == "abcdef01-2345-6789-abcd-ef0123456789"
    assert event.changed_at is not None
    assert event.changed_at.microsecond == 123456
    body = json.loads(event_body("x1"))
    body["ResourceChangeUtcDate"] = "yesterday"
    assert parse_event(json.dumps(body).encode()).changed_at is None


def test_an_event_is_recorded_once(engine: Engine) -> None:
    """A repeated event inserts nothing and says so; the id is due at once, tracked or not."""
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 12, 2, 1, 0, 0, 123456, tzinfo=UTC)
    first = parse_event(event_body("a1", when="2026-12-02T00:59:59.1234567Z"))
    again = parse_event(event_body("a1", when="2026-12-02T00:59:59.1234567Z"))
    later = parse_event(event_body("a1", when="2026-12-02T01:00:00Z"))
    due.track_ids(engine, [("b2", "file")], now + timedelta(days=1))
    other = parse_event(event_body("b2", name="referral-created"))
    assert ledger.record_event(engine, first, now) is True
    assert ledger.record_event(engine, again, now + timedelta(seconds=1)) is False
    assert ledger.record_event(engine, later, now + timedelta(seconds=2)) is True
    assert ledger.record_event(engine, other, now + timedelta(seconds=3)) is True
    state = {r["referral_id"]: r for r in rows_of(engine, "sync_state")}
    assert state["a1"]["source"] == "webhook"
    assert state["a1"]["next_attempt_at"] == now + timedelta(seconds=2)  # the later event
    assert state["b2"]["source"] == "file"  # tracked before: made due, source kept
    assert state["b2"]["next_attempt_at"] == now + timedelta(seconds=3)
    assert ledger.due_ids(engine, 10) == ["a1", "b2"]
    assert ledger.pending_count(engine) == 3
    done = ledger.mark_processed(engine, ["a1"], now + timedelta(seconds=1), now)
    assert done == 1  # the event received after the cut-off stays due
    assert ledger.due_ids(engine, 10) == ["a1", "b2"]
    events = rows_of(engine, "webhook_events", order_by="id")
    assert [e["resource_change_utc_date"] for e in events] == [
        "2026-12-02T00:59:59.1234567Z",
        "2026-12-02T01:00:00Z",
        "2026-12-02T01:02:03.1234567Z",
    ]


def _run_statuses(engine: Engine) -> list[tuple[str, str]]:
    return [(r["trigger"], r["status"]) for r in rows_of(engine, "sync_runs", order_by="id")]


def test_a_fetch_that_fails_is_tried_again_by_the_worker(
    sqlite_engine: Engine, authority: TestAuthority, certs: CertificateServer, ca_file: Path
) -> None:
    """An event whose fetch fails is fetched again by the worker, with no scheduled sync.

    The API fails the first run's every attempt (503s): the event stays due, the worker tries
    again after its backoff and the referral is stored.
    """
    box = Sandbox(count=3, seed=12)
    rid = box.ids[0]
    body = event_body(rid)
    settings = webhook_settings(sqlite_engine, ca_file, certs.host)
    with receiver(settings, box) as url:
        box.faults.fail_next = 3  # api.max_attempts in these tests
        answer = _post(url + "/webhooks/partner-center", body, signed(authority, certs, body))
        assert answer.status_code == 200
        wait_until(lambda: stored_etags(sqlite_engine).get(rid) == box.etag(rid))
        # The referral is stored before its run is recorded as ended: leaving the receiver
        # before that would interrupt the run (and record it so).
        wait_until(lambda: _run_statuses(sqlite_engine)[-1:] != [("webhook", "running")])
    assert _run_statuses(sqlite_engine) == [("webhook", "partial"), ("webhook", "succeeded")]
    [event] = rows_of(sqlite_engine, "webhook_events")
    assert event["processed_at"] is not None


def test_without_its_database_the_receiver_asks_for_redelivery(
    authority: TestAuthority, certs: CertificateServer, ca_file: Path
) -> None:
    """Without a database, /healthz and a valid callback are 503: nothing uncommitted is acked.

    Partner Center delivers a callback answered 503 again.
    """
    from aiohttp.test_utils import TestClient, TestServer

    from etl import db
    from etl.config import WebhookSettings
    from etl.webhooks.app import Receiver, build_app
    from etl.webhooks.metrics import ServeMetrics
    from etl.webhooks.verify import CallbackVerifier

    engine = db.create_engine_for("postgresql+psycopg://nobody@127.0.0.1:1/none")
    body = event_body("c3")
    hooks = WebhookSettings(ca_bundle=str(ca_file), certificate_hosts=certs.host)

    async def ask() -> tuple[int, int, str]:
        metrics = ServeMetrics()
        verifier = CallbackVerifier(hooks)
        app = build_app(Receiver(engine, verifier, metrics, max_body_bytes=65536), hooks.path)
        try:
            async with TestClient(TestServer(app)) as client:
                health = await client.get("/healthz")
                hook = await client.post(
                    hooks.path, data=body, headers=signed(authority, certs, body)
                )
                return health.status, hook.status, metrics.render().decode()
        finally:
            await verifier.aclose()

    health, hook, metrics = asyncio.run(ask())
    engine.dispose()
    assert (health, hook) == (503, 503)
    assert 'referrals_etl_webhook_callbacks_total{outcome="error"} 1.0' in metrics


def test_the_sandbox_command_sends_signed_callbacks(sqlite_engine: Engine, tmp_path: Path) -> None:
    """`referrals-etl sandbox --webhook-url URL` sends its changes as signed callbacks.

    They reach a receiver that trusts the CA file it writes, and only that (the certificate
    host it prints).
    """
    import re
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        receiver_port = probe.getsockname()[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        api_port = probe.getsockname()[1]
    ca_file = tmp_path / "sandbox-ca.pem"
    hook = f"http://127.0.0.1:{receiver_port}/webhooks/partner-center"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "etl",
            "sandbox",
            "--port",
            str(api_port),
            "--count",
            "20",
            "--webhook-url",
            hook,
            "--webhook-ca-file",
            str(ca_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        hosts = None
        for line in proc.stdout:
            found = re.search(r"REFERRALS_ETL_WEBHOOK_CERTIFICATE_HOSTS=(\S+)", line)
            if found:
                hosts = found.group(1)
                break
        assert hosts is not None
        assert ca_file.exists()
        api = f"http://127.0.0.1:{api_port}"
        wait_until(lambda: _answers(api + "/_sandbox/ids"), timeout=30)
        settings = webhook_settings(sqlite_engine, ca_file, hosts)
        settings = settings.replace(api={"base_url": api + "/v1.0"})
        with receiver(settings, None, port=receiver_port):
            changed = httpx.post(api + "/_sandbox/change", json={"fraction": 0.2}).json()
            assert len(changed) == 4
            wait_until(lambda: set(changed) <= set(stored_etags(sqlite_engine)))
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # reads the rest of its output and closes the pipe
    assert {e["referral_id"] for e in rows_of(sqlite_engine, "webhook_events")} == set(changed)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_certificate_from_an_intermediate_ca_chains_through_its_issuer_url(
    sqlite_engine: Engine, authority: TestAuthority, certs: CertificateServer, ca_file: Path
) -> None:
    """A leaf-only certificate chains through the intermediate fetched from its AIA URL.

    As Microsoft's: the .cer holds the leaf only, issued by an intermediate CA that the trust
    store lacks; the intermediate is fetched and checked.
    """
    box = Sandbox(count=2, seed=13)
    rid = box.ids[0]
    body = event_body(rid)
    chained = certs.keys["chained.cer"]  # type: ignore[attr-defined]
    settings = webhook_settings(sqlite_engine, ca_file, certs.host)
    with receiver(settings, box) as url:
        answer = _post(
            url + "/webhooks/partner-center",
            body,
            signed_headers(body, chained.sign(body), certs.url("chained.cer")),
        )
        assert answer.status_code == 200
        wait_until(lambda: rid in stored_etags(sqlite_engine))
