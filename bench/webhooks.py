"""``python -m bench.webhooks [--databases sqlite,postgres]``: real-time latency of `serve`.

With the sandbox's API over TCP, its certificate host over HTTPS (its own test CA) and
`referrals-etl serve` running as a process:

1. 20 referrals changed one at a time in the sandbox, each sending its signed
   ``referral-updated`` callback: seconds from the change to the new version in SQL (p50, p95,
   max; the target is p95 <= 3 s);
2. a burst of 300 callbacks from 16 concurrent senders: seconds to each acknowledgement (p50,
   p99; target p99 <= 1 s) and from the burst's start until every referral is in SQL (target
   <= 60 s).

Measured, never asserted: the numbers go to stdout as a Markdown table (bench/README.md).
PostgreSQL: ``BENCH_WEBHOOK_POSTGRES_URL`` (default database ``etl_bench_webhooks``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench.dbs import Database
from etl import db
from etl.models import TABLES
from etl.sandbox import Sandbox, ServerThread
from etl.sandbox.signing import TestAuthority
from etl.sandbox.webhooks import CertificateServer, WebhookSender, signed_headers

TOKEN = "bench-token"
PG_URL = os.environ.get(
    "BENCH_WEBHOOK_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/etl_bench_webhooks"
)
_LISTENING = re.compile(r"serving webhooks at (http://\S+?)/webhooks/partner-center")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _etag(engine: sa.Engine, referral_id: str) -> str | None:
    state = TABLES["sync_state"]
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(state.c.etag).where(state.c.referral_id == referral_id)
        ).scalar_one_or_none()
    return None if value is None else str(value)


def _stored(engine: sa.Engine, ids: list[str], box: Sandbox) -> int:
    state = TABLES["sync_state"]
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(state.c.referral_id, state.c.etag).where(state.c.referral_id.in_(ids))
        ).all()
    return sum(1 for r in rows if r.etag == box.etag(r.referral_id))


def _start_serve(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "-v", "serve", "--port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        log = os.environ.get("BENCH_WEBHOOK_LOG")
        with contextlib.ExitStack() as closing:
            sink = closing.enter_context(Path(log).open("a", encoding="utf-8")) if log else None
            for line in proc.stderr:
                if sink is not None:
                    sink.write(line)
                    sink.flush()
                match = _LISTENING.search(line)
                if match and not found:
                    found.append(match.group(1))
                    ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(60):
        proc.kill()
        raise RuntimeError("serve did not start")
    return proc, found[0]


def run(dialect: str, workdir: Path) -> dict[str, float]:
    database = Database(dialect, workdir)
    if dialect == "postgres":
        database.url = db.normalise_url(PG_URL).render_as_string(hide_password=False)
    database.create()
    engine = db.create_engine_for(database.url)
    authority = TestAuthority()
    ca_file = workdir / "ca.pem"
    ca_file.write_bytes(authority.ca_pem())
    box = Sandbox(count=400, seed=11)
    box.faults.accepted_tokens = {TOKEN}
    results: dict[str, float] = {}
    with ServerThread(box) as api, CertificateServer(authority) as certs:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_ETL_")},
            "REFERRALS_ETL_DATABASE_URL": database.url,
            "REFERRALS_ETL_API_BASE_URL": api.base_url,
            "REFERRALS_ETL_AUTH_MODE": "access_token",
            "REFERRALS_ETL_AUTH_ACCESS_TOKEN": TOKEN,
            "REFERRALS_ETL_SYNC_DISCOVER": "false",
            "REFERRALS_ETL_WEBHOOK_CA_BUNDLE": str(ca_file),
            "REFERRALS_ETL_WEBHOOK_CERTIFICATE_HOSTS": certs.host,
        }
        proc, url = _start_serve(env)
        target = url + "/webhooks/partner-center"
        try:
            one_by_one: list[float] = []
            with WebhookSender(box, target, authority, certs.url()):
                for referral_id in box.ids[:20]:
                    started = time.perf_counter()
                    box.change(ids=[referral_id])
                    wanted = box.etag(referral_id)
                    while _etag(engine, referral_id) != wanted:
                        if time.perf_counter() - started > 60:
                            raise RuntimeError(f"{referral_id} not stored within 60 s")
                        time.sleep(0.005)
                    one_by_one.append(time.perf_counter() - started)
                    time.sleep(0.1)
            results.update(
                one_p50=_quantile(one_by_one, 0.5),
                one_p95=_quantile(one_by_one, 0.95),
                one_max=max(one_by_one),
            )
            burst_ids = box.ids[100:400]
            acks, all_stored = _burst(box, burst_ids, authority, certs, target, engine)
            results.update(
                ack_p50=_quantile(acks, 0.5), ack_p99=_quantile(acks, 0.99), stored=all_stored
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    engine.dispose()
    database.drop()
    return results


def _burst(
    box: Sandbox,
    ids: list[str],
    authority: TestAuthority,
    certs: CertificateServer,
    target: str,
    engine: sa.Engine,
) -> tuple[list[float], float]:
    box.change(ids=ids)  # new versions; the callbacks are sent below, 16 at a time
    bodies = [json.dumps(e).encode() for e in box.events(box.event_seq - len(ids))]
    signed = [(b, signed_headers(b, authority.sign(b), certs.url())) for b in bodies]
    acks: list[float] = []
    started = time.perf_counter()

    async def senders() -> None:
        queue = list(signed)

        async def sender() -> None:
            async with httpx.AsyncClient(timeout=60) as client:
                while queue:
                    body, headers = queue.pop()
                    sent = time.perf_counter()
                    answer = await client.post(target, content=body, headers=headers)
                    if answer.status_code != 200:
                        raise RuntimeError(f"callback answered {answer.status_code}")
                    acks.append(time.perf_counter() - sent)

        await asyncio.gather(*(sender() for _ in range(16)))

    asyncio.run(senders())
    while _stored(engine, ids, box) < len(ids):
        if time.perf_counter() - started > 300:
            raise RuntimeError("the burst was not stored within 300 s")
        time.sleep(0.05)
    return acks, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks")
    parser.add_argument("--databases", default="sqlite,postgres")
    args = parser.parse_args(argv)
    rows = []
    for dialect in args.databases.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as scratch:
            r = run(dialect.strip(), Path(scratch))
        rows.append(
            f"| {dialect} | {r['one_p50']:.2f} | {r['one_p95']:.2f} | {r['one_max']:.2f} "
            f"| {r['ack_p50']:.3f} | {r['ack_p99']:.3f} | {r['stored']:.1f} |"
        )
    print(
        "| database | 20 one at a time: p50 s | p95 s (target <= 3) | max s "
        "| burst ack p50 s | ack p99 s (target <= 1) | burst all stored s (target <= 60) |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
