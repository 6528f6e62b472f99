"""`referrals-etl sandbox` as a newcomer uses it: start it, copy its two `export` lines, fetch
its ids, run a backfill against it; and one clear line (exit 2) when the port is taken."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import rows_of

from etl import db
from etl.sandbox import Sandbox
from etl.sandbox.app import CONTROL_ENDPOINTS

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_ETL_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _exports(lines: list[str]) -> dict[str, str]:
    """The variables of the `export NAME=value ...` lines, as a shell would set them."""
    found: dict[str, str] = {}
    for line in lines:
        words = shlex.split(line)
        if words[:1] == ["export"]:
            found.update(word.split("=", 1) for word in words[1:])  # type: ignore[misc]
    return found


def test_a_newcomer_can_backfill_from_the_sandbox_printed_lines(
    tmp_path: Path,
) -> None:
    """The lines `referrals-etl sandbox` prints are enough to run a backfill against it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "sandbox", "--port", "0", "--count", "12"],
        env=_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]  # announcement, two exports
        exports = _exports(lines)
        assert set(exports) == {
            "REFERRALS_ETL_API_BASE_URL",
            "REFERRALS_ETL_AUTH_MODE",
            "REFERRALS_ETL_AUTH_ACCESS_TOKEN",
        }, lines
        base = exports["REFERRALS_ETL_API_BASE_URL"].removesuffix("/v1.0")

        listing = httpx.get(base + "/_sandbox/", timeout=10).json()
        listed = {(e["method"], e["path"]) for e in listing["endpoints"]}
        assert listed == {(m, p) for m, p, _ in CONTROL_ENDPOINTS}
        for method, path in sorted(listed):
            if method == "GET":
                assert httpx.get(base + path.replace("N", "0"), timeout=10).status_code == 200

        ids = httpx.get(base + "/_sandbox/ids", timeout=10).text
        (tmp_path / "ids.txt").write_text(ids, encoding="utf-8")
        env = {**_env(), **exports, "REFERRALS_ETL_DATABASE_URL": "sqlite:///sandbox.db"}
        for argv in (["db", "upgrade"], ["backfill", "ids.txt"]):
            ran = subprocess.run(
                [sys.executable, "-m", "etl", *argv],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert ran.returncode == 0, ran.stderr
        assert "12 ids: 12 created" in ran.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    engine = db.create_engine_for(f"sqlite:///{tmp_path / 'sandbox.db'}")
    assert len(rows_of(engine, "referrals")) == 12
    engine.dispose()


def test_a_busy_port_is_one_error_line_with_exit_2(tmp_path: Path) -> None:
    """A port already taken: exit 2 with one error line, in text or JSON, and no listening line."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for fmt in ("text", "json"):
            ran = subprocess.run(
                [sys.executable, "-m", "etl", "--log-format", fmt, "sandbox", "--port", str(port)],
                env=_env(),
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert ran.returncode == 2, (ran.stdout, ran.stderr)
            assert ran.stdout == ""  # no "listening" line for a server that never listened
            [line] = ran.stderr.splitlines()
            assert f"127.0.0.1:{port}" in line
            assert "--port" in line
            if fmt == "json":
                assert json.loads(line)["level"] == "error"


def test_the_control_listing_names_every_control_route() -> None:
    """Each listed endpoint answers (in process, through the ASGI app) and nothing else does."""
    box = Sandbox(count=3, seed=5)
    transport = httpx.ASGITransport(app=box.app)

    async def go() -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://sb") as client:
            for method, path, _ in CONTROL_ENDPOINTS:
                body = {"ids": [box.ids[0]]} if method == "POST" else {}
                url = path.replace("?since=N", "?since=0")
                got = await client.request(method, url, json=body if method != "GET" else None)
                assert got.status_code == 200, (method, path, got.text)
            assert (await client.get("/_sandbox/nothing")).status_code == 404

    import asyncio

    asyncio.run(go())


def test_every_control_route_the_app_answers_is_listed() -> None:
    """A control route added to the app without a line in CONTROL_ENDPOINTS fails here."""
    import inspect
    import re

    from etl.sandbox import app

    source = inspect.getsource(app.SandboxApp)  # its routing methods are its own business
    routed = set(re.findall(r'"(/_sandbox/[a-z_/]+)"', source))
    listed = {path.split("?")[0] for _, path, _ in CONTROL_ENDPOINTS}
    assert routed
    assert routed == listed
