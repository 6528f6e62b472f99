"""The benchmark (`python -m bench`, see bench/README.md) still runs: a few ids, SQLite only.

Not a measurement: the figures of so small a run mean nothing, only that every column is there
and sane, so that the benchmark cannot rot between the times someone runs it in full.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = [
    "scenario",
    "db",
    "ids",
    "wall s",
    "ref/s",
    "req/s",
    "rows written",
    "peak RSS MB",
    "figure",
    "target",
    "vs target",
    "vs naive",
]


def test_bench_smoke_run_prints_the_table(tmp_path: Path) -> None:
    """b and c on 40 ids: first loads write rows, the unchanged re-syncs write none."""
    out = tmp_path / "bench.json"
    args = ["--ids", "40", "--databases", "sqlite", "--scenarios", "b,c", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| scenario"))
    assert [c.strip() for c in header.strip("|").split("|")] == COLUMNS

    rows = {r["scenario"]: r for r in json.loads(out.read_text())["rows"]}
    assert sorted(rows) == sorted(
        [
            "a first load (loopback)",
            "c unchanged, 304",
            "c unchanged, 304 off",
            "b naive (in process)",
            "b first load (in process)",
            "b unchanged, 304 (in process)",
        ]
    )
    for name, row in rows.items():
        assert row["error"] is None, name
        assert row["database"] == "sqlite"
        assert row["ids"] == 40
        assert row["rate"] > 0 and row["request_rate"] > 0, name
        assert 10 < row["peak_mb"] < 1000, name
        assert not any("UNEXPECTED" in note for note in row["notes"]), row["notes"]
        assert f"| {name}" in proc.stdout
    for first in ("a first load (loopback)", "b naive (in process)", "b first load (in process)"):
        # referral + history + 1 customer row each, and their other children
        assert rows[first]["rows"] >= 3 * 40, first
    for unchanged in ("c unchanged, 304", "c unchanged, 304 off", "b unchanged, 304 (in process)"):
        assert rows[unchanged]["rows"] == 0, unchanged
        assert rows[unchanged]["raw"]["counts"]["unchanged"] == 40
    assert rows["c unchanged, 304"]["raw"]["by_status"] == {"304": 40}
    assert rows["c unchanged, 304 off"]["raw"]["by_status"] == {"200": 40}
    for judged in ("b first load (in process)", "b unchanged, 304 (in process)"):
        assert rows[judged]["vs_target"] > 0
        assert "ms own/ref" in rows[judged]["figure"]


def test_bench_listfirst_smoke_run_prints_its_table() -> None:
    """`python -m bench.listfirst` on 250 referrals, no latency: four rows, list-first cheaper."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.listfirst", "--referrals", "250", "--latency", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0][0] == "| step" and len(rows) == 5
    requests = {(r[0].strip("| "), r[1]): int(r[3].replace(",", "")) for r in rows[1:]}
    assert requests == {
        ("first sync", "list-first"): 3,
        ("first sync", "by-id"): 250,
        ("1% changed", "list-first"): 1,
        ("1% changed", "by-id"): 2,
    }
