"""The files this test process holds open, for the tests that a command or reader closes its own."""

from __future__ import annotations

import contextlib
from pathlib import Path


def open_files() -> set[Path]:
    """The files this process holds open (Linux: /proc/self/fd)."""
    paths = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # the directory's own descriptor is gone by now
            paths.add(fd.readlink())
    return paths
