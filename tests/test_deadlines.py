"""Deadlines that hold: one total deadline per request, Retry-After capped, every wait stoppable.

No test here measures wall-clock time: a trickled answer would succeed (late) without the
deadline, so the outcome tells; and a stopped process must have exited by a bound far below
what the server asks for.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from slow_server import SlowServer

from etl.client import ReferralsClient, _retry_after
from etl.config import Settings
from etl.results import Outcome
from etl.stopping import StopRequest, StopRequested

GUID = "c5fbb3b6-be74-4795-9fb5-4324c73fed37"


def _api(**values: object) -> Settings:
    return Settings().replace(api={"base_url": "http://127.0.0.1:9/v1.0", **values})


def test_a_trickling_server_is_cut_at_the_request_deadline() -> None:
    """1,000 bytes at one every 0.05 s would arrive whole after 50 s; the deadline is 1 s."""
    with SlowServer("trickle", interval=0.05) as server:
        settings = _api(base_url=server.base_url, timeout_seconds=1, max_attempts=1)

        async def fetch() -> object:
            async with ReferralsClient(settings.api) as client:
                return await client.fetch_referral(GUID)

        result = asyncio.run(fetch())
    assert result.outcome is Outcome.FAILED  # type: ignore[attr-defined]
    assert "timed out after 1s" in (result.error or "")  # type: ignore[attr-defined]
    assert server.requests == 1


def test_retry_after_is_capped_by_the_setting() -> None:
    """A Retry-After longer than the configured cap waits only the cap."""
    answers = [
        httpx.Response(429, headers={"Retry-After": "999999"}),
        httpx.Response(503, headers={"Retry-After": "1e400"}),
        httpx.Response(200, json={"id": GUID}),
    ]
    transport = httpx.MockTransport(lambda request: answers.pop(0))
    settings = _api(max_retry_after_seconds=0.05)
    stop = StopRequest()
    guard = threading.Timer(60, stop.request, args=("the test's guard",))  # fail, never hang
    guard.start()

    async def fetch() -> object:
        async with ReferralsClient(settings.api, transport=transport, stop=stop) as client:
            return await client.fetch_referral(GUID)

    try:
        result = asyncio.run(fetch())
    finally:
        guard.cancel()
    assert result.outcome is Outcome.FETCHED  # type: ignore[attr-defined]
    for header, want in [("999999", 7.0), ("nan", 7.0), ("2", 2.0), ("-5", 0.0), ("soon", None)]:
        response = httpx.Response(429, headers={"Retry-After": header})
        assert want == _retry_after(response, 7.0)


def test_a_stop_ends_a_retry_after_pause_at_once() -> None:
    """A stop request during a Retry-After pause raises StopRequested without waiting it out."""
    transport = httpx.MockTransport(
        lambda request: httpx.Response(429, headers={"Retry-After": "999999"})
    )
    settings = _api(max_retry_after_seconds=3600)
    stop = StopRequest()

    async def fetch() -> None:
        async with ReferralsClient(settings.api, transport=transport, stop=stop) as client:
            asyncio.get_running_loop().call_later(0.2, stop.request, "test")
            await client.fetch_referral(GUID)

    with pytest.raises(StopRequested):
        asyncio.run(fetch())


def _cli(tmp_path: Path, base_url: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_ETL_")}
    env.update(
        REFERRALS_ETL_DATABASE_URL=f"sqlite:///{tmp_path / 'd.db'}",
        REFERRALS_ETL_API_BASE_URL=base_url,
        REFERRALS_ETL_API_TIMEOUT_SECONDS="2",
        REFERRALS_ETL_API_CONCURRENCY="4",
        REFERRALS_ETL_AUTH_MODE="access_token",
        REFERRALS_ETL_AUTH_ACCESS_TOKEN="deadline-token",
        REFERRALS_ETL_SYNC_DISCOVER="false",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "etl", *args],
        env=env,
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("mode", ["trickle", "retry_after"])
def test_sigterm_ends_the_run_within_the_request_deadline(tmp_path: Path, mode: str) -> None:
    """api.timeout_seconds = 2; the server would hold a request for ~30 minutes (trickle) or
    pause every worker for 999,999 s (capped at 120 s). SIGTERM: out well within 2 s + 10 s."""
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"id-{i}" for i in range(50)) + "\n")
    with SlowServer(mode) as server:
        upgrade = _cli(tmp_path, server.base_url, "db", "upgrade")
        _out, upgrade_err = upgrade.communicate(timeout=120)
        assert upgrade.returncode == 0, upgrade_err
        process = _cli(tmp_path, server.base_url, "backfill", str(ids))
        assert server.seen.wait(timeout=60), "no request reached the server"
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=2 + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail(f"SIGTERM did not end the run ({mode})")
        _out, err = process.communicate()
    assert code == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert "deadline-token" not in err
    assert "run the same backfill again to finish" in err
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'd.db'}")
    with engine.connect() as conn:
        statuses: list[object] = list(
            conn.execute(sa.text("select status from sync_runs")).scalars()
        )
    engine.dispose()
    assert statuses == ["interrupted"]
