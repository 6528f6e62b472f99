"""The benchmark's plan: for each database, the scenarios of issue 6 in order, each step in a
fresh process (:mod:`bench.child`), the naive baseline beside them on the same data.

Per database, one sandbox server (:mod:`bench.server`, same count and seed for every database,
so every database loads the same documents) serves the loopback scenarios; the in-process ones
build the same sandbox in the step's own process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench import report as t
from bench import runcore
from bench.dbs import Database
from bench.report import Row, from_step, judge
from bench.server import ROOT, SandboxProcess

SCENARIOS = "abcdefghi"
DATABASES = ("sqlite", "postgres", "mariadb")
DEFAULT_DATABASES = "sqlite,postgres"
SEED = 1
CHANGE_SEED = 6
LATENCY = 0.1
STEP_TIMEOUT = 1800


@dataclass(frozen=True)
class Sizes:
    ids: int = 10_000  # a, b, c, d
    naive_ids: int = 400  # the naive baseline of a and b (its rate is flat in the count)
    naive_latency_ids: int = 30  # the naive baseline at 100 ms latency (~3 s)
    e8_ids: int = 800  # concurrency 8 at 100 ms: ideal 80/s, 10 s
    e32_ids: int = 2_000  # concurrency 32 at 100 ms: ideal 320/s, 6.25 s
    f_seconds: float = 21.0  # f runs R x this many ids (>= 20 s at R)
    g_ids: int = 100_000
    h_ids: int = 3_000  # issue 10: the CLI's first load, from process start
    i_ids: int = 3_200  # issue 10: 100 ms latency, 16 workers: ideal 160/s, 20 s
    g_databases: tuple[str, ...] = ("sqlite",)

    def scaled(self, ids: int) -> Sizes:
        """Every count at most ``ids`` (g: 10x ``ids``), for smoke runs."""
        return replace(
            self,
            ids=ids,
            naive_ids=min(self.naive_ids, ids),
            naive_latency_ids=min(self.naive_latency_ids, ids),
            e8_ids=min(self.e8_ids, ids),
            e32_ids=min(self.e32_ids, ids),
            f_seconds=min(self.f_seconds, 5.0),
            g_ids=10 * ids,
            h_ids=min(self.h_ids, ids),
            i_ids=min(self.i_ids, ids),
        )


QUICK = Sizes(
    ids=1_000,
    naive_ids=200,
    naive_latency_ids=10,
    e8_ids=240,
    e32_ids=960,
    f_seconds=8.0,
    g_ids=20_000,
    h_ids=1_000,
    i_ids=800,
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_child(spec: dict[str, Any], timeout: float = STEP_TIMEOUT) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.child", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"step failed (exit {proc.returncode}): {tail[:300]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class Plan:
    def __init__(self, args: argparse.Namespace) -> None:
        self.scenarios = set(args.scenarios)
        self.sizes: Sizes = args.sizes
        self.rps: float = args.throttle_rps
        self.rows: list[Row] = []

    # -- helpers -------------------------------------------------------------------------------

    def _step(self, label: str, database: Database, spec: dict[str, Any]) -> dict[str, Any]:
        spec = {"seed": SEED, "db_url": database.url, **spec}
        started = time.perf_counter()
        log(f"[{database.dialect}] {label}: {spec['kind']} {spec['ids'][1] - spec['ids'][0]} ids")
        result = run_child(spec)
        took = time.perf_counter() - started
        log(f"[{database.dialect}] {label}: {result['wall']:.1f}s (step {took:.1f}s)")
        return result

    def _add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def _error(self, scenario: str, database: str, exc: Exception) -> None:
        log(f"[{database}] {scenario}: {exc}")
        self.rows.append(Row(scenario=scenario, database=database, error=str(exc)[:200]))

    # -- the plan ------------------------------------------------------------------------------

    def run(self, databases: list[str], workdir: Path) -> list[Row]:
        for dialect in databases:
            database = Database(dialect, workdir)
            try:
                database.create()
            except Exception as exc:  # a server that is down: say so in the table, go on
                self._error("all", dialect, RuntimeError(f"skipped: {str(exc).splitlines()[0]}"))
                continue
            try:
                self._database(database)
            finally:
                database.drop()
        return self.rows

    def _database(self, database: Database) -> None:
        s = self.sizes
        tcp = self.scenarios & set("acdefhi")
        f_ids = int(self.rps * s.f_seconds) if "f" in self.scenarios else 0
        count = max(s.ids, s.e32_ids if "e" in tcp else 0, f_ids, s.naive_ids, s.h_ids, s.i_ids)
        if tcp:
            with SandboxProcess(count, SEED) as server:
                self._loopback(database, server, f_ids)
        if self.scenarios & set("bg"):
            self._in_process(database)

    def _tcp(self, server: SandboxProcess, n: int, **spec: Any) -> dict[str, Any]:
        return {
            "where": "tcp",
            "url": server.url,
            "base_url": server.base_url,
            "ids": [0, n],
            "kind": "ours",
            **spec,
        }

    def _loopback(self, database: Database, server: SandboxProcess, f_ids: int) -> None:
        s, name = self.sizes, database.dialect
        first: Row | None = None
        if self.scenarios & set("acd"):
            naive: Row | None = None
            if "a" in self.scenarios:
                try:
                    database.reset()
                    spec = self._tcp(server, s.naive_ids, kind="naive")
                    step = self._step("a naive", database, spec)
                    naive = self._add(from_step("a naive", name, step))
                    naive.figure, naive.target = "baseline", "-"
                except Exception as exc:
                    self._error("a naive", name, exc)
            try:
                database.reset()
                step = self._step("a", database, self._tcp(server, s.ids))
                first = self._add(from_step("a first load (loopback)", name, step))
                _expect(first, created=s.ids)
                if naive is not None:
                    first.vs_naive = first.rate / naive.rate
                    first.figure = f"{first.vs_naive:.1f}x naive"
                    first.target = f">= {t.A_VS_NAIVE:g}x naive"
                    judge(first, first.vs_naive / t.A_VS_NAIVE)
            except Exception as exc:
                self._error("a first load (loopback)", name, exc)
        if first is not None and "c" in self.scenarios:
            for label, send_304 in (("c unchanged, 304", True), ("c unchanged, 304 off", False)):
                try:
                    server.faults(send_304=send_304)
                    step = self._step(label, database, self._tcp(server, s.ids))
                    row = self._add(from_step(label, name, step))
                    _expect(row, unchanged=s.ids)
                    speedup = row.rate / first.rate
                    row.figure = f"{speedup:.1f}x first, {row.rows} rows"
                    row.target = f">= {t.C_VS_FIRST:g}x first, 0 rows"
                    judge(row, speedup / t.C_VS_FIRST, extra_ok=row.rows == 0)
                    row.notes.append(_statuses(step))
                except Exception as exc:
                    self._error(label, name, exc)
                finally:
                    server.faults(send_304=True)
        if first is not None and "d" in self.scenarios:
            try:
                loaded = server.ids()[: s.ids]
                chosen = random.Random(CHANGE_SEED).sample(loaded, max(1, len(loaded) // 10))
                changed = len(server.change(chosen, CHANGE_SEED))
                step = self._step("d", database, self._tcp(server, s.ids))
                row = self._add(from_step("d 10% changed", name, step))
                _expect(row, updated=changed, unchanged=s.ids - changed)
                row.figure = f"{row.rate / first.rate:.1f}x first"
                row.notes.append(f"{changed} changed; {_statuses(step)}")
            except Exception as exc:
                self._error("d 10% changed", name, exc)
        if "e" in self.scenarios:
            self._latency(database, server)
        if "f" in self.scenarios:
            self._throttled(database, server, f_ids)
        if "h" in self.scenarios:
            runcore.first_load(self, database, server)
        if "i" in self.scenarios:
            runcore.latency(self, database, server)

    def _latency(self, database: Database, server: SandboxProcess) -> None:
        s, name = self.sizes, database.dialect
        server.faults(latency_seconds=LATENCY)
        try:
            served = server.latency()  # what one GET takes, sandbox and loopback included
            naive: Row | None = None
            try:
                database.reset()
                spec = self._tcp(server, s.naive_latency_ids, kind="naive")
                step = self._step("e naive", database, spec)
                naive = self._add(from_step("e naive, 100 ms", name, step))
                naive.figure = f"{naive.rate / (1 / LATENCY):.0%} of 1/{LATENCY:g}s"
            except Exception as exc:
                self._error("e naive, 100 ms", name, exc)
            for concurrency, n in ((8, s.e8_ids), (32, s.e32_ids)):
                label = f"e 100 ms, {concurrency} workers"
                try:
                    database.reset()
                    spec = self._tcp(server, n, api={"concurrency": concurrency})
                    step = self._step(label, database, spec)
                    row = self._add(from_step(label, name, step))
                    _expect(row, created=n)
                    ideal = concurrency / LATENCY
                    row.figure = f"{row.rate / ideal:.0%} of {ideal:.0f}/s"
                    row.target = f">= {t.E_SHARE:.0%} of {ideal:.0f}/s"
                    judge(row, row.rate / (t.E_SHARE * ideal))
                    row.notes.append(
                        f"one sequential GET takes {served * 1000:.1f} ms here (sandbox and "
                        f"loopback included): at most {concurrency / served / ideal:.0%} of "
                        f"{ideal:.0f}/s for any client"
                    )
                    if naive is not None:
                        row.vs_naive = row.rate / naive.rate
                except Exception as exc:
                    self._error(label, name, exc)
        finally:
            server.faults(latency_seconds=0)

    def _throttled(self, database: Database, server: SandboxProcess, n: int) -> None:
        name, rps = database.dialect, self.rps
        label = f"f throttled {rps:g}/s, 16 workers"
        server.faults(throttle_rps=rps)
        try:
            database.reset()
            server.reset_stats()
            samples: list[tuple[float, int, int]] = []
            done = threading.Event()

            def poll() -> None:
                while not done.wait(0.5):
                    try:
                        by_status = server.stats()["by_status"]
                    except Exception:  # a missed sample only thins the curve
                        continue
                    ok, throttled = by_status.get("200", 0), by_status.get("429", 0)
                    samples.append((time.perf_counter(), ok, throttled))

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            try:
                step = self._step(label, database, self._tcp(server, n, api={"concurrency": 16}))
            finally:
                done.set()
                poller.join()
            stats = server.stats()
            row = self._add(from_step(label, name, step))
            _expect(row, created=n)
            answered = stats["by_status"]
            total = sum(answered.values()) or 1
            share = answered.get("429", 0) / total
            row.figure = f"{row.rate / rps:.0%} of R, {share:.1%} 429"
            row.target = f">= {t.F_SHARE:.0%} of R, <= {t.F_MAX_429:.0%} 429"
            judge(
                row,
                min(row.rate / (t.F_SHARE * rps), t.F_MAX_429 / share if share else float("inf")),
            )
            row.notes.append(
                f"sandbox answered {total} requests: {answered.get('200', 0)} x 200, "
                f"{answered.get('429', 0)} x 429"
            )
            settled = _settled_rate(samples)
            if settled is not None:
                row.notes.append(f"settled rate over the second half of the run {settled:.0f}/s")
            row.raw["samples"] = samples
        except Exception as exc:
            self._error(label, name, exc)
        finally:
            server.faults(throttle_rps=0)

    def _inproc(self, n: int, count: int | None = None, **spec: Any) -> dict[str, Any]:
        return {"where": "inproc", "count": count or n, "ids": [0, n], "kind": "ours", **spec}

    def _in_process(self, database: Database) -> None:
        s, name = self.sizes, database.dialect
        count = s.ids
        first: Row | None = None
        if "b" in self.scenarios:
            naive: Row | None = None
            try:
                database.reset()
                spec = self._inproc(s.naive_ids, count, kind="naive")
                step = self._step("b naive", database, spec)
                naive = self._add(from_step("b naive (in process)", name, step))
                naive.figure = "baseline"
            except Exception as exc:
                self._error("b naive (in process)", name, exc)
            try:
                database.reset()
                step = self._step("b", database, self._inproc(s.ids, measure_sandbox=True))
                first = self._add(from_step("b first load (in process)", name, step))
                _expect(first, created=s.ids)
                _own_cost(first, t.OWN_MS_FIRST, judged=name == "sqlite")
                if naive is not None:
                    first.vs_naive = first.rate / naive.rate
            except Exception as exc:
                self._error("b first load (in process)", name, exc)
            if first is not None:
                try:
                    step = self._step(
                        "b unchanged", database, self._inproc(s.ids, measure_sandbox=True)
                    )
                    row = self._add(from_step("b unchanged, 304 (in process)", name, step))
                    _expect(row, unchanged=s.ids)
                    _own_cost(row, t.OWN_MS_UNCHANGED, judged=True)
                    row.notes.append(f"{row.rows} data rows written")
                except Exception as exc:
                    self._error("b unchanged, 304 (in process)", name, exc)
        if "g" in self.scenarios and name in s.g_databases:
            self._memory(database, first)

    def _memory(self, database: Database, _b_first: Row | None) -> None:
        s, name = self.sizes, database.dialect
        try:
            # Both as shipped (the writer in a thread); BENCH_G_WRITER_PROCESS=1: in a process.
            process = os.environ.get("BENCH_G_WRITER_PROCESS") == "1"
            database.reset()
            step = self._step("g small", database, self._inproc(s.ids, writer_process=process))
            small = self._add(from_step(f"g {s.ids:,} ids (in process)", name, step))
            database.reset()
            step = self._step("g", database, self._inproc(s.g_ids, writer_process=process))
            row = self._add(from_step(f"g {s.g_ids:,} ids (in process)", name, step))
            _expect(row, created=s.g_ids)
            # The job's peak: the process's, less what the in-process sandbox (test scaffolding
            # holding every document's seed) took when it was built before the run.
            job, job_small = _job_mb(row), _job_mb(small)
            growth = job / job_small - 1
            writer, writer_small = (r.raw.get("writer_peak_kb", 0) / 1024 for r in (row, small))
            row.figure = f"job {job:.0f} MB, {growth:+.0%} vs {small.ids:,}"
            if writer:
                row.figure += f"; writer {writer:.0f} MB, {writer / writer_small - 1:+.0%}"
            row.target = f"< {t.G_PEAK_MB:.0f} MB, < {t.G_GROWTH:.0%} growth"
            judge(row, min(t.G_PEAK_MB / job, (1 + t.G_GROWTH) / (1 + growth)))
            for r in (small, row):
                row.notes.append(
                    f"{r.ids:,} ids: process peak {r.peak_mb:.0f} MB = job {_job_mb(r):.0f} MB + "
                    f"sandbox {r.raw['sandbox_kb'] / 1024:.0f} MB; RSS before the run "
                    f"{r.raw['rss_before_kb'] / 1024:.0f} MB; the writer process's peak "
                    f"{r.raw.get('writer_peak_kb', 0) / 1024:.0f} MB"
                )
        except Exception as exc:
            self._error(f"g {s.g_ids:,} ids (in process)", name, exc)


def _expect(row: Row, **counts: int) -> None:
    got = row.raw["counts"]
    wrong = {k: got.get(k) for k, v in counts.items() if got.get(k) != v}
    if wrong or got.get("failed"):
        row.notes.append(f"UNEXPECTED counts {got} (wanted {counts})")


def _statuses(step: dict[str, Any]) -> str:
    return "answers " + ", ".join(f"{n} x {code}" for code, n in step["by_status"].items())


def _own_cost(row: Row, target_ms: float, judged: bool) -> None:
    """Our own cost per referral: wall time less the sandbox's own time for the same requests."""
    per_request = row.raw["sandbox_seconds_per_request"]
    sandbox = per_request * row.requests
    own_ms = (row.wall - sandbox) / row.ids * 1000
    row.figure = f"{own_ms:.2f} ms own/ref"
    row.target = f"<= {target_ms:g} ms/ref" + ("" if judged else " (SQLite)")
    if judged:
        judge(row, target_ms / own_ms)
    row.notes.append(
        f"wall {row.wall / row.ids * 1000:.2f} ms/ref less sandbox {per_request * 1000:.3f} ms/req "
        f"x {row.requests} req = {own_ms:.2f} ms/ref ({1000 / own_ms:,.0f}/s); "
        f"CPU {row.raw['cpu'] / row.ids * 1000:.2f} ms/ref (both threads)"
    )


