"""Mutation score per mutated file, from ``mutmut results --all true``; fails below the floors.

Used by ``make mutation`` (see docs/mutation.md). A mutant counts as killed when a test failed
or timed out on it; one no test reaches counts as survived. Equivalent mutants are not in the
count: they carry ``# pragma: no mutate`` in the source and are never generated.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

FLOORS = {"etl/flatten.py": 97.0, "etl/ids.py": 95.0}
KILLED = {"killed", "timeout", "caught by type check"}


def main() -> int:
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    totals: Counter[str] = Counter()
    killed: Counter[str] = Counter()
    survivors: list[str] = []
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep or not name.startswith("etl."):
            continue
        path = "/".join(name.split(".")[:2]) + ".py"
        totals[path] += 1
        if status in KILLED:
            killed[path] += 1
        else:
            survivors.append(f"{name}: {status}")
    for line in survivors:
        print(f"  {line}")
    failed = False
    for path, floor in FLOORS.items():
        if not totals[path]:
            print(f"{path}: no mutants found (run `mutmut run` first)")
            failed = True
            continue
        score = 100 * killed[path] / totals[path]
        met = score >= floor
        failed = failed or not met
        print(
            f"{path}: {score:.1f}% of {totals[path]} mutants killed "
            f"({killed[path]}; floor {floor:g}%: {'met' if met else 'NOT MET'})"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
