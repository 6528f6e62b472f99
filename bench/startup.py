"""Start-up cost of each command: ``python -m bench.startup [--runs N]``.

For each command, N fresh processes run ``python -X importtime`` on the command (against an
empty migrated SQLite file) and the table shows the smallest total import time, the smallest
wall time of the whole process, and which heavy libraries were loaded. The smallest of N is
the figure least disturbed by the other load of a shared machine; the module list does not
depend on the load at all (tests/test_startup.py asserts it).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("sqlalchemy", "alembic", "aiohttp", "httpx", "msal", "apscheduler")
COMMANDS = (
    ["--help"],
    ["backfill", "--help"],
    ["status"],
    ["db", "current"],
)
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
_PROBE = "import sys; from etl.cli import main; main(sys.argv[1:])"


def measure(args: list[str], env: dict[str, str], cwd: str) -> tuple[float, float, set[str]]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,  # not the checkout: the installed package (or PYTHONPATH) is what runs
        timeout=120,
    )
    wall = time.perf_counter() - started
    total = 0
    loaded: set[str] = set()
    for line in result.stderr.splitlines():
        found = _LINE.match(line)
        if found:
            total += int(found.group(1))
            loaded.add(found.group(4).split(".")[0])
    return total / 1000, wall * 1000, loaded & set(HEAVY)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    options = parser.parse_args()
    from etl import db

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'startup.db'}"
        engine = db.create_engine_for(url)
        db.upgrade(engine)
        engine.dispose()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_ETL_")}
        env["REFERRALS_ETL_DATABASE_URL"] = url
        print(f"load average {os.getloadavg()[0]:.1f}; smallest of {options.runs} runs")
        print(f"{'command':<18} {'imports ms':>10} {'process ms':>10}  heavy libraries loaded")
        for args in COMMANDS:
            runs = [measure(args, env, tmp) for _ in range(options.runs)]
            imports = min(r[0] for r in runs)
            wall = min(r[1] for r in runs)
            heavy = ", ".join(sorted(runs[0][2])) or "none"
            print(f"{' '.join(args):<18} {imports:>10.0f} {wall:>10.0f}  {heavy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