def _job_mb(row: Row) -> float:
    sandbox_kb: float = row.raw.get("sandbox_kb", 0)
    return row.peak_mb - sandbox_kb / 1024


def _settled_rate(samples: list[tuple[float, int, int]]) -> float | None:
    """200 answers a second over the second half of the samples taken during the run."""
    active = [x for x in samples if x[1] > 0]
    if len(active) < 4:
        return None
    half = active[len(active) // 2 :]
    (t0, ok0, _), (t1, ok1, _) = half[0], half[-1]
    return (ok1 - ok0) / (t1 - t0) if t1 > t0 else None


def _commit() -> str:
    """The commit measured (read only), with ``+changes`` when the work tree differs."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "etl"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "an unknown commit"
    return f"commit {head or '?'}{'+changes' if dirty else ''}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="The job's benchmark (issue 6): prints a table of every scenario, each "
        "figure next to its target and to the naive baseline run beside it.",
    )
    parser.add_argument("--quick", action="store_true", help="small counts (~2 min): a check")
    parser.add_argument(
        "--databases",
        default=DEFAULT_DATABASES,
        help=f"comma-separated, of {', '.join(DATABASES)} (default {DEFAULT_DATABASES})",
    )
    parser.add_argument(
        "--scenarios", default="all", help="letters of the scenarios to run, e.g. a,c (default all)"
    )
    parser.add_argument("--ids", type=int, help="cap every id count at this (smoke runs)")
    parser.add_argument(
        "--throttle-rps", type=float, default=200.0, help="R of scenario f (default 200)"
    )
    parser.add_argument(
        "--g-databases",
        default="sqlite",
        help="databases for the 100,000-id memory scenario g (default sqlite)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    letters = args.scenarios.replace(",", "").strip().lower()
    args.scenarios = SCENARIOS if letters == "all" else letters
    if not args.scenarios or set(args.scenarios) - set(SCENARIOS):
        parser.error(f"--scenarios: letters of {','.join(SCENARIOS)} or all")
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    unknown = set(args.databases) - set(DATABASES)
    if unknown or not args.databases:
        parser.error(f"--databases: some of {','.join(DATABASES)}")
    sizes = QUICK if args.quick else Sizes()
    if args.ids is not None:
        sizes = sizes.scaled(max(1, args.ids))
    g_dbs = tuple(d.strip() for d in args.g_databases.split(",") if d.strip())
    args.sizes = replace(sizes, g_databases=g_dbs)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="etl-bench-") as tmp:
        rows = Plan(args).run(args.databases, Path(tmp))
    seconds = time.perf_counter() - started
    load_after = os.getloadavg()
    head = (
        f"Benchmark of issue 6 at {_commit()}: "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before / "
        f"{load_after[0]:.1f} after; {seconds:.0f} s in all; sizes {asdict(args.sizes)}"
    )
    print(head)
    print()
    print(t.render(rows))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "header": head,
                    "seconds": seconds,
                    "load": [load_before, load_after],
                    "sizes": asdict(args.sizes),
                    "rows": [r.to_dict() for r in rows],
                },
                indent=1,
                default=str,
            ),
            encoding="utf-8",
        )
    return 1 if any(r.error for r in rows) else 0
