"""A run's stop request: one explicit object that every wait of the run watches.

A signal handler (main thread), the scheduler (another thread), a lost lease or a failed stage
calls :meth:`StopRequest.request`; the run's loop sees it at once, and every wait made through
:meth:`StopRequest.sleep` or :meth:`StopRequest.wait` ends early. It replaces a mutable list for
the signal and a bare ``asyncio.Event`` reached into from other threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any


class StopRequest:
    """Thread-safe "please stop": who asked (the signal, if any) and why."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._signum: int | None = None
        self._reason: str | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def signum(self) -> int | None:
        """The signal that asked to stop, or None (not asked, or asked for another reason)."""
        return self._signum

    @property
    def reason(self) -> str | None:
        return self._reason

    def is_set(self) -> bool:
        return self._set

    def request(self, reason: str, signum: int | None = None) -> bool:
        """Ask to stop; safe from any thread and from a signal handler. True the first time."""
        with self._lock:
            first = not self._set
            if first:
                self._set = True
                self._reason = reason
                self._signum = signum
            waiters = list(self._waiters)
        for loop, event in waiters:
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                event.set()
            else:
                loop.call_soon_threadsafe(event.set)
        return first

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until a stop is requested or ``timeout`` passes; True when stopping."""
        if self._set:
            return True
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._lock:
            if self.is_set():  # asked between the first look and taking the lock
                return True
            self._waiters.append(entry)
        try:
            if timeout is None:
                await event.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), max(0.0, timeout))
        finally:
            with self._lock:
                self._waiters.remove(entry)
        return self._set

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when a stop is requested; raises :class:`StopRequested`."""
        if await self.wait(seconds):
            raise StopRequested(self._reason or "stop requested")


class StopRequested(Exception):  # noqa: N818 - a request, not an error of the code
    """Raised out of an interrupted wait; the run records itself as interrupted."""


_Handler = Callable[[int, FrameType | None], Any] | int | None


def on_stop_signals(
    first: Callable[[int], None], again: Callable[[int], None]
) -> Callable[[], None]:
    """SIGTERM/SIGINT: the first one calls ``first(signum)``, every later one ``again(signum)``.

    The one place the job installs signal handlers (the CLI's runs and the scheduler). Main
    thread only, where Python delivers signals; elsewhere nothing is installed. Returns the
    function that puts the previous handlers back.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    seen: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if seen:
            again(signum)
            return
        seen.append(signum)
        first(signum)

    previous: dict[int, _Handler] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)

    return restore
