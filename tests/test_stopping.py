"""The stop request: waits end when a stop is asked, from this thread or another."""

from __future__ import annotations

import asyncio
import threading

import pytest

from etl.stopping import StopRequest, StopRequested


def test_a_wait_times_out_with_false_when_nobody_asks_to_stop() -> None:
    """A wait with a deadline and no stop request returns False."""
    stop = StopRequest()
    assert asyncio.run(stop.wait(0.01)) is False


def test_a_wait_ends_when_another_thread_asks_to_stop() -> None:
    """A stop asked from another thread ends an open-ended wait with True and the signal number."""
    stop = StopRequest()

    async def main() -> bool:
        threading.Timer(0.05, stop.request, args=("signal", 15)).start()
        return await stop.wait(None)

    assert asyncio.run(main()) is True
    assert stop.signum == 15


def test_sleep_raises_stop_requested_with_the_reason() -> None:
    """A stop during stop.sleep raises StopRequested carrying the reason."""
    stop = StopRequest()

    async def main() -> None:
        asyncio.get_running_loop().call_soon(stop.request, "lease lost")
        await stop.sleep(3600)

    with pytest.raises(StopRequested, match="lease lost"):
        asyncio.run(main())


def test_only_the_first_stop_request_counts() -> None:
    """The first request sets reason and signal; later requests return False and change nothing."""
    stop = StopRequest()
    assert stop.request("SIGTERM", 15) is True
    assert stop.request("lease lost") is False
    assert (stop.reason, stop.signum) == ("SIGTERM", 15)
