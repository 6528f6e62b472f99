"""The throttle's AIMD arithmetic on a fake clock: halve on a 429, climb back additively."""

from __future__ import annotations

import asyncio

import pytest

from etl.throttle import Throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _succeed(throttle: Throttle, clock: Clock, n: int, every: float) -> None:
    for _ in range(n):
        clock.now += every
        throttle.succeeded()


def test_a_429_halves_the_concurrency() -> None:
    """A 429 after 100 requests a second halves the concurrency limit and pauses Retry-After."""
    clock = Clock()
    throttle = Throttle(concurrency=16, max_rps=0, clock=clock)
    assert (throttle.limit, throttle.rate) == (16.0, 0)
    _succeed(throttle, clock, 200, every=0.01)  # 100 requests a second
    pause = throttle.throttled(retry_after=2.0, attempt=1)
    assert pause == 2.0
    assert throttle.limit == 8.0


def test_a_429_sets_the_rate_below_what_was_observed() -> None:
    """A 429 after 100 requests a second paces the next requests at 90% of that rate."""
    clock = Clock()
    throttle = Throttle(concurrency=16, max_rps=0, clock=clock)
    _succeed(throttle, clock, 200, every=0.01)  # 100 requests a second
    throttle.throttled(retry_after=2.0, attempt=1)
    assert throttle.rate == pytest.approx(0.9 * 100, rel=0.02)


def test_429s_inside_one_pause_count_once() -> None:
    """A second 429 ending inside the pause already set lowers neither the rate nor the limit."""
    clock = Clock()
    throttle = Throttle(concurrency=16, max_rps=0, clock=clock)
    _succeed(throttle, clock, 100, every=0.01)
    throttle.throttled(retry_after=5.0, attempt=1)
    rate, limit = throttle.rate, throttle.limit
    clock.now += 1.0
    throttle.throttled(retry_after=1.0, attempt=1)  # ends before the pause already set
    assert (throttle.rate, throttle.limit) == (rate, limit)


def test_the_limit_climbs_back_additively() -> None:
    """Each success adds one over the limit to the limit: about one per round trip."""
    clock = Clock()
    throttle = Throttle(concurrency=8, max_rps=0, clock=clock)
    throttle.limit = 1.0
    _succeed(throttle, clock, 1, every=0.1)
    assert throttle.limit == 2.0
    _succeed(throttle, clock, 3, every=0.1)
    assert 2.0 < throttle.limit < 4.0


def test_the_limit_never_climbs_past_the_configured_concurrency() -> None:
    """However many successes follow, the limit stops at the configured concurrency."""
    clock = Clock()
    throttle = Throttle(concurrency=8, max_rps=0, clock=clock)
    throttle.limit = 1.0
    _succeed(throttle, clock, 500, every=0.1)
    assert throttle.limit == 8.0


def test_the_rate_climbs_ten_times_slower_past_97_percent_of_the_throttled_rate() -> None:
    """After a 429 the rate climbs 0.01 per success below 97% of the ceiling, 0.001 above."""
    clock = Clock()
    throttle = Throttle(concurrency=16, max_rps=0, clock=clock)
    _succeed(throttle, clock, 200, every=0.01)
    throttle.throttled(retry_after=0.0, attempt=1)
    ceiling = 100.0
    start = throttle.rate
    assert start == pytest.approx(0.9 * ceiling, rel=0.02)
    _succeed(throttle, clock, 100, every=0.011)
    assert throttle.rate == pytest.approx(start + 100 * 0.01)  # 0.01 per success below 97%
    slowed_at = None
    for _ in range(1000):
        before = throttle.rate
        _succeed(throttle, clock, 1, every=0.011)
        if throttle.rate - before < 0.005:
            slowed_at = before
            break
    # The throttled rate is the one the 429 saw, start / 0.9; the step slows within one step
    # (0.01) past 97% of it.
    assert slowed_at == pytest.approx(0.97 * start / 0.9, abs=0.01)
    near = throttle.rate
    _succeed(throttle, clock, 100, every=0.011)
    assert throttle.rate == pytest.approx(near + 100 * 0.001)  # ten times slower past 97%


def test_a_configured_cap_is_never_exceeded() -> None:
    """With max_rps set, a thousand successes never raise the rate past it."""
    clock = Clock()
    throttle = Throttle(concurrency=4, max_rps=10, clock=clock)
    _succeed(throttle, clock, 1000, every=0.1)
    assert throttle.rate == 10


def test_without_retry_after_the_pause_is_a_jittered_exponential_backoff() -> None:
    """A 429 without Retry-After pauses at most 0.5 s, 4 s, 30 s at attempts 1, 4 and 20."""
    clock = Clock()
    throttle = Throttle(concurrency=4, max_rps=0, clock=clock)
    pauses = [throttle.throttled(retry_after=None, attempt=attempt) for attempt in (1, 4, 20)]
    assert 0 <= pauses[0] <= 0.5
    assert 0 <= pauses[1] <= 4.0
    assert 0 <= pauses[2] <= 30.0


def test_acquire_counts_the_requests_in_flight() -> None:
    """Without pacing, two acquires pass at once and count two in flight; releases count down."""
    clock = Clock()
    throttle = Throttle(concurrency=2, max_rps=0, clock=clock)

    async def main() -> int:
        await throttle.acquire()
        await throttle.acquire()
        held = throttle.in_flight
        await throttle.release()
        await throttle.release()
        return held

    assert asyncio.run(main()) == 2
    assert throttle.in_flight == 0
