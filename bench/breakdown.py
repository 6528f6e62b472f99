"""Where one referral's time goes in scenario b (in process, SQLite): ``python -m bench.breakdown``.

Two views, both printed:

1. Stage timings: each stage of the job timed alone on the same documents, one thread, no
   overlap (best of three), per referral: the sandbox itself, the HTTP client (httpx over the
   sandbox's in-process transport, ``box.transport()``), the rest of
   ``ReferralsClient.fetch_referral``, ``json.loads``, ``flatten_referral``, and
   ``store.write_batch`` less its flatten. Then the whole pipeline
   (``run_backfill``); what it costs beyond the sum of the stages is the pipeline's own overhead
   (queues, tasks, the writer thread and its GIL hand-offs).
2. With ``--pyinstrument`` (``pip install pyinstrument``; not a dependency of the project): a
   sampling profile of ``run_backfill`` on both threads (the event loop, and the writer thread
   the pipeline runs ``store.write_batch`` in), with self time summed per function and per
   category.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.child import sandbox_cost
from bench.server import TOKEN
from etl import db, store
from etl.auth import BearerAuth, StaticTokenProvider
from etl.client import ReferralsClient
from etl.config import Settings, SyncSettings
from etl.flatten import content_hash, flatten_referral
from etl.ids import TrackedId
from etl.results import FetchResult, Outcome
from etl.sandbox import Sandbox
from etl.sync import RunOptions, run_backfill

BASE_URL = "http://sandbox.bench/v1.0"


def _best(fn: Callable[[], float], repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _fresh_sqlite(workdir: Path, template: Path) -> str:
    path = workdir / "breakdown.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(template.read_bytes())
    return f"sqlite:///{path}"


def _settings(url: str) -> Settings:
    return Settings().replace(
        database={"url": url}, api={"base_url": BASE_URL}, sync={"discover": False}
    )


def _options(box: Sandbox) -> RunOptions:
    return RunOptions(
        trigger="backfill",
        transport=box.transport(),
        auth=BearerAuth(StaticTokenProvider(TOKEN)),
    )


def stage_timings(n: int, repeats: int, workdir: Path, template: Path) -> dict[str, Any]:
    box = Sandbox(count=n, seed=1, request_log_size=0)
    box.faults.accepted_tokens = {TOKEN}
    ids = box.ids
    bodies = [box.body(box.record(i)) for i in ids]  # type: ignore[arg-type]
    docs = [json.loads(b) for b in bodies]
    etags = {i: box.etag(i) for i in ids}
    settings = _settings("sqlite://")

    async def raw_gets(conditional: bool) -> float:
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
        async with httpx.AsyncClient(transport=box.transport()) as http:
            started = time.perf_counter()
            for i in ids:
                extra = {"If-None-Match": etags[i]} if conditional else {}
                await http.get(f"{BASE_URL}/engagements/referrals/{i}", headers=headers | extra)
            return time.perf_counter() - started

    async def client_gets(conditional: bool) -> float:
        client = ReferralsClient(
            settings.api,
            auth=BearerAuth(StaticTokenProvider(TOKEN)),
            transport=box.transport(),
        )
        async with client:
            started = time.perf_counter()
            for i in ids:
                await client.fetch_referral(i, etags[i] if conditional else None)
            return time.perf_counter() - started

    def write(outcomes: list[FetchResult], url: str) -> float:
        engine = db.create_engine_for(url)
        try:
            started = time.perf_counter()
            for k in range(0, len(outcomes), 100):
                store.write_batch(engine, outcomes[k : k + 100], SyncSettings())
            return time.perf_counter() - started
        finally:
            engine.dispose()

    def first_outcomes() -> list[FetchResult]:
        return [
            FetchResult(
                d["id"],
                Outcome.FETCHED,
                "file",
                document=json.loads(b),
                raw=b.decode(),
                etag=d["eTag"],
                http_status=200,
            )
            for d, b in zip(docs, bodies, strict=True)
        ]

    def write_first() -> float:
        return write(first_outcomes(), _fresh_sqlite(workdir, template))

    def write_unchanged() -> float:
        url = _fresh_sqlite(workdir, template)
        write(first_outcomes(), url)
        return write(
            [FetchResult(i, Outcome.NOT_MODIFIED, "file", http_status=304) for i in ids], url
        )

    def pipeline(unchanged: bool) -> float:
        url = _fresh_sqlite(workdir, template)
        engine = db.create_engine_for(url)
        try:
            tracked = [TrackedId(i, "file") for i in ids]
            if unchanged:
                run_backfill(_settings(url), engine, tracked, _options(box))
            return _timed(lambda: run_backfill(_settings(url), engine, tracked, _options(box)))
        finally:
            engine.dispose()

    per = 1000 / n  # seconds in all -> ms per referral
    out: dict[str, Any] = {"n": n}
    for kind, conditional in (("first", False), ("unchanged", True)):
        sandbox = sandbox_cost(box, ids, conditional) * 1000
        http = _best(lambda c=conditional: asyncio.run(raw_gets(c)), repeats) * per  # type: ignore[misc]
        client = _best(lambda c=conditional: asyncio.run(client_gets(c)), repeats) * per  # type: ignore[misc]
        stages: dict[str, float] = {"sandbox (not ours)": sandbox}
        stages["HTTP client: httpx + box.transport()"] = http - sandbox
        if kind == "first":
            parse = _best(lambda: _timed(lambda: [json.loads(b) for b in bodies]), repeats) * per
            flat = _best(lambda: _timed(lambda: [flatten_referral(d) for d in docs]), repeats) * per
            hashing = _best(lambda: _timed(lambda: [content_hash(d) for d in docs]), repeats) * per
            stages["ReferralsClient around httpx (ids, headers, throttle)"] = client - http - parse
            stages["JSON parse (json.loads)"] = parse
            stages["flatten_referral"] = flat
            stages["  content_hash alone (inside flatten_referral)"] = hashing
            stages["database: write_batch less flatten"] = _best(write_first, repeats) * per - flat
        else:
            stages["ReferralsClient around httpx (ids, headers, throttle)"] = client - http
            stages["database: write_batch (304 outcomes)"] = _best(write_unchanged, repeats) * per
        summed = sum(v for k, v in stages.items() if not k.startswith(" "))
        whole = _best(lambda u=kind == "unchanged": pipeline(u), repeats) * per  # type: ignore[misc]
        stages["sum of the stages"] = summed
        stages["whole pipeline (run_backfill, 8 workers + writer thread)"] = whole
        stages["pipeline overhead (whole - sum)"] = whole - summed
        stages["ours = whole - sandbox"] = whole - sandbox
        out[kind] = stages
    return out


# -- pyinstrument --------------------------------------------------------------------------------

_CATEGORIES = (
    ("etl/sandbox/", "sandbox (not ours)"),
    ("httpx/", "HTTP client (httpx)"),
    ("httpcore/", "HTTP client (httpx)"),
    ("h11/", "HTTP client (httpx)"),
    ("anyio/", "HTTP client (httpx)"),
    ("etl/client.py", "ReferralsClient"),
    ("etl/throttle.py", "ReferralsClient"),
    ("etl/auth/", "ReferralsClient"),
    ("etl/ids.py", "ReferralsClient"),
    ("etl/flatten.py", "flatten"),
    ("sqlalchemy/", "database (SQLAlchemy + sqlite3)"),
    ("etl/models.py", "database (SQLAlchemy + sqlite3)"),
    ("etl/store.py", "database (SQLAlchemy + sqlite3)"),
    ("etl/due.py", "database (SQLAlchemy + sqlite3)"),
    ("etl/leases.py", "database (SQLAlchemy + sqlite3)"),
    ("alembic/", "run setup (schema check, lock, run row)"),
    ("etl/db.py", "run setup (schema check, lock, run row)"),
    ("etl/sync.py", "pipeline (queues, tasks, threads)"),
    ("etl/pipeline.py", "pipeline (queues, tasks, threads)"),
    ("etl/db_policy.py", "pipeline (queues, tasks, threads)"),
    ("etl/report.py", "pipeline (queues, tasks, threads)"),
    ("asyncio/", "pipeline (queues, tasks, threads)"),
    ("concurrent/", "pipeline (queues, tasks, threads)"),
    ("threading.py", "pipeline (queues, tasks, threads)"),
)
_LEAVES = (("json/", "JSON"), ("sha256", "sha256"), ("uuid.py", "uuid4"), ("urandom", "uuid4"))

Frame = tuple[str, str]  # function, file


def _category(stack: list[Frame]) -> str:
    """The innermost frame of a known package names the category; JSON, sha256 and uuid4 below
    it are shown apart (JSON parse in the client, JSON encode in the database...)."""
    below: list[Frame] = []
    for function, path in reversed(stack):
        for marker, category in _CATEGORIES:
            if marker in path:
                for leaf_marker, leaf in _LEAVES:
                    if any(leaf_marker in f + " " + p for f, p in below):
                        return f"{category}: {leaf}"
                return category
        below.append((function, path))
    return "other"


def profile(n: int, workdir: Path, template: Path, unchanged: bool) -> dict[str, Any]:
    from pyinstrument import Profiler  # type: ignore[import-not-found, unused-ignore]
    from pyinstrument.session import Session  # type: ignore[import-not-found, unused-ignore]

    box = Sandbox(count=n, seed=1, request_log_size=0)
    box.faults.accepted_tokens = {TOKEN}
    ids = box.ids
    url = _fresh_sqlite(workdir, template)
    engine = db.create_engine_for(url)
    tracked = [TrackedId(i, "file") for i in ids]
    if unchanged:
        run_backfill(_settings(url), engine, tracked, _options(box))
    sessions: list[Any] = []
    original = store.write_batch

    def profiled(*args: Any, **kwargs: Any) -> Any:  # runs in the writer thread
        profiler = Profiler(interval=0.001)
        profiler.start()
        try:
            return original(*args, **kwargs)
        finally:
            profiler.stop()
            sessions.append(profiler.last_session)

    store.write_batch = profiled
    main = Profiler(interval=0.001, async_mode="disabled")
    try:
        main.start()
        started = time.perf_counter()
        run_backfill(_settings(url), engine, tracked, _options(box))
        wall = time.perf_counter() - started
        main.stop()
    finally:
        store.write_batch = original
        engine.dispose()
    assert main.last_session is not None
    writer = sessions[0]
    for more in sessions[1:]:
        writer = Session.combine(writer, more)
    by_function: Counter[str] = Counter()
    by_category: Counter[str] = Counter()
    idle = 0.0
    for thread, session in (("loop", main.last_session), ("writer", writer)):
        for stack, seconds in _self_times(session.root_frame()):
            function, path = stack[-1]
            if thread == "loop" and function in {"epoll.poll", "select.select"}:
                idle += seconds
                continue
            by_function[f"{function}  {path}  [{thread}]"] += seconds
            by_category[_category(stack)] += seconds
    return {
        "n": n,
        "wall": wall,
        "loop_idle": idle,
        "writer_busy": sum(s.duration for s in sessions),
        "by_category": by_category.most_common(),
        "by_function": by_function.most_common(25),
    }


def _self_times(frame: Any, stack: list[Frame] | None = None) -> Any:
    """(stack, self seconds) of every real frame (pyinstrument's ``[self]`` nodes folded in)."""
    stack = [*(stack or []), (frame.function, _short(frame.file_path_short or ""))]
    if frame.total_self_time > 0:
        yield stack, frame.total_self_time
    for child in frame.children:
        if not child.is_synthetic:
            yield from _self_times(child, stack)


# Paths inside this checkout are shown relative to it.
_REPOSITORY = Path(__file__).resolve().parent.parent.as_posix() + "/"


def _short(path: str) -> str:
    path = path.replace(os.sep, "/")
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3.12/", _REPOSITORY):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.breakdown", description=__doc__)
    parser.add_argument("--ids", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pyinstrument", action="store_true", help="also profile both threads")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="etl-breakdown-") as tmp:
        workdir = Path(tmp)
        template = workdir / "template.db"
        engine = db.create_engine_for(f"sqlite:///{template}")
        db.upgrade(engine)
        engine.dispose()
        result["stages"] = stage_timings(args.ids, args.repeats, workdir, template)
        for kind in ("first", "unchanged"):
            print(f"\nScenario b, {kind}, SQLite, {args.ids} ids: ms per referral")
            for name, ms in result["stages"][kind].items():
                print(f"  {name:<60} {ms:7.3f}")
        if args.pyinstrument:
            for kind in ("first", "unchanged"):
                prof = profile(args.ids, workdir, template, unchanged=kind == "unchanged")
                result[f"profile_{kind}"] = prof
                per = 1000 / prof["n"]
                print(
                    f"\npyinstrument, {kind}: wall {prof['wall'] * per:.3f} ms/ref; writer thread "
                    f"busy {prof['writer_busy'] * per:.3f} ms/ref; event loop idle (waiting) "
                    f"{prof['loop_idle'] * per:.3f} ms/ref. Self time, ms per referral:"
                )
                for name, seconds in prof["by_category"]:
                    print(f"  {name:<70} {seconds * per:7.3f}")
                print("  top functions:")
                for name, seconds in prof["by_function"]:
                    print(f"    {name:<90} {seconds * per:7.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
