"""The sandbox served over loopback from a process of its own, so it never shares our GIL.

``python -m bench.server --count N --seed S`` prints one JSON line (``{"url": ...}``) once it
accepts connections, then serves until its standard input closes. :class:`SandboxProcess`
starts it and drives it through the sandbox's control endpoints (faults, changes, stats).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

TOKEN = "bench-token"
ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from etl.sandbox import Sandbox

    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    # No request log: it is test instrumentation, not part of what is measured.
    box = Sandbox(count=args.count, seed=args.seed, request_log_size=0)
    box.faults.accepted_tokens = {TOKEN}
    # IPPROTO_TCP given explicitly: asyncio sets TCP_NODELAY on accepted connections only when
    # the listening socket says so, and without it every keep-alive answer (headers and body
    # written separately) waits ~40 ms for a delayed ACK (etl.sandbox.ServerThread does the same
    # since commit 41c864c).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(box.app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)

    def announce_then_wait() -> None:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        print(json.dumps({"url": url, "base_url": url + "/v1.0"}), flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin
        server.should_exit = True

    threading.Thread(target=announce_then_wait, daemon=True).start()
    server.run(sockets=[sock])
    return 0


class SandboxProcess:
    """A :mod:`bench.server` child process and an HTTP client for its control endpoints."""

    def __init__(self, count: int, seed: int) -> None:
        self.count, self.seed = count, seed
        self._proc: subprocess.Popen[str] | None = None
        self.url = self.base_url = ""
        self._control: httpx.Client | None = None

    def start(self) -> SandboxProcess:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.server",
                "--count",
                str(self.count),
                "--seed",
                str(self.seed),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait(10)
            raise RuntimeError(f"the sandbox server exited ({code}) before serving")
        where = json.loads(line)
        self.url, self.base_url = where["url"], where["base_url"]
        self._control = httpx.Client(base_url=self.url, timeout=60)
        return self

    def stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        assert self._control is not None, "start() the sandbox first"
        response = self._control.request(method, path, json=body)
        response.raise_for_status()
        return response.json() if "json" in response.headers.get("content-type", "") else None

    def ids(self) -> list[str]:
        assert self._control is not None, "start() the sandbox first"
        response = self._control.get("/_sandbox/ids")
        response.raise_for_status()
        return response.text.split()

    def faults(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PATCH", "/_sandbox/faults", changes)
        return result

    def change(self, ids: list[str], seed: int) -> list[str]:
        """Edit ``ids`` (new eTag, realistic edits); returns the ids changed."""
        changed: list[str] = self._call("POST", "/_sandbox/change", {"ids": ids, "seed": seed})
        return changed

    def latency(self, samples: int = 15) -> float:
        """Median seconds of one sequential GET of a referral (keep-alive), as a client sees it."""
        headers = {"Authorization": f"Bearer {TOKEN}"}
        ids = self.ids()[:samples]
        times = []
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=60) as http:
            http.get(f"/engagements/referrals/{ids[0]}")  # connect first
            for referral_id in ids:
                started = time.perf_counter()
                http.get(f"/engagements/referrals/{referral_id}")
                times.append(time.perf_counter() - started)
        return statistics.median(times)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_sandbox/stats")
        return result

    def reset_stats(self) -> None:
        self._call("POST", "/_sandbox/stats/reset")


if __name__ == "__main__":
    raise SystemExit(main())
