"""Pacing shared by every request of a run (:class:`Throttle`), and the run's request counters.

One :class:`Throttle` serves a whole :class:`~etl.client.ReferralsClient`: an optional fixed cap
(``api.max_requests_per_second``), a global pause when the API answers 429 (its ``Retry-After``,
else exponential backoff with jitter), and an additive-increase / multiplicative-decrease limit on
both the concurrency in use and the request rate, so a throttled run settles just under the
server's limit instead of hammering it. :class:`ClientStats` counts what the client sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from etl.backoff import full_jitter

_CATCH_UP = 0.05  # seconds of pacing lag a late worker may make up


@dataclass(slots=True)
class ClientStats:
    """Counters for the run summary and metrics."""

    requests: int = 0
    throttled: int = 0
    retries: int = 0
    list_requests: int = 0  # to the list endpoint (pages, retries included)
    get_requests: int = 0  # for one referral by id (retries included)
    by_status: dict[int, int] = field(default_factory=dict)

    def count(self, status: int, listing: bool = False) -> None:
        self.requests += 1
        if listing:
            self.list_requests += 1
        else:
            self.get_requests += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1
        if status == 429:
            self.throttled += 1


class Throttle:
    """Shared pacing for every request of a run: a cap, 429 pauses, and AIMD limits."""

    def __init__(
        self,
        concurrency: int,
        max_rps: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.max_concurrency = concurrency
        self.limit = float(concurrency)
        self.in_flight = 0
        self._cap = max_rps
        self.rate: float = max_rps  # 0 = unlimited, until the server throttles us
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._changed = asyncio.Condition()
        self._recent: list[float] = []  # completion times of recent successes
        self._ceiling = 0.0  # the request rate at which the server last throttled us

    async def acquire(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < max(1, int(self.limit)))
            self.in_flight += 1
        while True:
            now = self._clock()
            wait = self._paused_until - now
            if self.rate > 0:
                # A worker that wakes late (the loop was busy) keeps up to 50 ms of the lost
                # time, instead of restarting the schedule from now and losing it every slot.
                slot = max(now - _CATCH_UP, self._next_slot)
                wait = max(wait, slot - now)
                if wait <= 0:
                    self._next_slot = slot + 1.0 / self.rate
            if wait <= 0:
                return
            try:
                await self._sleep(wait)
            except BaseException:
                await self.release()  # a stop (or cancel) while paced gives the slot back
                raise

    async def release(self) -> None:
        async with self._changed:
            self.in_flight -= 1
            self._changed.notify_all()

    def succeeded(self) -> None:
        now = self._clock()
        self._recent.append(now)
        if len(self._recent) > 512:
            del self._recent[:256]
        if self.limit < self.max_concurrency:
            self.limit = min(self.max_concurrency, self.limit + 1.0 / self.limit)
        if self.rate > 0 and (self._cap == 0 or self.rate < self._cap):
            # Additive increase, per success: about 1% a second back towards the rate that was
            # throttled, then ten times slower past 97% of it, so probing the limit (and the
            # pause each 429 costs) comes rarely.
            near = self._ceiling and self.rate >= 0.97 * self._ceiling
            self.rate += 0.001 if near else 0.01
            if self._cap:
                self.rate = min(self.rate, self._cap)

    def throttled(self, retry_after: float | None, attempt: int) -> float:
        """Record a 429; returns how long every worker now pauses."""
        now = self._clock()
        pause = retry_after if retry_after is not None else full_jitter(attempt)
        if now + pause > self._paused_until:
            self._paused_until = now + pause
            self.limit = max(1.0, self.limit / 2)
            observed = self._observed_rate(now)
            base = min(self.rate, observed) if self.rate > 0 else observed
            self._ceiling = base
            self.rate = max(0.5, 0.9 * base) if base > 0 else 1.0
        return pause

    def _observed_rate(self, now: float) -> float:
        window = [t for t in self._recent if now - t <= 2.0]
        if len(window) < 2:
            return 0.0
        span = max(now - window[0], 0.25)
        return len(window) / span
