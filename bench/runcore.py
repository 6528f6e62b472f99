"""The run core's speed figures (issue 10, item 8), side by side with the naive loader.

- **h**: first load at 0 ms latency, 3,000 ids, the CLI (``python -m etl backfill FILE``) as a
  subprocess timed from its start to its exit, against the naive loader's rate on the same
  database and the same loopback sandbox (its loop alone: its process start is not counted, so
  the ratio leans against the job). Target >= 8x, judged on PostgreSQL.
- **i**: 100 ms latency, 16 workers, 3,200 ids: the CLI from process start (target >= 93% of
  16 / 100 ms) and the same load in process, ``run_backfill`` alone (target >= 97%).
- the memory figure (peak RSS flat from 10,000 to 100,000 ids) is scenario g.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bench import report as t
from bench.report import Row, from_step, judge
from bench.server import ROOT, TOKEN, SandboxProcess

if TYPE_CHECKING:
    from bench.dbs import Database
    from bench.runner import Plan

LATENCY = 0.1
I_WORKERS = 16
H_LABEL = "h first load, CLI from start"


_COMPILED: set[Path] = set()


def _compile_once(root: Path) -> None:
    """Compile the package's bytecode once, as an install does (pip for a wheel, the image's
    ``compileall`` at build time). Without it, a shell with ``PYTHONDONTWRITEBYTECODE`` set (as
    on the machines this was measured on) makes every CLI start compile ``etl/`` from source,
    ~0.15 s that no installed job pays."""
    if root not in _COMPILED:
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(root / "etl")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        _COMPILED.add(root)


def cli_backfill(
    database: Database,
    server: SandboxProcess,
    ids: list[str],
    concurrency: int | None = None,
    python_args: tuple[str, ...] = (),
    settings_env: dict[str, str] | None = None,
) -> tuple[float, float, int]:
    """Run ``referrals-etl backfill`` on ``ids`` as a fresh process; (wall from process start to
    exit, CPU of the child, its peak RSS in KB). Raises when it does not exit 0."""
    print(f"[{database.dialect}] CLI backfill: {len(ids)} ids", file=sys.stderr, flush=True)
    _compile_once(ROOT)
    with tempfile.TemporaryDirectory(prefix="etl-bench-cli-") as tmp:
        id_file = Path(tmp) / "ids.txt"
        id_file.write_text("\n".join(ids) + "\n", encoding="ascii")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("REFERRALS_ETL_") and k != "PYTHONPROFILEIMPORTTIME"
        }
        env.update(
            PYTHONPATH=str(ROOT),
            REFERRALS_ETL_CONFIG=str(Path(tmp) / "none.toml"),
            REFERRALS_ETL_DATABASE_URL=database.url,
            REFERRALS_ETL_API_BASE_URL=server.base_url,
            REFERRALS_ETL_AUTH_MODE="access_token",
            REFERRALS_ETL_AUTH_ACCESS_TOKEN=TOKEN,
            REFERRALS_ETL_SYNC_DISCOVER="false",
            XDG_STATE_HOME=tmp,
        )
        env.update(settings_env or {})
        (Path(tmp) / "none.toml").write_text("", encoding="ascii")
        # python_args: e.g. ("-m", "cProfile", "-o", FILE) to profile the whole process
        args = [sys.executable, *python_args, "-m", "etl", "backfill", str(id_file)]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            started = time.perf_counter()
            proc = subprocess.Popen(args, cwd=tmp, env=env, stdout=stdout, stderr=stderr)
            # wait4: this child's own CPU and peak RSS (not every child's, as RUSAGE_CHILDREN)
            _pid, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu, peak_kb = usage.ru_utime + usage.ru_stime, usage.ru_maxrss
        stderr_text = err.read_text(encoding="utf-8", errors="replace")
    print(f"[{database.dialect}] CLI backfill: {wall:.1f}s", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        tail = (stderr_text.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"backfill exited {proc.returncode}: {tail[:300]}")
    return wall, cpu, peak_kb


def _stored(database: Database) -> dict[str, int]:
    """Rows in each data table (after a first load into empty tables: the rows written)."""
    from bench.dbs import DATA_TABLES
    from etl import db

    engine = db.create_engine_for(database.url)
    try:
        with engine.connect() as conn:
            return {
                name: int(conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one())
                for name in DATA_TABLES
            }
    finally:
        engine.dispose()


def _cli_row(label: str, database: Database, n: int, measured: tuple[float, float, int]) -> Row:
    wall, cpu, peak_kb = measured
    tables = _stored(database)
    stored = tables["referrals"]
    row = Row(scenario=label, database=database.dialect, ids=n, wall=wall, requests=n)
    row.rows, row.peak_mb = sum(tables.values()), peak_kb / 1024
    row.raw = {"wall": wall, "cpu": cpu, "peak_kb": peak_kb, "tables": tables}
    if stored != n:
        row.notes.append(f"UNEXPECTED {stored} referrals stored (wanted {n})")
    row.notes.append(
        f"process start to exit; CPU of the process {cpu:.1f} s, {cpu / n * 1000:.2f} ms/ref"
    )
    return row


def first_load(plan: Plan, database: Database, server: SandboxProcess) -> None:
    """h: the CLI's first load from process start, against the naive loader's rate."""
    s, name = plan.sizes, database.dialect
    naive: Row | None = None
    try:
        database.reset()
        spec = plan._tcp(server, s.naive_ids, kind="naive")
        naive = plan._add(from_step("h naive", name, plan._step("h naive", database, spec)))
        naive.figure = "baseline (loop only)"
    except Exception as exc:
        plan._error("h naive", name, exc)
    # As shipped (the writer in a thread), then with the writer process (sync.writer_process).
    for label, process in ((H_LABEL, "false"), ("h first load, CLI, writer process", "true")):
        try:
            database.reset()
            ids = server.ids()[: s.h_ids]
            env = {"REFERRALS_ETL_SYNC_WRITER_PROCESS": process}
            measured = cli_backfill(database, server, ids, settings_env=env)
            row = plan._add(_cli_row(label, database, len(ids), measured))
            if naive is not None:
                row.vs_naive = row.rate / naive.rate
                row.figure = f"{row.vs_naive:.1f}x naive"
                if label == H_LABEL:
                    row.target = f">= {t.H_VS_NAIVE:g}x naive" + (
                        "" if name == "postgres" else " (PG)"
                    )
                    if name == "postgres":
                        judge(row, row.vs_naive / t.H_VS_NAIVE)
        except Exception as exc:
            plan._error(label, name, exc)


def latency(plan: Plan, database: Database, server: SandboxProcess) -> None:
    """i: 100 ms latency, 16 workers: the CLI from process start, then in process."""
    s, name = plan.sizes, database.dialect
    ideal = I_WORKERS / LATENCY
    server.faults(latency_seconds=LATENCY)
    try:
        served = server.latency()
        cap = (
            f"one sequential GET takes {served * 1000:.1f} ms here: at most "
            f"{I_WORKERS / served / ideal:.0%} of {ideal:.0f}/s for any client"
        )
        label = f"i 100 ms, {I_WORKERS} workers, CLI from start"
        try:
            database.reset()
            ids = server.ids()[: s.i_ids]
            measured = cli_backfill(database, server, ids, concurrency=I_WORKERS)
            row = plan._add(_cli_row(label, database, len(ids), measured))
            row.figure = f"{row.rate / ideal:.1%} of {ideal:.0f}/s"
            row.target = f">= {t.I_SHARE_CLI:.0%} of {ideal:.0f}/s"
            judge(row, row.rate / (t.I_SHARE_CLI * ideal))
            row.notes.append(cap)
        except Exception as exc:
            plan._error(label, name, exc)
        label = f"i 100 ms, {I_WORKERS} workers, in process"
        try:
            database.reset()
            spec: dict[str, Any] = plan._tcp(server, s.i_ids, api={"concurrency": I_WORKERS})
            row = plan._add(from_step(label, name, plan._step(label, database, spec)))
            row.figure = f"{row.rate / ideal:.1%} of {ideal:.0f}/s"
            row.target = f">= {t.I_SHARE:.0%} of {ideal:.0f}/s"
            judge(row, row.rate / (t.I_SHARE * ideal))
            row.notes.append(cap)
        except Exception as exc:
            plan._error(label, name, exc)
    finally:
        server.faults(latency_seconds=0)
