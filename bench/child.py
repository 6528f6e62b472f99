"""One step of the benchmark, run in a fresh process: ``python -m bench.child SPEC_JSON``.

A step is one load (the job's ``run_backfill``, or the naive baseline) of a slice of the
sandbox's ids into one database, with the sandbox over loopback (``where: tcp``, served by
:mod:`bench.server`) or in this process (``where: inproc``, through the sandbox's own
transport, ``box.transport()``). A fresh process per step keeps peak RSS (``ru_maxrss``) and
caches of one step out of the next. It prints one JSON line with what it measured.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx

from bench.server import TOKEN
from etl import db
from etl.auth import BearerAuth, StaticTokenProvider
from etl.config import Settings
from etl.ids import TrackedId
from etl.sandbox import Sandbox
from etl.sync import RunOptions, run_backfill


def _rss_kb() -> int:
    with Path("/proc/self/status").open(encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _table_rows(engine: Any) -> dict[str, int]:
    import sqlalchemy as sa

    from bench.dbs import DATA_TABLES

    with engine.connect() as conn:
        return {
            t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one())
            for t in DATA_TABLES
        }


def run_step(spec: dict[str, Any]) -> dict[str, Any]:
    from bench.dbs import WriteCounter

    box: Sandbox | None = None
    sandbox_kb = 0
    if spec["where"] == "inproc":
        rss_before = _rss_kb()
        box = Sandbox(count=spec["count"], seed=spec["seed"], request_log_size=0)
        box.faults.accepted_tokens = {TOKEN}
        box.faults.update(spec.get("faults") or {})
        all_ids = box.ids
        sandbox_kb = _rss_kb() - rss_before  # the in-process sandbox's share of our RSS
        base_url = "http://sandbox.bench/v1.0"
    else:
        all_ids = httpx.get(spec["url"] + "/_sandbox/ids", timeout=60).text.split()
        base_url = spec["base_url"]
    start, stop = spec["ids"]
    ids = all_ids[start:stop]
    del all_ids
    engine = db.create_engine_for(spec["db_url"])
    counter = WriteCounter(engine)
    out: dict[str, Any] = {"ids": len(ids), "rss_before_kb": _rss_kb(), "sandbox_kb": sandbox_kb}
    out["peak_before_kb"] = _peak_kb()
    in_process_writer = False
    cpu = time.process_time()
    if spec["kind"] == "naive":
        from bench.baseline import SyncTransport, run_naive

        transport = SyncTransport(box.transport()) if box is not None else None
        started = time.perf_counter()
        counts = run_naive(engine, base_url, ids, TOKEN, transport)
        out["wall"] = time.perf_counter() - started
        out.update(requests=counts.pop("requests"), counts=counts, by_status={})
    else:
        # The issue-6 steps write in a thread (the shipped default is a writer process) so that
        # the statement counter, which sees this process's engine only, counts every row;
        # the steps that ask for the process count rows from the tables (first loads only).
        in_process_writer = bool(spec.get("writer_process", False))
        settings = Settings().replace(
            database={"url": spec["db_url"]},
            api={"base_url": base_url, **spec.get("api", {})},
            sync={"discover": False, "writer_process": in_process_writer, **spec.get("sync", {})},
        )
        rows_before = _table_rows(engine) if in_process_writer else {}
        options = RunOptions(
            trigger="backfill",
            transport=box.transport() if box is not None else None,
            auth=BearerAuth(StaticTokenProvider(TOKEN)),
        )
        # A generator, as the CLI reads an id file: the job's memory, not a list of ours.
        tracked = (TrackedId(i, "file") for i in ids)
        started = time.perf_counter()
        report = run_backfill(settings, engine, tracked, options)
        out["wall"] = time.perf_counter() - started
        c = report.counts
        out.update(
            requests=report.requests,
            throttled=report.throttled,
            by_status={str(k): v for k, v in sorted(report.by_status.items())},
            counts={
                "created": c.created,
                "updated": c.updated,
                "unchanged": c.unchanged,
                "not_found": c.not_found,
                "failed": c.failed,
            },
        )
    out["cpu"] = time.process_time() - cpu
    out["peak_kb"] = _peak_kb()
    out["rows"] = counter.to_dict()
    if spec["kind"] != "naive" and in_process_writer:
        after = _table_rows(engine)
        out["rows"]["data"] = sum(after[t] - rows_before[t] for t in after)
        out["rows"]["by_table"] = {t: after[t] - rows_before[t] for t in after}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["writer_peak_kb"] = children.ru_maxrss  # the writer process, ended with the run
        out["writer_cpu"] = children.ru_utime + children.ru_stime
    engine.dispose()
    if box is not None and spec.get("measure_sandbox"):
        conditional = "304" in out["by_status"]
        out["sandbox_seconds_per_request"] = sandbox_cost(box, ids, conditional)
    return out


def sandbox_cost(box: Sandbox, ids: list[str], conditional: bool, limit: int = 5000) -> float:
    """Seconds the sandbox itself spends on one GET, calling its ASGI app directly (no HTTP
    client): the part of an in-process run that is not ours."""
    sample = ids[:limit]
    app = box.app
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def calls() -> float:
        started = time.perf_counter()
        for referral_id in sample:
            headers = [
                (b"host", b"sandbox.bench"),
                (b"accept", b"application/json"),
                (b"authorization", f"Bearer {TOKEN}".encode()),
                (b"ms-correlationid", b"00000000-0000-4000-8000-000000000000"),
            ]
            if conditional:
                headers.append((b"if-none-match", box.etag(referral_id).encode()))
            scope = {
                "type": "http",
                "method": "GET",
                "path": "/v1.0/engagements/referrals/" + referral_id,
                "query_string": b"",
                "headers": headers,
            }
            await app(scope, receive, send)
            sent.clear()
        return time.perf_counter() - started

    return asyncio.run(calls()) / max(1, len(sample))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(args[0])
    result = run_step(spec)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
